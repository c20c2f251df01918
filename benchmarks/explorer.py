"""`uncover serve` on smollm2-135m: time to the first view in headless Chromium, and a logit-lens request.

Targets (issue 16): the first view within 2 s after the server is up; a logit-lens request for a 32-token
prompt answered in under 1 s. Rows compare against anchors measured in the same process: the first view
against the page's own API calls made directly over HTTP (what the browser adds), the lens request
against ``logit_lens`` called in process (what the server adds). The model is loaded and warmed up before
the server counts as up, as ``uncover serve`` does before it prints the URL.

"First view" is the page opened at the printed URL until it has rendered the default prompt's tokens,
next-token table and logit-lens heatmap (``body[data-ready]``), plotly.js included. It also writes a
screenshot of each view on the real model to out/screenshots/smollm-*.png.

Run: .venv/bin/python benchmarks/explorer.py [--model smollm2-135m] [--repeats 5] [--threads 2]
Needs Playwright for Python and Debian's chromium (apt-get install -y chromium) for the browser rows.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

import uncover as uc
from uncover.components.lens import logit_lens
from uncover.explorer.server import make_server
from uncover.explorer.session import Explorer

DEFAULT_PROMPT = "The Eiffel Tower is located in the city of"


def stage(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def prompt_of(model: uc.Model, n_tokens: int) -> str:
    """A natural prompt cut to exactly n_tokens tokens (BOS included when the model uses one)."""
    text = ("The Eiffel Tower is located in Paris, the capital of France. It was built for the 1889 World's Fair "
            "and was the tallest structure in the world for forty years, until the Chrysler Building in New York")
    ids = model.to_tokens(text)[0, :n_tokens]
    prompt = model.tokenizer.decode(ids, skip_special_tokens=True)
    assert model.to_tokens(prompt).shape[1] == n_tokens, "prompt does not re-tokenise to the same length"
    return prompt


def median_time(fn, repeats: int) -> tuple[float, float]:
    """(first, median of the rest) in seconds."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times[0], statistics.median(times[1:] or times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--screenshots", default="out/screenshots")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    stage(f"loading {args.model}")
    model = uc.load(args.model)
    explorer = Explorer(model)
    explorer.run("Hello")  # the warm-up `uncover serve` does before printing its URL
    server, sock, address = make_server(explorer, "127.0.0.1", 0)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    origin, token = address.split("/?token=")
    stage(f"server up at {origin}")

    import httpx

    http = httpx.Client(base_url=origin, headers={"X-Uncover-Token": token}, timeout=60)
    prompt = prompt_of(model, args.tokens)
    rows = []

    # ---- logit lens for a 32-token prompt: HTTP request vs the library call in process ----------------
    target = int(model(model.to_tokens(prompt))[0, -1].argmax())
    body = {"prompt": prompt, "k": 5, "target": target}  # as the page asks (it knows the top token from /api/run)
    http.post("/api/lens", json=body).raise_for_status()  # warm
    _, lens_http = median_time(lambda: http.post("/api/lens", json=body).raise_for_status(), args.repeats)
    tokens = model.to_tokens(prompt)
    _, lens_lib = median_time(lambda: logit_lens(model, tokens, target=target, k=5), args.repeats)
    rows.append((f"logit lens, {args.tokens}-token prompt (HTTP)", lens_http, "logit_lens in process", lens_lib, 1.0))
    # the floor: the lens must unembed every (layer, position) over the whole vocabulary, one matmul
    resid = torch.randn((model.cfg.n_layers + 1) * args.tokens, model.cfg.d_model)
    W_U = model.W_U.detach().float()
    _, floor = median_time(lambda: resid @ W_U, args.repeats)
    gflop = 2 * resid.shape[0] * W_U.shape[0] * W_U.shape[1] / 1e9
    rows.append((f"logit lens, {args.tokens}-token prompt (HTTP)", lens_http,
                 f"its unembedding matmul ({gflop:.0f} GFLOP)", floor, 1.0))

    # ---- first view in headless Chromium ---------------------------------------------------------------
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if chromium is None or sync_playwright is None:
        stage("no chromium or playwright: skipping the first-view rows (apt-get install -y chromium; pip install playwright)")
    else:
        def api_calls() -> None:  # what the first view asks the server for, made directly
            for path in ("/", "/static/app.js", "/static/style.css", "/static/plotly.min.js", "/api/info"):
                http.get(path).raise_for_status()
            top = http.post("/api/run", json={"prompt": DEFAULT_PROMPT, "k": 10}).json()["next"][0]["id"]
            http.post("/api/lens", json={"prompt": DEFAULT_PROMPT, "k": 5, "target": top}).raise_for_status()

        _, direct = median_time(api_calls, args.repeats)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])

            def first_view() -> None:
                context = browser.new_context(viewport={"width": 1400, "height": 1000})
                page = context.new_page()
                page.goto(address)
                page.wait_for_selector("body[data-ready='1']", timeout=60_000)
                context.close()

            cold, warm = median_time(first_view, args.repeats)
            rows.append(("first view in Chromium (first open)", cold, "its API calls over HTTP", direct, 2.0))
            rows.append(("first view in Chromium (median of later opens)", warm, "its API calls over HTTP", direct, 2.0))
            screenshots(browser, address, Path(args.screenshots))
            browser.close()

    print(f"\n{model.name}, torch threads {torch.get_num_threads()}, prompt {args.tokens} tokens, "
          f"{args.repeats} repeats\n")
    print(f"{'measure':<50}{'seconds':>9}  {'anchor':<34}{'seconds':>9}{'ratio':>8}  {'target':>8}")
    for name, t, anchor, a, target_s in rows:
        verdict = "meets" if t < target_s else "MISSES"
        print(f"{name:<50}{t:>9.3f}  {anchor:<34}{a:>9.3f}{t / a:>8.2f}  <{target_s:.0f} s {verdict}")
    print(f"\nload average while measuring: {' '.join(open('/proc/loadavg').read().split()[:3])} "
          f"on {os.cpu_count()} cores (other work on the machine slows every row alike)")
    server.should_exit = True
    thread.join(10)


def screenshots(browser, address: str, folder: Path) -> None:
    """One screenshot per view on the real model (for a person to look at)."""
    folder.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(address)
    page.wait_for_selector("body[data-ready='1']", timeout=60_000)
    page.click(".tok[data-pos='4']")
    page.screenshot(path=str(folder / "smollm-1-lens.png"), full_page=True)

    def settle() -> None:
        time.sleep(0.3)
        end = time.monotonic() + 120
        while page.inner_text("#status") != "ready" and time.monotonic() < end:
            time.sleep(0.1)

    for tab, name in [("attention", "2-attention"), ("dla", "3-attribution"), ("neurons", "4-neurons")]:
        page.click(f"#tabs button[data-tab='{tab}']")
        settle()
        page.screenshot(path=str(folder / f"smollm-{name}.png"), full_page=True)
    page.click("#neuron-table tr[data-pos='4'] .chip")
    page.wait_for_selector("#neuron-page .max-act", timeout=120_000)
    page.screenshot(path=str(folder / "smollm-4-neuron-page.png"), full_page=True)
    page.click("#tabs button[data-tab='steer']")
    page.select_option("#steer-source", "concept:sentiment")
    page.fill("#steer-coeff", "8")
    page.click("#steer-run")
    page.wait_for_selector("#gen-steered", timeout=120_000)
    page.screenshot(path=str(folder / "smollm-5-steering.png"), full_page=True)
    context.close()
    stage(f"screenshots in {folder}")


if __name__ == "__main__":
    main()
