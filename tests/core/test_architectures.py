"""Every supported architecture: parity with HF, every hook fires with its documented shape, writes work."""
from __future__ import annotations

import pytest
import torch

from tests.conftest import ARCHITECTURES

TOKENS = torch.randint(5, 1000, (2, 12), generator=torch.Generator().manual_seed(0))


def expected_shape(model, name: str, batch: int, pos: int) -> tuple:
    c = model.cfg
    if name.endswith(("_input", "hook_result")):  # edge-level names: per query head, in residual units
        return (batch, pos, c.n_heads, c.d_model)
    if name.endswith(("hook_q", "hook_z")):
        return (batch, pos, c.n_heads, c.d_head)
    if name.endswith(("hook_k", "hook_v")):
        return (batch, pos, c.n_kv_heads, c.d_head)
    if name.endswith("hook_pattern"):
        return (batch, c.n_heads, pos, pos)
    if name.endswith(("mlp.hook_pre", "mlp.hook_post")):
        return (batch, pos, c.d_mlp)
    return (batch, pos, c.d_model)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_parity_with_every_hook_attached(tiny_model, arch):
    model = tiny_model(arch)
    with torch.no_grad():
        ref = model.hf(TOKENS).logits
        logits, cache = model.run_with_cache(TOKENS)  # every name except the on-request ones
        with_edges, _ = model.run_with_cache(TOKENS, names=lambda n: not n.endswith("hook_pattern"))
    assert torch.equal(logits, ref), "hooks that change nothing must leave logits bitwise equal"
    assert torch.equal(with_edges, ref), "edge-level hooks that change nothing must leave logits bitwise equal"
    on_request = ("hook_pattern", "_input", "hook_result", "hook_mlp_in")
    assert set(cache.keys()) == {n for n in model.hook_names() if not n.endswith(on_request)}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_hook_fires_with_documented_shape(tiny_model, arch):
    model = tiny_model(arch)
    _, cache = model.run_with_cache(TOKENS, names=lambda n: True)
    for name in model.hook_names():
        shape = expected_shape(model, name, *TOKENS.shape)
        if name == "hook_pos_embed":  # learned positions are shared by the batch: [1, pos, d_model]
            shape = (1,) + shape[1:]
        assert tuple(cache[name].shape) == shape, name


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_writing_any_hook_changes_the_output(tiny_model, arch):
    model = tiny_model(arch)
    with torch.no_grad():
        ref = model(TOKENS)
        for name in model.hook_names():
            out = model.run_with_hooks(TOKENS, fwd_hooks=[(name, lambda t, h: t * 0.5 + 0.1)])
            assert not torch.allclose(out, ref), f"writing {name} did not change the logits"


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_residual_decomposition(tiny_model, arch):
    """attn_out and mlp_out are exactly what is added: pre + attn (+ mlp) = post, and mid = pre + attn."""
    model = tiny_model(arch)
    _, cache = model.run_with_cache(TOKENS)
    for l in range(model.cfg.n_layers):
        pre, post = cache[f"blocks.{l}.hook_resid_pre"], cache[f"blocks.{l}.hook_resid_post"]
        attn, mlp = cache[f"blocks.{l}.hook_attn_out"], cache[f"blocks.{l}.hook_mlp_out"]
        torch.testing.assert_close(pre + attn + mlp, post, atol=1e-5, rtol=1e-5)
        if not model.cfg.parallel:
            torch.testing.assert_close(pre + attn, cache[f"blocks.{l}.hook_resid_mid"], atol=1e-5, rtol=1e-5)
    resid = cache[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"]
    torch.testing.assert_close(model.apply_final_norm(resid), cache["ln_final.hook_normalized"])


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_weights_reproduce_activations(tiny_model, arch):
    """Per-head weights are laid out so that z @ W_O (+ bias) = attn_out and v = x W_V (+ bias) per head."""
    model = tiny_model(arch)
    _, cache = model.run_with_cache(TOKENS, names=lambda n: True)
    l = 1
    z = cache[f"blocks.{l}.attn.hook_z"]
    out = torch.einsum("bphd,hdm->bpm", z, model.W_O(l))
    o_proj = model.adapter.o_proj(model.adapter.layers(model.hf)[l])
    if getattr(o_proj, "bias", None) is not None:
        out = out + o_proj.bias
    if model.cfg.architecture in ("gemma2", "gemma3"):  # a post-norm sits between o_proj and the residual
        out = model.adapter.attn_out_module(model.adapter.layers(model.hf)[l])(out)
    torch.testing.assert_close(out, cache[f"blocks.{l}.hook_attn_out"], atol=1e-5, rtol=1e-4)
    # value vectors: hook_post @ W_out reproduces the MLP output (before any post-norm / bias)
    post = cache[f"blocks.{l}.mlp.hook_post"]
    down = model.adapter.mlp_down(model.adapter.layers(model.hf)[l])
    mlp = post @ model.W_out(l) + (down.bias if getattr(down, "bias", None) is not None else 0)
    if model.cfg.architecture in ("gemma2", "gemma3"):
        mlp = model.adapter.mlp_out_module(model.adapter.layers(model.hf)[l])(mlp)
    torch.testing.assert_close(mlp, cache[f"blocks.{l}.hook_mlp_out"], atol=1e-5, rtol=1e-4)
    assert model.W_Q(l).shape == (model.cfg.n_heads, model.cfg.d_model, model.cfg.d_head)
    assert model.W_K(l).shape == (model.cfg.n_kv_heads, model.cfg.d_model, model.cfg.d_head)
    assert model.W_in(l).shape == (model.cfg.d_model, model.cfg.d_mlp)
    assert model.W_E.shape == (model.cfg.d_vocab, model.cfg.d_model)
    assert model.W_U.shape == (model.cfg.d_model, model.cfg.d_vocab)


def _rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary embedding written out (rotate-half form): x [batch, pos, head, d_head] at positions 0..pos-1."""
    d = x.shape[-1]
    inv_freq = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = torch.arange(x.shape[1], dtype=torch.float64)[:, None] * inv_freq[None]   # [pos, d/2]
    cos, sin = torch.cat([angles, angles], -1).cos()[None, :, None], torch.cat([angles, angles], -1).sin()[None, :, None]
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return x * cos + torch.cat([-x2, x1], -1) * sin


@pytest.mark.parametrize("arch", ["gpt2", "llama", "mistral", "qwen2"])
def test_pattern_equals_masked_softmax_of_q_and_k(tiny_model, arch):
    """The pattern hook against attention computed here: softmax(q k^T / sqrt(d_head)) with future keys masked,
    from hook_q / hook_k (projection outputs; rotary applied here for the rotary families, KV heads shared)."""
    model = tiny_model(arch)
    names = ["blocks.1.attn.hook_q", "blocks.1.attn.hook_k", "blocks.1.attn.hook_pattern"]
    with torch.no_grad():
        _, cache = model.run_with_cache(TOKENS, names=names)
    q, k = cache[names[0]].double(), cache[names[1]].double()               # [batch, pos, head(kv), d_head]
    if arch != "gpt2":
        cfg = model.hf.config
        theta = getattr(cfg, "rope_theta", None) or cfg.rope_parameters["rope_theta"]
        q, k = _rope(q, theta), _rope(k, theta)
    k = k.repeat_interleave(q.shape[2] // k.shape[2], dim=2)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / q.shape[-1] ** 0.5
    future = torch.ones(TOKENS.shape[1], TOKENS.shape[1], dtype=torch.bool).triu(1)
    expect = scores.masked_fill(future, float("-inf")).softmax(-1)
    torch.testing.assert_close(cache[names[2]].double(), expect, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_pattern_hook_is_causal_and_can_be_written(tiny_model, arch):
    model = tiny_model(arch)
    _, cache = model.run_with_cache(TOKENS, names="blocks.0.attn.hook_pattern")
    pattern = cache["blocks.0.attn.hook_pattern"]
    torch.testing.assert_close(pattern.sum(-1), torch.ones(pattern.shape[:-1]))
    assert torch.all(pattern.triu(1) == 0), "causal: no attention to future keys"
    # the pattern hook switches only that forward to eager attention
    assert model.hf.config._attn_implementation != "uncover"
    # writing the pattern: uniform attention over the prefix changes the output
    def uniform(p, hook):
        causal = torch.tril(torch.ones_like(p))
        return causal / causal.sum(-1, keepdim=True)

    with torch.no_grad():
        base = model(TOKENS)
        out = model.run_with_hooks(TOKENS, fwd_hooks=[("blocks.0.attn.hook_pattern", uniform)])
    assert not torch.allclose(out, base)


@pytest.mark.parametrize("arch", [a for a in ARCHITECTURES if a != "gpt_neox"])
def test_writing_resid_mid_reaches_the_residual(tiny_model, arch):
    """resid_mid is not a module tensor in pre-norm blocks: adding d to it must equal adding d to attn_out."""
    model = tiny_model(arch)
    d = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        via_mid = model.run_with_hooks(TOKENS, [("blocks.1.hook_resid_mid", lambda t, h: t + d)])
        via_attn = model.run_with_hooks(TOKENS, [("blocks.1.hook_attn_out", lambda t, h: t + d)])
    torch.testing.assert_close(via_mid, via_attn, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ARCHITECTURES + ["toy"])
def test_start_at_layer_and_logits_to_keep(tiny_model, arch):
    """Starting at layer l from the cached resid_pre, or keeping only the last logits, gives the same logits."""
    model = tiny_model(arch)
    last = model.cfg.n_layers - 1
    names = [f"blocks.{l}.hook_resid_pre" for l in (0, last)] + [f"blocks.{last}.hook_mlp_out"]
    with torch.no_grad():
        ref, cache = model.run_with_cache(TOKENS, names=names)
        seen = {}
        for l in (0, last):
            hooks = [(f"blocks.{last}.hook_mlp_out", lambda t, h: seen.update(mlp=t.clone()))]
            out = model.run_with_hooks(TOKENS, hooks, start_at_layer=l, resid_pre=cache[f"blocks.{l}.hook_resid_pre"])
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(seen["mlp"], cache[f"blocks.{last}.hook_mlp_out"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model(TOKENS, logits_to_keep=2), ref[:, -2:], rtol=1e-5, atol=1e-5)
        # a different residual at the start layer changes the output: the skipped layers really are skipped
        moved = model(TOKENS, start_at_layer=last, resid_pre=cache[f"blocks.{last}.hook_resid_pre"] + 1.0)
        assert not torch.allclose(moved, ref)
    assert model(TOKENS).shape == ref.shape  # skipped layers are restored afterwards


def test_start_at_layer_bad_input(tiny_model):
    from uncover.errors import UncoverError

    model = tiny_model("llama")
    with pytest.raises(UncoverError, match="resid_pre of shape"):
        model(TOKENS, start_at_layer=1)
    with pytest.raises(UncoverError, match="resid_pre of shape"):
        model(TOKENS, start_at_layer=1, resid_pre=torch.zeros(2, 12, model.cfg.d_model + 1))
    with pytest.raises(UncoverError, match="out of range"):
        model(TOKENS, start_at_layer=99, resid_pre=torch.zeros(2, 12, model.cfg.d_model))


def test_start_at_layer_restores_a_wrapped_forward(tiny_model):
    """A layer whose forward is already wrapped on the instance (as accelerate does) gets that wrapper back."""
    model = tiny_model("llama")
    layer = model.adapter.layers(model.hf)[0]
    calls = []
    original = layer.forward

    def wrapped(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    layer.forward = wrapped
    try:
        _, cache = model.run_with_cache(TOKENS, names=["blocks.1.hook_resid_pre"])
        model(TOKENS, start_at_layer=1, resid_pre=cache["blocks.1.hook_resid_pre"])
        assert layer.__dict__["forward"] is wrapped
        model(TOKENS)
        assert len(calls) == 2  # the cached run and the last one; the skipped layer did not call it
    finally:
        del layer.forward
