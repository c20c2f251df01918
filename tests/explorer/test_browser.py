"""End to end in headless Chromium (Playwright for Python, Debian's chromium): load the page, type a prompt,
click tokens, heads, features and nodes, and check the numbers shown against the library's own outputs.

A screenshot of each view is written to ``out/screenshots/`` (or ``$UNCOVER_SCREENSHOTS``). Every request the
page makes must go to the explorer itself (it works offline). Skipped, saying how to enable them, when
Playwright or chromium is missing.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import torch

from tests.explorer.conftest import PROMPT

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

CHROMIUM = os.environ.get("UNCOVER_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = Path(os.environ.get("UNCOVER_SCREENSHOTS", Path(__file__).resolve().parents[2] / "out" / "screenshots"))

pytestmark = [
    pytest.mark.skipif(sync_playwright is None or CHROMIUM is None, reason=(
        "browser tests need Playwright for Python and a chromium: `pip install playwright` and "
        "`apt-get install -y chromium` (or set UNCOVER_CHROMIUM=/path/to/chromium); the API tests still ran")),
    pytest.mark.usefixtures("one_thread", "no_grad"),
]


@pytest.fixture
def no_grad():
    with torch.no_grad():
        yield


def show(token: str) -> str:
    """A token as the page shows it: JSON-escaped without the quotes; only spaces as ␣; empty as ∅."""
    s = json.dumps(token, ensure_ascii=False)[1:-1]
    return "∅" if s == "" else s.replace(" ", "␣") if s.strip() == "" else s


def near(text: str, value: float, decimals: int) -> bool:
    """A number shown with ``decimals`` decimals is ``value`` rounded (allowing float noise at the boundary)."""
    return abs(float(text) - value) <= 0.5 * 10 ** -decimals + 1e-6


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def page(browser, live_url):
    """A page on the explorer with the prompt run; fails the test if it asked for anything off this server."""
    origin = live_url.split("/?")[0]
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    outside, errors = [], []
    pg.on("request", lambda r: r.url.startswith(origin) or r.url.startswith("data:") or outside.append(r.url))
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(live_url)
    pg.wait_for_selector("body[data-ready='1']", timeout=30_000)
    pg.fill("#prompt", PROMPT)
    pg.click("#run")
    until(pg, "document.querySelectorAll('.tok').length > 0 && document.getElementById('status').textContent === 'ready'")
    yield pg
    context.close()
    assert not outside, f"the page asked for something outside the explorer: {outside}"
    assert not errors, f"JavaScript errors: {errors}"


def until(pg, js: str, timeout: float = 30.0) -> None:
    """Wait until the JavaScript expression is true (polled from here: the page's CSP forbids eval, which
    Playwright's wait_for_function needs)."""
    end = time.monotonic() + timeout
    while not pg.evaluate(js):
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {js}")
        time.sleep(0.05)


def shot(pg, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def idle(pg) -> None:
    until(pg, "document.getElementById('status').textContent === 'ready'")


def test_prompt_tokens_next_token_and_logit_lens(page, lm):
    from uncover.components.lens import logit_lens

    tokens = lm.to_tokens(PROMPT)
    shown = page.eval_on_selector_all(".tok", "els => els.map(e => e.childNodes[1].textContent)")
    assert shown == [show(t) for t in lm.to_str_tokens(tokens)]
    probs = lm(tokens)[0, -1].softmax(-1)
    top = probs.topk(10)
    rows = page.eval_on_selector_all("#next-table tr[data-id]", "rs => rs.map(r => [r.dataset.id, r.cells[2].textContent])")
    assert [int(i) for i, _ in rows] == top.indices.tolist()
    assert all(near(text, float(p), 4) for (_, text), p in zip(rows, top.values))

    page.click(".tok[data-pos='3']")
    page.wait_for_selector("#lens-table tr[data-layer]")
    lens = logit_lens(lm, tokens, target=int(top.indices[0]), k=5)
    assert page.inner_text("#lens-pos-title").startswith("Position 3 ")
    cells = page.eval_on_selector_all("#lens-table tr[data-layer]", "rs => rs.map(r => [...r.cells].map(c => c.textContent))")
    assert len(cells) == lm.cfg.n_layers + 1
    for l, (label, top_tok, top_p, target_p, rank, _) in enumerate(cells):
        assert label == lens.labels[l]
        assert top_tok == show(lm.tokenizer.decode([int(lens.top_ids[l, 0, 3, 0])]))
        assert near(top_p, float(lens.top_probs[l, 0, 3, 0]), 4)
        assert near(target_p, float(lens.target_prob[l, 0, 3]), 4)
        assert int(rank) == int(lens.target_rank[l, 0, 3])
    shot(page, "1-lens")


def test_attention_click_a_head_and_a_token(page, lm):
    from uncover.components.heads import attention_scores

    page.click("#tabs button[data-tab='attention']")
    page.wait_for_selector("#head-grid td.head")
    idle(page)
    page.click("#head-grid td[data-layer='2'][data-head='1']")
    page.click(".tok[data-pos='5']")
    until(page, "document.getElementById('attn-row-title').textContent.includes('L2H1')")
    idle(page)
    _, cache = lm.run_with_cache(lm.to_tokens(PROMPT), names=["blocks.2.attn.hook_pattern"])
    row = cache["blocks.2.attn.hook_pattern"][0, 1, 5]
    shown = page.eval_on_selector_all("#attn-table tr[data-key]", "rs => rs.map(r => [r.dataset.key, r.cells[2].textContent])")
    assert len(shown) == 6  # keys 0..5, largest first
    assert [int(k) for k, _ in shown] == row[:6].argsort(descending=True).tolist()
    assert all(near(text, float(row[int(k)]), 4) for k, text in shown)
    scores = attention_scores(lm)
    title = page.get_attribute("#head-grid td[data-layer='2'][data-head='1']", "title")
    assert near(title.split()[-1], float(scores["induction"][2, 1]), 4)
    assert f"induction {float(scores['induction'][2, 1]):.4f}" in page.inner_text("#attn-title")
    shot(page, "2-attention")


def test_direct_logit_attribution(page, lm):
    from uncover.components.lens import direct_logit_attribution

    page.click(".tok[data-pos='4']")
    page.click("#tabs button[data-tab='dla']")
    page.wait_for_selector("#dla-actual")
    idle(page)
    tokens = lm.to_tokens(PROMPT)
    tid = int(lm(tokens)[0, 4].argmax())
    r = direct_logit_attribution(lm, tokens, tid, pos=4, per_head=True)
    assert page.inner_text("#dla-token-shown") == show(lm.tokenizer.decode([tid]))
    assert near(page.inner_text("#dla-actual"), float(r.actual[0]), 3)
    assert near(page.inner_text("#dla-embed"), float(r.values[0, 0]), 3)
    rows = page.eval_on_selector_all("#dla-table tr[data-label]", "rs => rs.map(r => [r.dataset.label, r.cells[1].textContent])")
    value = dict(zip(r.labels, r.values[:, 0].tolist()))
    assert len(rows) == 15 and all(near(text, value[label], 3) for label, text in rows)
    assert abs(value[rows[0][0]]) == pytest.approx(r.values[:, 0].abs().max().item())
    shot(page, "3-attribution")


def test_sae_features_feature_page_and_a_mismatched_sae(page, lm, assets):
    from uncover.features.sae import SAE

    page.click("#tabs button[data-tab='sae']")
    page.wait_for_selector("#sae-table tr[data-pos]")
    idle(page)
    sae = SAE.load(assets / "saes" / "resid1")
    _, cache = lm.run_with_cache(lm.to_tokens(PROMPT), names=["blocks.1.hook_resid_post"])
    acts = sae.encode(cache["blocks.1.hook_resid_post"][0]).detach()
    chips = page.eval_on_selector_all("#sae-table tr[data-pos='2'] .chip", "cs => cs.map(c => c.textContent)")
    top = acts[2].topk(5)
    assert chips == [f"#{i} {v:.3f}" for i, v in zip(top.indices.tolist(), top.values.tolist()) if v > 0]
    latent = top.indices[0].item()
    page.click(f"#sae-table tr[data-pos='2'] .chip[data-latent='{latent}']")
    page.wait_for_selector("#feature-page .max-act")
    idle(page)
    assert page.inner_text("#feature-page h2") == f"resid1 latent {latent}"
    assert page.locator("#feature-page .ctx").count() == 8
    shot(page, "4-sae-feature")

    page.select_option("#sae-select", "wrong_width")
    page.wait_for_selector("#error:not([hidden])")
    assert "d_in=32" in page.inner_text("#error") and "64 wide" in page.inner_text("#error")
    assert page.locator("#sae-table tr").count() == 0 and page.locator("#feature-page").is_hidden()
    shot(page, "5-sae-mismatch-error")


def test_neurons_and_neuron_page(page, lm):
    page.click("#tabs button[data-tab='neurons']")
    page.select_option("#neuron-layer", "0")
    page.wait_for_selector("#neuron-table tr[data-pos] .chip")
    idle(page)
    _, cache = lm.run_with_cache(lm.to_tokens(PROMPT), names=["blocks.0.mlp.hook_post"])
    acts = cache["blocks.0.mlp.hook_post"][0, 1]
    chips = page.eval_on_selector_all("#neuron-table tr[data-pos='1'] .chip", "cs => cs.map(c => [c.dataset.neuron, c.textContent])")
    top = acts.topk(5)
    assert [int(n) for n, _ in chips] == top.indices.tolist()
    assert all(near(text.split()[1], float(v), 3) for (_, text), v in zip(chips, top.values))
    page.click(f"#neuron-table tr[data-pos='1'] .chip[data-neuron='{chips[0][0]}']")
    page.wait_for_selector("#neuron-page .max-act")
    assert page.inner_text("#neuron-page h2") == f"L0 neuron {chips[0][0]}"
    shot(page, "6-neuron")


def test_steering_playground(page, lm, assets):
    from uncover.representations.directions import Direction
    from uncover.representations.steering import steering_hooks

    page.click("#tabs button[data-tab='steer']")
    page.select_option("#steer-source", "direction:random")
    page.select_option("#steer-layer", "2")
    page.fill("#steer-coeff", "3")
    page.fill("#steer-tokens", "6")
    page.click("#steer-run")
    page.wait_for_selector("#gen-steered")
    hooks = steering_hooks(Direction.load(assets / "dirs" / "random"), 3.0, layers=[2])
    assert page.inner_text("#gen-plain") == PROMPT + lm.generate(PROMPT, max_new_tokens=6)
    assert page.inner_text("#gen-steered") == PROMPT + lm.generate(PROMPT, max_new_tokens=6, fwd_hooks=hooks)
    tokens = lm.to_tokens(PROMPT)
    shift = lm.run_with_hooks(tokens, hooks)[0, -1].softmax(-1) - lm(tokens)[0, -1].softmax(-1)
    first = page.eval_on_selector("#steer-up tr:nth-child(2)", "r => [...r.cells].map(c => c.textContent)")
    assert first[0] == show(lm.tokenizer.decode([int(shift.argmax())]))
    assert near(first[3], float(shift.max()), 4)
    shot(page, "7-steering")


def test_circuit_view(page):
    page.click("#tabs button[data-tab='circuit']")
    page.wait_for_selector("#circuit-svg svg")
    assert page.locator("#circuit-svg .node").count() == 5
    assert page.locator("#circuit-svg path.edge").count() == 5
    page.click("#circuit-svg .node[data-id='L2H3'] circle")
    assert page.inner_text("#circuit-node-title") == "L2H3: 3 edges"
    scores = page.eval_on_selector_all("#circuit-table tr td.num", "cs => cs.map(c => c.textContent)")
    assert scores == ["1.200", "-0.400", "0.300"]
    shot(page, "8-circuit")


def test_bad_prompt_shows_a_message_and_the_page_keeps_working(page):
    page.fill("#prompt", "")
    page.click("#run")
    page.wait_for_selector("#error:not([hidden])")
    assert "empty" in page.inner_text("#error")
    page.fill("#prompt", "The " * 200)
    page.click("#run")
    until(page, "document.getElementById('error').textContent.includes('200 tokens')")
    shot(page, "9-bad-input")
    page.fill("#prompt", "Rome is the capital of")
    page.click("#run")
    page.wait_for_selector("#error", state="hidden")
    assert page.locator(".tok").count() == 5
