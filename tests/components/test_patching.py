"""Batched activation patching against naive one-patch-per-forward loops; attribution, path patching
and ablation sweeps against independent computations."""
import pytest
import torch

from uncover.components import patching as P
from uncover.core.interventions import ablate, patch
from uncover.errors import UncoverError


def metric(logits):
    return logits[:, -1, 5].mean() - logits[:, -1, 7].mean()


@pytest.fixture(scope="module")
def pair():
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 1000, (3, 6), generator=g), torch.randint(0, 1000, (3, 6), generator=g)


def naive(model, base, source_tokens, site, by):
    """One forward per patched site, with the core's patch intervention."""
    names = [P.SITES[site].format(l) for l in range(model.cfg.n_layers)]
    _, src = model.run_with_cache(source_tokens, names=names)
    with torch.no_grad():
        return _naive_rows(model, base, src, names, site, by)


def _naive_rows(model, base, src, names, site, by):
    rows = []
    for name in names:
        if by == "layer":
            rows.append(float(metric(model.run_with_hooks(base, [(name, patch(src))]))))
            continue
        width = base.shape[1] if by == "pos" else P._n_heads(model, site)
        key = "positions" if by == "pos" else "heads"
        rows.append([float(metric(model.run_with_hooks(base, [(name, patch(src, **{key: [j]}))]))) for j in range(width)])
    return torch.tensor(rows)


@pytest.mark.parametrize("site,by", [("resid_pre", "pos"), ("attn_out", "layer"), ("mlp_out", "pos"), ("z", "head"),
                                     ("q", "pos"), ("k", "head"), ("v", "head"), ("pattern", "head"), ("pattern", "pos")])
def test_activation_patching_equals_naive_loop(tiny_model, pair, site, by):
    model = tiny_model("llama")
    clean, corrupt = pair
    r = P.activation_patching(model, clean, corrupt, metric, site, by, normalize=False, batch_size=8)
    expect = naive(model, corrupt, clean, site, by)
    assert r.values.shape == expect.shape
    assert float((r.values - expect).abs().max()) <= 1e-4
    if site == "k":  # grouped-query attention: k is patched per KV head
        assert r.values.shape == (model.cfg.n_layers, model.cfg.n_kv_heads)


@pytest.mark.parametrize("arch", ["gpt2", "gemma3"])
def test_noising_and_normalising(tiny_model, pair, arch):
    model = tiny_model(arch)
    clean, corrupt = pair
    r = P.activation_patching(model, clean, corrupt, metric, "z", "head", direction="noise", normalize=True)
    raw = naive(model, clean, corrupt, "z", "head")
    m_clean, m_corrupt = float(metric(model(clean))), float(metric(model(corrupt)))
    assert r.clean_metric == pytest.approx(m_clean, abs=1e-5) and r.corrupt_metric == pytest.approx(m_corrupt, abs=1e-5)
    assert torch.allclose(r.values, (raw - m_corrupt) / (m_clean - m_corrupt), atol=1e-4)
    # patching the whole residual stream before layer 0 gives the other run exactly: 1 (denoise), 0 (noise)
    full = P.activation_patching(model, clean, corrupt, metric, "resid_pre", "layer")
    assert float(full.values[0]) == pytest.approx(1.0, abs=1e-4)
    noised = P.activation_patching(model, clean, corrupt, metric, "resid_pre", "layer", direction="noise")
    assert float(noised.values[0]) == pytest.approx(0.0, abs=1e-4)


def test_attribution_patching_is_the_linear_estimate(tiny_model, pair):
    model = tiny_model("llama")
    clean, corrupt = pair
    by_head = P.attribution_patching(model, clean, corrupt, metric, "z", "head", normalize=False)
    by_layer = P.attribution_patching(model, clean, corrupt, metric, "z", "layer", normalize=False)
    by_pos = P.attribution_patching(model, clean, corrupt, metric, "z", "pos", normalize=False)
    base = by_head.corrupt_metric
    # the per-entry estimates add up: a layer's estimate is the sum over its heads or positions
    assert torch.allclose((by_head.values - base).sum(1), by_layer.values - base, atol=1e-4)
    assert torch.allclose((by_pos.values - base).sum(1), by_layer.values - base, atol=1e-4)
    # independent first-order check: a small step toward the clean activation changes the metric by
    # step * estimate (finite difference)
    names = [P.SITES["z"].format(l) for l in range(model.cfg.n_layers)]
    _, src = model.run_with_cache(clean, names=names)
    _, cor = model.run_with_cache(corrupt, names=names)
    eps = 1e-3
    for l, h in [(0, 1), (2, 3)]:
        def nudge(z, hook, l=l, h=h):
            out = z.clone()
            out[:, :, h] += eps * (src[names[l]][:, :, h] - cor[names[l]][:, :, h])
            return out
        with torch.no_grad():
            moved = float(metric(model.run_with_hooks(corrupt, [(names[l], nudge)].copy()).double()))
        fd = (moved - base) / eps
        assert fd == pytest.approx(float(by_head.values[l, h]) - base, rel=0.05, abs=1e-3)
    act = P.activation_patching(model, clean, corrupt, metric, "z", "head", normalize=False)
    r = torch.corrcoef(torch.stack([act.values.flatten(), by_head.values.flatten()]))[0, 1]
    assert float(r) > 0.5


def test_path_patching_matches_two_step_loop(tiny_model, pair):
    model = tiny_model("llama")
    clean, corrupt = pair
    receivers, sender = [(2, 1), (2, 2)], (1, 3)
    r = P.path_patching(model, clean, corrupt, metric, receivers, ["q", "v"], normalize=False, batch_size=5)
    z = [P.SITES["z"].format(l) for l in range(3)]
    _, cc = model.run_with_cache(clean, names=z)
    _, kc = model.run_with_cache(corrupt, names=z)
    hooks = [(z[l], patch(kc)) for l in range(3)] + [(z[sender[0]], patch(cc, heads=[sender[1]]))]
    _, recorded = model.run_with_cache(corrupt, names=["blocks.2.attn.hook_q", "blocks.2.attn.hook_v"], fwd_hooks=hooks)
    group = model.cfg.n_heads // model.cfg.n_kv_heads
    final = [("blocks.2.attn.hook_q", patch(recorded, heads=[1, 2])),
             ("blocks.2.attn.hook_v", patch(recorded, heads=sorted({1 // group, 2 // group})))]
    expect = float(metric(model.run_with_hooks(corrupt, final)))
    assert float(r.values[sender]) == pytest.approx(expect, abs=1e-4)
    assert torch.isnan(r.values[2]).all()  # no path from the receivers' own layer
    to_logits = P.path_patching(model, clean, corrupt, metric, "logits", normalize=False)
    expect = float(metric(model.run_with_hooks(corrupt, hooks)))
    assert float(to_logits.values[sender]) == pytest.approx(expect, abs=1e-4)


@pytest.mark.parametrize("kind", ["zero", "mean", "resample", "resample-reference"])
def test_ablation_sweep_matches_naive_loop(tiny_model, pair, kind):
    """Each ablated activation is written here from its definition, not taken from ablation_source."""
    model = tiny_model("llama")
    tokens = pair[0][:2]  # two prompts: resampling without a reference must swap them (never a prompt's own)
    names = [P.SITES["z"].format(l) for l in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(tokens, names=names)
    reference = pair[1][:1] if kind == "resample-reference" else None  # one reference: every prompt gets it
    if reference is not None:
        _, ref = model.run_with_cache(reference, names=names)

    def source(l):
        act = cache[names[l]]                                             # [batch, pos, head, d_head]
        if kind == "zero":
            return torch.zeros_like(act)
        if kind == "mean":                                                # over prompts and positions
            return act.mean((0, 1), keepdim=True).expand_as(act).clone()
        if kind == "resample":
            return act[[1, 0]]
        return ref[names[l]].expand_as(act).clone()

    r = P.ablation_sweep(model, tokens, metric, "z", "head", kind=kind.split("-")[0], reference=reference, seed=3)
    for l in range(model.cfg.n_layers):
        for h in range(model.cfg.n_heads):
            with torch.no_grad():
                expect = float(metric(model.run_with_hooks(tokens, [(names[l], patch(source(l), heads=[h]))])))
            assert float(r.values[l, h]) == pytest.approx(expect, abs=1e-4)


def test_result_save_load_and_top(tmp_path, tiny_model, pair):
    r = P.activation_patching(tiny_model("llama"), *pair, metric, "z", "head")
    r.save(tmp_path / "res")
    back = P.PatchResult.load(tmp_path / "res")
    assert torch.equal(back.values, r.values) and back.site == "z" and back.normalized
    (label, value), = r.top(1)
    assert value == pytest.approx(float(r.values.max()))
    assert label == f"L{int(r.values.argmax()) // r.values.shape[1]}H{int(r.values.argmax()) % r.values.shape[1]}"


def test_bad_input_errors(tiny_model, pair):
    model = tiny_model("llama")
    clean, corrupt = pair
    with pytest.raises(UncoverError, match="same number of prompts and tokens"):
        P.activation_patching(model, clean, corrupt[:, :-1], metric)
    with pytest.raises(UncoverError, match="unknown patching site"):
        P.activation_patching(model, clean, corrupt, metric, site="resid")
    with pytest.raises(UncoverError, match="has no heads"):
        P.activation_patching(model, clean, corrupt, metric, site="mlp_out", by="head")
    with pytest.raises(UncoverError, match="direction"):
        P.attribution_patching(model, clean, corrupt, metric, direction="up")
    with pytest.raises(UncoverError, match="normalize=False"):
        P.activation_patching(model, clean, clean, metric)
    with pytest.raises(UncoverError, match="receiver head"):
        P.path_patching(model, clean, corrupt, metric, receivers=[(9, 0)])


def test_patching_only_chosen_entries(tiny_model, pair):
    model = tiny_model("llama")
    full = P.activation_patching(model, *pair, metric, "z", "head")
    some = P.activation_patching(model, *pair, metric, "z", "head", only=[(2, 1), (0, 3)])
    picked = ~some.values.isnan()
    assert picked.sum() == 2 and bool(picked[2, 1]) and bool(picked[0, 3])
    assert torch.allclose(some.values[picked], full.values[picked], atol=1e-6)
    with pytest.raises(UncoverError, match="only= entries"):
        P.activation_patching(model, *pair, metric, "z", "head", only=[(0, 9)])


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt_neox"])
def test_last_position_logits_give_the_same_patching(tiny_model, pair, arch):
    """logits_to_keep=1 (what task metrics use) changes only the cost, not the values."""
    model = tiny_model(arch)
    for site, by in (("z", "head"), ("resid_pre", "pos")):
        full = P.activation_patching(model, *pair, metric, site, by, normalize=False, batch_size=6)
        last = P.activation_patching(model, *pair, metric, site, by, normalize=False, batch_size=6, logits_to_keep=1)
        assert float((full.values - last.values).abs().max()) <= 1e-5
    swept = P.ablation_sweep(model, pair[0], metric, "z", "head", logits_to_keep=1)
    assert float((swept.values - P.ablation_sweep(model, pair[0], metric, "z", "head").values).abs().max()) <= 1e-5


def test_path_patching_with_receivers_in_two_layers_matches_the_loop(tiny_model, pair):
    """Receivers in layers 0 and 2 (a chunk of layer-1 senders must still record the layer-0 receiver)."""
    model = tiny_model("gemma3")
    clean, corrupt = pair
    receivers = [(0, 0), (2, 3)]
    r = P.path_patching(model, clean, corrupt, metric, receivers, "q", normalize=False, batch_size=12)
    z = [P.SITES["z"].format(l) for l in range(3)]
    q = ["blocks.0.attn.hook_q", "blocks.2.attn.hook_q"]
    _, cc = model.run_with_cache(clean, names=z)
    _, kc = model.run_with_cache(corrupt, names=z)
    for sender in [(l, h) for l in range(2) for h in range(model.cfg.n_heads)]:
        hooks = [(z[l], patch(kc)) for l in range(3)] + [(z[sender[0]], patch(cc, heads=[sender[1]]))]
        _, recorded = model.run_with_cache(corrupt, names=q, fwd_hooks=hooks)
        final = [(q[0], patch(recorded, heads=[0])), (q[1], patch(recorded, heads=[3]))]
        expect = float(metric(model.run_with_hooks(corrupt, final)))
        assert float(r.values[sender]) == pytest.approx(expect, abs=1e-4), sender
