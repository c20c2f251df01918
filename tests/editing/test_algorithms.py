"""ROME, MEMIT, covariance and tracing on a tiny random model, against closed forms and naive loops."""
from __future__ import annotations

import importlib

import pytest
import torch

from uncover.applications.editing.covariance import compute_key_covariance, key_covariance
from uncover.applications.editing.memit import MemitConfig, memit, memit_update
from uncover.applications.editing.rome import (
    EditRequest, RomeConfig, WeightEdit, context_prefixes, mean_keys, rank_one_update, rome,
)
from uncover.applications.editing.tracing import average_traces, subject_span, trace
from uncover.data.corpus import corpus_tokens
from uncover.data.facts import FACTS
from uncover.errors import UncoverError

REQUEST = EditRequest("France", "The capital of {} is", " Rome")


def test_rank_one_update_writes_the_value_and_spares_c_orthogonal_keys():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(12, 5, generator=g, dtype=torch.float64)
    k, v = torch.randn(12, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)
    A = torch.randn(12, 12, generator=g, dtype=torch.float64)
    C = A @ A.T + torch.eye(12, dtype=torch.float64)
    delta = rank_one_update(W, k, v, C)
    assert torch.allclose(k @ (W + delta), v, atol=1e-10)
    assert torch.linalg.matrix_rank(delta) == 1
    u = torch.linalg.solve(C, k)
    x = torch.randn(12, generator=g, dtype=torch.float64)
    x = x - (x @ u) / (u @ u) * u  # orthogonal to C^-1 k: its output must not move
    assert torch.allclose(x @ (W + delta), x @ W, atol=1e-10)


def test_memit_update_equals_regularised_least_squares():
    g = torch.Generator().manual_seed(1)
    K = torch.randn(7, 10, generator=g, dtype=torch.float64)
    R = torch.randn(7, 4, generator=g, dtype=torch.float64)
    A = torch.randn(10, 10, generator=g, dtype=torch.float64)
    C, lam = A @ A.T / 10 + 0.1 * torch.eye(10, dtype=torch.float64), 3.0
    ours = memit_update(K, R, C, lam)
    root = torch.linalg.cholesky(lam * C).T  # root.T @ root = lam C
    stacked = torch.cat([K, root]), torch.cat([R, torch.zeros(10, 4, dtype=torch.float64)])
    reference = torch.linalg.lstsq(*stacked).solution
    assert torch.allclose(ours, reference, atol=1e-9)


def test_key_covariance_matches_naive_and_is_cached(tiny_lm, tmp_path, monkeypatch):
    monkeypatch.setenv("UNCOVER_CACHE", str(tmp_path))
    text = tmp_path / "corpus.txt"
    text.write_text("\n\n".join(" ".join(f.prompts()) + f.attribute for f in FACTS[:200]))
    cov = compute_key_covariance(tiny_lm, [0, 2], n_tokens=64, seq_len=16, source=str(text))
    tokens = corpus_tokens(tiny_lm, 4, 16, source=str(text))
    _, cache = tiny_lm.run_with_cache(tokens, names=["blocks.0.mlp.hook_post", "blocks.2.mlp.hook_post"])
    for layer in (0, 2):
        keys = cache[f"blocks.{layer}.mlp.hook_post"].reshape(-1, tiny_lm.cfg.d_mlp).double()
        assert cov[layer].n_tokens == 64
        assert torch.allclose(cov[layer].mom2, keys.T @ keys / 64, atol=1e-10)
    first = key_covariance(tiny_lm, 2, n_tokens=64, seq_len=16, source=str(text))[2]
    monkeypatch.setattr("uncover.applications.editing.covariance.compute_key_covariance",
                        lambda *a, **k: pytest.fail("recomputed although cached"))
    again = key_covariance(tiny_lm, 2, n_tokens=32, source=str(text))[2]  # fewer tokens asked: the cached 64-token one serves
    assert again.n_tokens == 64 and torch.equal(again.mom2, first.mom2)


def test_rome_writes_k_star_to_v_star_and_restores_bitwise(tiny_lm):
    # the subject ends the prompt, so a random model can be steered by the MLP at that token
    request = EditRequest("France", "The city of Paris is the capital of {}", " Rome")
    W0 = {n: p.detach().clone() for n, p in tiny_lm.hf.named_parameters()}
    cfg = RomeConfig(layer=1, n_prefixes=2, prefix_len=4, steps=30, lr=0.5, weight_decay=0.0, clamp=1e3)
    C = torch.eye(tiny_lm.cfg.d_mlp, dtype=torch.float64)
    rome_id = tiny_lm.to_single_token(" Rome")
    assert tiny_lm(tiny_lm.to_tokens(request.text))[0, -1].argmax() != rome_id
    edit = rome(tiny_lm, request, cfg, covariance=C)
    key, value = edit.tensors["key"], edit.tensors["value"]
    assert torch.allclose(key.float() @ tiny_lm.W_out(1).detach(), value.float(), atol=1e-4)
    # k* from its definition: the MLP key (mlp.hook_post) at the subject's last token, averaged over the
    # prompt with each context prefix; one unpadded prompt at a time, the subject's token found by id
    prefixes = context_prefixes(tiny_lm, 2, 4, seed=0)
    assert len(prefixes) == 3
    subject_id = tiny_lm.to_single_token("France")
    keys = []
    with torch.no_grad():
        for prefix in prefixes:
            tokens = tiny_lm.to_tokens(prefix + request.text)
            pos = max(i for i, t in enumerate(tokens[0].tolist()) if t == subject_id)
            _, cache = tiny_lm.run_with_cache(tokens, names=["blocks.1.mlp.hook_post"])
            keys.append(cache["blocks.1.mlp.hook_post"][0, pos].double())
    assert torch.allclose(torch.stack(keys).mean(0), key.double(), atol=1e-5)
    assert tiny_lm(tiny_lm.to_tokens(request.text))[0, -1].argmax() == rome_id
    assert edit.info["nll"][-1] < edit.info["nll"][0] - 1.0
    changed = [n for n, p in tiny_lm.hf.named_parameters() if not torch.equal(p, W0[n])]
    assert changed == ["model.layers.1.mlp.down_proj.weight"]
    edit.restore(tiny_lm)
    assert all(torch.equal(p, W0[n]) for n, p in tiny_lm.hf.named_parameters())


def test_weight_edit_save_load_round_trip(tiny_lm, tmp_path):
    edit = rome(tiny_lm, REQUEST, RomeConfig(layer=0, n_prefixes=0, steps=3), apply=False,
                covariance=torch.eye(tiny_lm.cfg.d_mlp))
    edit.save(tmp_path / "edit")
    loaded = WeightEdit.load(tmp_path / "edit")
    assert loaded.requests == [REQUEST] and loaded.method == "rome"
    assert torch.equal(loaded.deltas[0], edit.deltas[0]) and torch.equal(loaded.tensors["key"], edit.tensors["key"])


def test_memit_layers_solve_their_least_squares_and_restore(tiny_lm):
    requests = [REQUEST, EditRequest("Germany", "The capital of {} is", " Paris"),
                EditRequest("Japan", "The capital of {} is", " Berlin")]
    W0 = {l: tiny_lm.W_out(l).detach().clone() for l in range(3)}
    C = {l: torch.eye(tiny_lm.cfg.d_mlp, dtype=torch.float64) for l in (0, 1)}
    cfg = MemitConfig(layers=(0, 1), n_prefixes=0, steps=20, cov_weight=0.5)
    edit = memit(tiny_lm, requests, cfg, covariances=C)
    assert set(edit.deltas) == {0, 1} and torch.equal(tiny_lm.W_out(2), W0[2])
    edit.restore(tiny_lm)
    # the first layer's update is a ridge solution (0.5 C + K^T K)^-1 K^T R for the unedited keys K,
    # so (0.5 C + K^T K) Delta must lie in the span of the keys
    keys = mean_keys(tiny_lm, 0, requests, [""])
    lhs = (0.5 * C[0] + keys.T @ keys) @ edit.deltas[0].double()
    R = torch.linalg.lstsq(keys.T, lhs).solution
    assert torch.allclose(keys.T @ R, lhs, atol=1e-4 * lhs.abs().max().item())
    assert torch.linalg.matrix_rank(edit.deltas[0].double(), rtol=1e-5) <= len(requests)
    assert all(torch.equal(tiny_lm.W_out(l), W0[l]) for l in range(3))


def test_trace_batched_equals_naive_loop(tiny_lm):
    prompt, subject = "The capital of France is", "France"
    result = trace(tiny_lm, prompt, subject, " Paris", kinds=["resid", "mlp"], window=2, n_samples=3,
                   noise_std=0.5, seed=3, batch_size=7)
    tokens = tiny_lm.to_tokens(prompt)
    start, end = subject_span(tiny_lm, prompt, subject)
    target = tiny_lm.to_single_token(" Paris")
    noise = torch.randn(3, end - start, 64, generator=torch.Generator().manual_seed(3)) * 1.5
    _, clean = tiny_lm.run_with_cache(tokens)

    def naive(kind: str, layer: int, pos: int) -> float:
        hook = "hook_resid_post" if kind == "resid" else "hook_mlp_out"
        layers = [layer] if kind == "resid" else [m for m in (layer - 1, layer) if 0 <= m < 3]
        total = 0.0
        for j in range(3):
            def add_noise(x, h, j=j):
                x = x.clone()
                x[0, start:end] += noise[j]
                return x

            def put_clean(x, h):
                x = x.clone()
                x[0, pos] = clean[h.name][0, pos]
                return x
            hooks = [("hook_embed", add_noise)] + [(f"blocks.{m}.{hook}", put_clean) for m in layers]
            total += tiny_lm.run_with_hooks(tokens, fwd_hooks=hooks)[0, -1].softmax(-1)[target].item()
        return total / 3

    assert result.scores["mlp"].shape == (3, tokens.shape[1])  # layer-first
    for kind, layer, pos in [("resid", 0, 3), ("resid", 2, 1), ("mlp", 1, 3), ("mlp", 0, 4)]:
        assert result.scores[kind][layer, pos].item() == pytest.approx(naive(kind, layer, pos), abs=1e-5)
    # restoring the full residual at the last layer and last token gives back the clean probability
    assert result.scores["resid"][-1, -1].item() == pytest.approx(result.clean_prob, abs=1e-5)
    average = average_traces([result, result])
    column = average.categories.index("last subject token")
    assert torch.allclose(average.effects["mlp"][:, column], result.indirect_effect("mlp")[:, end - 1])
    effect = result.indirect_effect("mlp")
    layer, pos = result.peak("mlp")
    assert effect[layer, pos] == effect.nan_to_num(float("-inf")).max()
    assert result.peak("mlp", position=2) == (int(effect[:, 2].argmax()), 2)
    # positions / layers restrict the restorations (the rest stays NaN), as ints or a Positions spec
    from uncover.core.names import Positions

    part = trace(tiny_lm, prompt, subject, " Paris", kinds=["resid"], n_samples=3, noise_std=0.5, seed=3,
                 positions=Positions.at(-1, 3), layers=[2])
    traced = ~part.scores["resid"].isnan()
    assert traced.nonzero().tolist() == [[2, 3], [2, tokens.shape[1] - 1]]
    assert torch.allclose(part.scores["resid"][traced], result.scores["resid"][2, [3, -1]], atol=1e-6)


def test_bad_input_says_what_to_do(tiny_lm):
    with pytest.raises(UncoverError, match="exactly one"):
        EditRequest("France", "The capital of France is", " Rome")
    with pytest.raises(UncoverError, match="does not occur"):
        trace(tiny_lm, "The capital of France is", "Spain")
    with pytest.raises(UncoverError, match="unknown trace kind"):
        trace(tiny_lm, "The capital of France is", "France", kinds=["heads"])
    with pytest.raises(UncoverError, match=r"layers \[5\] out of range"):
        trace(tiny_lm, "The capital of France is", "France", layers=[5])
    with pytest.raises(UncoverError, match="out of range"):
        rome(tiny_lm, REQUEST, RomeConfig(layer=7), covariance=torch.eye(96))
    edit = rome(tiny_lm, REQUEST, RomeConfig(layer=0, n_prefixes=0, steps=1), apply=False,
                covariance=torch.eye(96))
    with pytest.raises(UncoverError, match="not applied"):
        edit.restore(tiny_lm)
    with pytest.raises(UncoverError, match="distinct subjects"):
        memit(tiny_lm, [REQUEST, REQUEST], MemitConfig(layers=(0,)))


@pytest.mark.parametrize("arch", ["gemma3", "gpt2", "gpt_neox"])
def test_rome_on_other_architectures_hits_v_star_and_restores(arch):
    import uncover as uc
    from tests.conftest import tiny_hf
    from tests.editing.conftest import word_tokenizer

    model = uc.load(tiny_hf(arch), tokenizer=word_tokenizer())
    request = EditRequest("France", "The city of Paris is the capital of {}", " Rome")
    W0 = model.W_out(1).detach().clone()
    edit = rome(model, request, RomeConfig(layer=1, n_prefixes=1, prefix_len=4, steps=10, weight_decay=0.0,
                                           clamp=1e3), covariance=torch.eye(model.cfg.d_mlp))
    assert torch.allclose(edit.tensors["key"].float() @ model.W_out(1).detach(), edit.tensors["value"].float(),
                          atol=1e-4)
    assert edit.info["nll"][-1] < edit.info["nll"][0]
    edit.restore(model)
    assert torch.equal(model.W_out(1), W0)


@pytest.mark.parametrize("arch,normed", [("gemma3", True), ("llama", False), ("gpt2", False)])
def test_the_default_clamp_is_tighter_where_a_norm_follows_the_mlp(arch, normed):
    import uncover as uc
    from tests.conftest import tiny_hf
    from tests.editing.conftest import word_tokenizer
    R = importlib.import_module("uncover.applications.editing.rome")  # the package's `rome` is the function

    model = uc.load(tiny_hf(arch), tokenizer=word_tokenizer())
    block = model.adapter.layers(model.hf)[1]
    assert hasattr(block, "post_feedforward_layernorm") == normed  # the module that removes the output's scale
    assert R.default_clamp(model, 1) == (R.NORMED_CLAMP if normed else R.CLAMP)
    cfg = RomeConfig(layer=1, n_prefixes=1, prefix_len=4, steps=30, lr=2.0, weight_decay=0.0)
    edit = rome(model, EditRequest("France", "The city of Paris is the capital of {}", " Rome"), cfg,
                covariance=torch.eye(model.cfg.d_mlp), apply=False)
    assert cfg.clamp is None and edit.info["config"]["clamp"] == R.default_clamp(model, 1)  # the caller's cfg kept
    # the optimised delta respects the bound (the clamp is applied after every step)
    assert edit.info["delta_norm"] <= R.default_clamp(model, 1) * edit.info["value_norm"] * (1 + 1e-5)
