"""The explorer's HTTP API: every endpoint against an independent computation (the HF model itself) or the
library function it wraps, bad input, and the guard (token, Host header, size limits, no path traversal)."""
from __future__ import annotations

import pytest
import torch

from tests.explorer.conftest import BASE, PROMPT, TOKEN

pytestmark = pytest.mark.usefixtures("one_thread")


def close(got, want, atol=1e-6) -> None:
    """Nested lists of numbers equal a tensor (or nested lists) within atol."""
    torch.testing.assert_close(torch.tensor(got, dtype=torch.float64), torch.as_tensor(want, dtype=torch.float64),
                               atol=atol, rtol=0)


def _hf(lm, prompt=PROMPT, **kwargs):
    ids = lm.tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        return ids, lm.hf(ids, output_hidden_states=True, **kwargs)


def test_info_lists_model_and_what_was_loaded(client, lm):
    info = client.get("/api/info").json()
    assert info["cfg"]["n_layers"] == lm.cfg.n_layers and info["cfg"]["d_model"] == 64
    saes = {s["name"]: s for s in info["saes"]}
    assert saes["resid1"]["error"] is None and saes["resid1"]["layer"] == 1
    assert "d_in=32" in saes["wrong_width"]["error"] and "64 wide" in saes["wrong_width"]["error"]
    assert info["directions"] == [{"name": "random", "layers": [1, 2], "concept": "random", "method": "mean_diff",
                                   "error": None}]
    assert info["circuits"] == [{"name": "toy", "nodes": 5, "edges": 5}]
    assert "sentiment" in info["concepts"]


def test_run_gives_tokens_and_next_token_distribution(client, lm):
    r = client.post("/api/run", json={"prompt": PROMPT, "k": 5}).json()
    ids, out = _hf(lm)
    assert r["ids"] == ids[0].tolist() and r["tokens"] == [lm.tokenizer.decode([i]) for i in ids[0]]
    probs = out.logits[0, -1].softmax(-1)
    top = probs.topk(5)
    assert [n["id"] for n in r["next"]] == top.indices.tolist()
    assert [n["prob"] for n in r["next"]] == pytest.approx(top.values.tolist(), abs=1e-6)


def test_lens_matches_final_norm_and_unembedding_of_hf_hidden_states(client, lm):
    target = lm.to_single_token("Paris")
    r = client.post("/api/lens", json={"prompt": PROMPT, "target": "Paris", "k": 3}).json()
    assert r["target"] == target and r["labels"][-1] == "final_post"
    _, out = _hf(lm)
    hs = out.hidden_states  # [n_layers + 1]: embeddings, then each layer's output (the last one normed by HF)
    with torch.no_grad():
        layers = [lm.hf.lm_head(lm.hf.model.norm(h)) for h in hs[:-1]] + [out.logits]
    for l, logits in enumerate(layers):
        probs = logits[0].float().softmax(-1)  # [pos, vocab]
        top = probs.topk(3)
        assert r["top_ids"][l] == top.indices.tolist()
        close(r["top_probs"][l], top.values.tolist(), 1e-5)
        assert r["target_prob"][l] == pytest.approx(probs[:, target].tolist(), abs=1e-6)
        assert r["target_rank"][l] == (probs > probs[:, [target]]).sum(-1).tolist()
    default = client.post("/api/lens", json={"prompt": PROMPT}).json()
    assert default["target"] == int(out.logits[0, -1].argmax())


def test_attention_matches_hf_eager_attention(client, lm):
    r = client.post("/api/attention", json={"prompt": PROMPT, "layer": 2}).json()
    ids = lm.tokenizer(PROMPT, return_tensors="pt").input_ids
    before = lm.hf.config._attn_implementation
    lm.hf.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            att = lm.hf(ids, output_attentions=True).attentions[2][0]
    finally:
        lm.hf.set_attn_implementation(before)
    close(r["pattern"], att)


def test_head_scores_are_the_library_scores(client, lm):
    from uncover.components.heads import attention_scores, copying_scores

    r = client.get("/api/heads").json()["scores"]
    expected = attention_scores(lm)
    for kind in ("previous_token", "duplicate_token", "induction"):
        close(r[kind], expected[kind])
    close(r["copying"], copying_scores(lm))


def test_dla_parts_sum_to_the_hf_logit(client, lm):
    from uncover.components.lens import direct_logit_attribution

    r = client.post("/api/dla", json={"prompt": PROMPT, "token": "Paris", "pos": 3}).json()
    ids, out = _hf(lm)
    tid = lm.to_single_token("Paris")
    assert r["pos"] == 3 and r["token_id"] == tid
    assert r["actual"] == pytest.approx(float(out.logits[0, 3, tid]), abs=1e-5)
    assert r["total"] == pytest.approx(r["actual"], abs=1e-4)  # RMSNorm: the parts sum to the logit
    lib = direct_logit_attribution(lm, ids, tid, pos=3, per_head=True)
    assert r["labels"] == lib.labels and r["values"] == pytest.approx(lib.values[:, 0].tolist(), abs=1e-6)
    default = client.post("/api/dla", json={"prompt": PROMPT}).json()
    assert default["pos"] == len(ids[0]) - 1 and default["token_id"] == int(out.logits[0, -1].argmax())


def test_sae_features_encode_the_hf_residual(client, lm, assets):
    from uncover.features.sae import SAE

    r = client.post("/api/sae", json={"prompt": PROMPT, "sae": "resid1", "k": 4}).json()
    sae = SAE.load(assets / "saes" / "resid1")
    _, out = _hf(lm)
    acts = sae.encode(out.hidden_states[2][0])  # resid_post of layer 1
    top = acts.topk(4, dim=-1)
    assert r["latents"] == top.indices.tolist()
    close(r["acts"], top.values.tolist(), 1e-5)
    assert r["l0"] == (acts > 0).sum(-1).tolist()


def test_neuron_acts_are_the_mlp_activation(client, lm):
    r = client.post("/api/neurons", json={"prompt": PROMPT, "layer": 1, "k": 3}).json()
    ids = lm.tokenizer(PROMPT, return_tensors="pt").input_ids
    grabbed = {}
    handle = lm.hf.model.layers[1].mlp.down_proj.register_forward_hook(lambda m, i, o: grabbed.update(x=i[0]))
    try:
        with torch.no_grad():
            lm.hf(ids)
    finally:
        handle.remove()
    top = grabbed["x"][0].topk(3, dim=-1)
    assert r["neurons"] == top.indices.tolist()
    close(r["acts"], top.values.tolist(), 1e-6)


def test_feature_and_neuron_pages(client, explorer, lm, assets):
    from uncover.features.sae import SAE

    sae = SAE.load(assets / "saes" / "resid1")
    corpus = explorer._corpus()
    with torch.no_grad():
        hs = lm.hf(corpus, output_hidden_states=True).hidden_states[2]
    acts = sae.encode(hs)[..., 7].detach()  # [seq, pos]
    card = client.get("/api/feature", params={"sae": "resid1", "latent": 7}).json()
    assert card["max_activation"] == pytest.approx(float(acts.max()), abs=1e-5)
    assert len(card["contexts"]) == 8 and len(card["top_tokens"]) == 10
    assert card["top_logits"][0] == pytest.approx(float((sae.W_dec[7] @ lm.W_U).max().detach()), abs=1e-4)
    grabbed = {}
    handle = lm.hf.model.layers[0].mlp.down_proj.register_forward_hook(lambda m, i, o: grabbed.update(x=i[0]))
    try:
        with torch.no_grad():
            lm.hf(corpus)
    finally:
        handle.remove()
    page = client.get("/api/neuron", params={"layer": 0, "neuron": 5}).json()
    assert page["title"] == "L0 neuron 5"
    assert page["max_activation"] == pytest.approx(float(grabbed["x"][..., 5].max()), abs=1e-5)


def test_steering_with_a_saved_direction_and_an_sae_latent(client, lm, assets):
    from uncover.features.analysis import steer_hook
    from uncover.features.sae import SAE
    from uncover.representations.directions import Direction
    from uncover.representations.steering import steering_hooks

    r = client.post("/api/steer", json={"prompt": PROMPT, "source": "direction:random", "layer": 2, "coeff": 3.0,
                                        "max_new_tokens": 6, "k": 5}).json()
    d = Direction.load(assets / "dirs" / "random")
    hooks = steering_hooks(d, 3.0, layers=[2])
    assert r["hooks"] == ["blocks.2.hook_resid_post"]
    assert r["unsteered"] == lm.generate(PROMPT, max_new_tokens=6)
    assert r["steered"] == lm.generate(PROMPT, max_new_tokens=6, fwd_hooks=hooks)
    ids = lm.to_tokens(PROMPT)
    before = lm(ids)[0, -1].softmax(-1)
    after = lm.run_with_hooks(ids, hooks)[0, -1].softmax(-1)
    up = (after - before).topk(5)
    assert [x["id"] for x in r["up"]] == up.indices.tolist()
    assert [x["shift"] for x in r["up"]] == pytest.approx(up.values.tolist(), abs=1e-6)
    assert [x["after"] for x in r["top_after"]] == pytest.approx(after.topk(5).values.tolist(), abs=1e-6)

    r = client.post("/api/steer", json={"prompt": PROMPT, "source": "sae:resid1", "latent": 3, "coeff": -20,
                                        "max_new_tokens": 4}).json()
    sae = SAE.load(assets / "saes" / "resid1")
    assert r["steered"] == lm.generate(PROMPT, max_new_tokens=4, fwd_hooks=[steer_hook(sae, 3, -20.0)])


def test_steering_with_a_concept_builds_caa_at_the_layer(client, lm):
    from uncover.representations.steering import caa_direction, steering_hooks

    r = client.post("/api/steer", json={"prompt": PROMPT, "source": "concept:sentiment", "layer": 1, "coeff": 8,
                                        "max_new_tokens": 4}).json()
    hooks = steering_hooks(caa_direction(lm, "sentiment", 1), 8.0)
    assert r["steered"] == lm.generate(PROMPT, max_new_tokens=4, fwd_hooks=hooks)


def test_circuit_graph(client, assets):
    import json

    g = client.get("/api/circuit/toy").json()
    assert g == json.loads((assets / "circuits" / "toy.json").read_text())


@pytest.mark.parametrize("path,body,message", [
    ("/api/run", {"prompt": ""}, "empty"),
    ("/api/run", {"prompt": "   "}, "empty"),
    ("/api/run", {"prompt": "x" * 2001}, "2001 characters"),
    ("/api/run", {"prompt": "The " * 200}, "200 tokens"),
    ("/api/run", {"prompt": PROMPT, "k": 0}, "k=0"),
    ("/api/run", {"prompt": PROMPT, "k": 51}, "k=51"),
    ("/api/run", {"prompt": PROMPT, "extra": 1}, "extra"),
    ("/api/run", {"k": 3}, "prompt"),
    ("/api/lens", {"prompt": PROMPT, "target": "Eiffel Tower"}, "not one"),
    ("/api/lens", {"prompt": PROMPT, "target": 10**6}, "out of range"),
    ("/api/attention", {"prompt": PROMPT, "layer": 3}, "layers 0..2"),
    ("/api/attention", {"prompt": PROMPT, "layer": -1}, "layers 0..2"),
    ("/api/neurons", {"prompt": PROMPT, "layer": 7}, "layers 0..2"),
    ("/api/dla", {"prompt": PROMPT, "pos": 8}, "positions 0..7"),
    ("/api/sae", {"prompt": PROMPT, "sae": "wrong_width"}, "d_in=32"),
    ("/api/sae", {"prompt": PROMPT, "sae": "nope"}, "no SAE named"),
    ("/api/steer", {"prompt": PROMPT, "source": "direction:random", "layer": 0, "coeff": 1}, "layers [1, 2]"),
    ("/api/steer", {"prompt": PROMPT, "source": "direction:random", "layer": 9, "coeff": 1}, "layers 0..2"),
    ("/api/steer", {"prompt": PROMPT, "source": "sae:resid1", "latent": 128, "coeff": 1}, "0..127"),
    ("/api/steer", {"prompt": PROMPT, "source": "sae:wrong_width", "latent": 1, "coeff": 1}, "d_in=32"),
    ("/api/steer", {"prompt": PROMPT, "source": "concept:nonsense", "layer": 1, "coeff": 1}, "unknown concept"),
    ("/api/steer", {"prompt": PROMPT, "source": "file:/etc/passwd", "layer": 1, "coeff": 1}, "unknown steering source"),
    ("/api/steer", {"prompt": PROMPT, "source": "direction:random", "layer": 1, "coeff": 1, "max_new_tokens": 65},
     "1..64"),
])
def test_bad_input_is_a_clear_400_and_the_server_keeps_running(client, path, body, message):
    r = client.post(path, json=body)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]
    assert client.post("/api/run", json={"prompt": PROMPT, "k": 1}).status_code == 200


def test_bad_query_parameters_and_malformed_json(client):
    for params, message in [({"sae": "resid1", "latent": 999}, "0..127"), ({"sae": "resid1", "latent": "x"}, "latent")]:
        r = client.get("/api/feature", params=params)
        assert r.status_code == 400 and message in r.json()["error"]
    r = client.get("/api/neuron", params={"layer": 0, "neuron": 96})
    assert r.status_code == 400 and "0..95" in r.json()["error"]
    r = client.post("/api/run", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "bad request" in r.json()["error"]


def test_token_is_required_everywhere(client):
    for path in ["/", "/api/info", "/static/app.js", "/static/plotly.min.js", "/api/circuit/toy"]:
        r = client.get(path, headers={"X-Uncover-Token": ""})
        assert r.status_code == 403 and "token" in r.json()["error"], path
        assert client.get(path, headers={"X-Uncover-Token": "wrong"}).status_code == 403
    assert client.post("/api/run", json={"prompt": PROMPT}, headers={"X-Uncover-Token": ""}).status_code == 403


def test_token_in_the_url_sets_a_cookie_that_later_requests_use(client):
    from fastapi.testclient import TestClient

    from uncover.explorer.security import cookie_name

    with TestClient(client.app, base_url=BASE) as fresh:
        assert fresh.get("/api/info").status_code == 403
        page = fresh.get(f"/?token={TOKEN}")
        assert page.status_code == 200 and "<title>uncover explorer</title>" in page.text
        assert "HttpOnly" in page.headers["set-cookie"] and "SameSite=Strict" in page.headers["set-cookie"]
        assert fresh.cookies.get(cookie_name(TOKEN)) == TOKEN
        assert fresh.get("/api/info").status_code == 200
        assert fresh.get("/static/app.js").status_code == 200


@pytest.mark.parametrize("host,ok", [("127.0.0.1:8765", True), ("localhost:8765", True), ("[::1]:8765", True),
                                     ("localhost", True), ("evil.example", False), ("evil.example:8765", False),
                                     ("127.0.0.1.evil.example", False), ("", False)])
def test_host_header_check_against_dns_rebinding(client, host, ok):
    r = client.get("/api/info", headers={"Host": host})
    assert r.status_code == (200 if ok else 403)
    if not ok:
        assert "Host header" in r.json()["error"]


def test_body_size_limit(client, explorer):
    big = "x" * (explorer.limits.max_body_bytes + 1)
    r = client.post("/api/run", content=('{"prompt": "%s"}' % big).encode(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "bytes" in r.json()["error"]

    def chunks():  # no Content-Length: the limit holds on the bytes that arrive
        for _ in range(100):
            yield b"x" * 1024

    r = client.post("/api/run", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413


@pytest.mark.parametrize("path", [
    "/static/..%2F..%2Fcli.py", "/static/%2e%2e/%2e%2e/cli.py", "/static/session.py", "/static/index.html",
    "/static/..%2Fsession.py", "/static/%2Fetc%2Fpasswd", "/api/circuit/..%2F..%2F..%2Fetc%2Fpasswd",
    "/api/circuit/%2Fetc%2Fpasswd", "/api/circuit/toy.json", "/etc/passwd", "/static/",
])
def test_no_path_traversal(client, path):
    r = client.get(path)
    assert r.status_code == 404, (path, r.status_code, r.text[:200])
    assert "root:" not in r.text and "import" not in r.text


def test_static_files_and_security_headers(client):
    for name, kind in [("app.js", "javascript"), ("style.css", "css"), ("plotly.min.js", "javascript")]:
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"]
    page = client.get("/")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert "http" not in page.text.replace("http-equiv", "")  # no external script or style sources


def test_server_listens_on_loopback_only_by_default(explorer):
    import socket

    from uncover.explorer.server import bind, make_server

    server, sock, address = make_server(explorer, port=0, token=TOKEN)
    try:
        assert sock.getsockname()[0] == "127.0.0.1" and address.startswith("http://127.0.0.1:")
        port = sock.getsockname()[1]
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.connect(("10.255.255.255", 1))  # no packet is sent: this only picks the outgoing interface
            ip = probe.getsockname()[0]
        except OSError:
            ip = "127.0.0.1"
        finally:
            probe.close()
        if ip.startswith("127.") or ip == "0.0.0.0":
            pytest.skip("this machine has no non-loopback IPv4 address to probe")
        with pytest.raises(OSError):
            socket.create_connection((ip, port), timeout=2).close()
    finally:
        sock.close()
    with pytest.raises(Exception, match="cannot listen"):
        busy = bind("127.0.0.1", 0)
        try:
            bind("127.0.0.1", busy.getsockname()[1])
        finally:
            busy.close()


def test_model_calls_run_off_the_event_loop_one_at_a_time(live_url, lm):
    """While a model call is blocked, the server still answers; concurrent model calls never overlap."""
    import threading

    import httpx

    origin = live_url.split("/?")[0]
    headers = {"X-Uncover-Token": TOKEN}
    release, active, peak, entered = threading.Event(), [0], [0], threading.Event()

    def pre(module, args):
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        entered.set()
        release.wait(30)

    def post(module, args, out):
        active[0] -= 1

    handles = [lm.hf.register_forward_pre_hook(pre), lm.hf.register_forward_hook(post)]
    try:
        results = []
        threads = [threading.Thread(target=lambda: results.append(
            httpx.post(f"{origin}/api/run", json={"prompt": PROMPT}, headers=headers, timeout=60).status_code))
            for _ in range(3)]
        for t in threads:
            t.start()
        assert entered.wait(30)
        info = httpx.get(f"{origin}/api/info", headers=headers, timeout=10)  # the loop is free meanwhile
        assert info.status_code == 200
        release.set()
        for t in threads:
            t.join(60)
    finally:
        release.set()
        for h in handles:
            h.remove()
    assert results == [200, 200, 200] and peak[0] == 1


@pytest.mark.parametrize("arch", ["gpt2", "gemma3", "qwen3"])
def test_every_view_works_on_other_architectures(arch):
    """Each view answers on other families, and the lens's last layer is the HF model's distribution."""
    from fastapi.testclient import TestClient

    import uncover as uc
    from tests.conftest import tiny_hf
    from tests.editing.conftest import word_tokenizer
    from uncover.explorer.server import create_app
    from uncover.explorer.session import Explorer

    model = uc.load(tiny_hf(arch), tokenizer=word_tokenizer())
    with TestClient(create_app(Explorer(model), TOKEN), base_url=BASE, headers={"X-Uncover-Token": TOKEN}) as c:
        lens = c.post("/api/lens", json={"prompt": PROMPT, "target": "Paris"}).json()
        ids = model.tokenizer(PROMPT, return_tensors="pt").input_ids
        with torch.no_grad():
            probs = model.hf(ids).logits[0].softmax(-1)
        close(lens["target_prob"][-1], probs[:, model.to_single_token("Paris")])
        n = len(lens["tokens"])
        assert len(c.post("/api/attention", json={"prompt": PROMPT, "layer": 2}).json()["pattern"][0]) == n
        dla = c.post("/api/dla", json={"prompt": PROMPT, "pos": 2}).json()
        assert len(dla["values"]) == 1 + 3 * (model.cfg.n_heads + 2)
        assert len(c.post("/api/neurons", json={"prompt": PROMPT, "layer": 0}).json()["neurons"]) == n
        steer = c.post("/api/steer", json={"prompt": PROMPT, "source": "concept:sentiment", "layer": 1, "coeff": 2,
                                           "max_new_tokens": 3}).json()
        assert isinstance(steer["steered"], str)
