"""Hooks at the attention call (core/attention.py call_site, core/edges.py call_input_site).

For blocks whose q / k / v no module outputs (multi-head latent attention: deepseek_v3), or whose head inputs
have no linear path (per-head norms after rotary: hunyuan; k / v reshaped by a fixed KV-head count under
grouped-query attention: stablelm; multi-query attention in one fused projection: gpt_bigcode), uncover reads
q / k / v where the attention function receives them and re-runs the attention module for a changed head's
input. Checked against independent computations: softmax(q k^T * scale + causal mask) and its product with v,
and runs that write the block's input residual instead.
"""
from __future__ import annotations

import functools

import pytest
import torch

from tests.core.test_edge_hooks import head_inputs_agree_with_writing_the_block_input
from uncover.core.model import Model
from uncover.coverage import build
from uncover.errors import UncoverError

pytestmark = pytest.mark.usefixtures("one_thread")

# inkling_text: a short convolution over positions follows v_proj, so v has no per-position linear path
TYPES = ["deepseek_v3", "hunyuan_v1_dense", "stablelm", "gpt_bigcode", "inkling_text"]
TOKENS = torch.randint(5, 900, (2, 7), generator=torch.Generator().manual_seed(0))
L = 1


@functools.lru_cache(maxsize=None)
def model_of(model_type: str) -> Model:
    return Model(build(model_type))


def noise(model, seed: int) -> torch.Tensor:
    return torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(seed)) * 0.5


def changed_heads(a: torch.Tensor, b: torch.Tensor) -> set[int]:
    return set((a != b).movedim(2, 0).flatten(1).any(1).nonzero().flatten().tolist())


@pytest.mark.parametrize("model_type", ["deepseek_v3", "hunyuan_v1_dense", "gpt_bigcode"])
def test_q_k_v_are_what_the_attention_computes_with(model_type):
    """pattern = softmax(q k^T * scaling + causal mask) and z = pattern @ v, from the hooked q, k, v alone
    (types whose hook_q and hook_k are after the rotary embedding; stablelm's hook_q and hook_k are its
    projections' outputs, before it)."""
    model = model_of(model_type)
    p = f"blocks.{L}.attn."
    with torch.no_grad():
        _, cache = model.run_with_cache(TOKENS, names=[p + n for n in ("hook_q", "hook_k", "hook_v", "hook_z", "hook_pattern")])
    q, k, v = (cache[p + f"hook_{x}"].transpose(1, 2) for x in "qkv")  # [b, head, pos, d]
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    attn = model.adapter.attn(model.adapter.layers(model.hf)[L])
    scores = q @ k.transpose(-1, -2) * attn.scaling
    n = q.shape[2]
    scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    pattern = scores.softmax(-1)
    torch.testing.assert_close(cache[p + "hook_pattern"], pattern, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(cache[p + "hook_z"], (pattern @ v).transpose(1, 2), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("model_type", TYPES)
def test_call_level_names_are_served_there(model_type):
    model = model_of(model_type)
    sites = model._sites
    calls = [k for k in "qkv" if sites[f"blocks.{L}.hook_{k}_input"].attach_fn.__qualname__.startswith("call_input_site")]
    assert calls, "these types need the attention-call path for some head input"
    with torch.no_grad():
        ref = model.hf(TOKENS).logits
        names = [f"blocks.{L}.hook_{k}_input" for k in "qkv"] + [f"blocks.{L}.attn.hook_{k}" for k in "qkv"]
        logits, cache = model.run_with_cache(TOKENS, names=names)
    assert torch.equal(logits, ref), "read-only, the attention call leaves the logits bitwise equal"
    c = model.cfg
    assert cache[f"blocks.{L}.hook_q_input"].shape == (2, 7, c.n_heads, c.d_model)


# falcon: multi-query keys in one fused projection, attention written out by hand: k / v inputs by re-runs of
# the attention module with that KV slot replaced (core/edges.py rerun_kv_input_site)
@pytest.mark.parametrize("kind", ["q", "k", "v"])
@pytest.mark.parametrize("model_type", TYPES + ["falcon"])
def test_writing_one_heads_input_changes_only_that_head(model_type, kind):
    model = model_of(model_type)
    gqa = model.adapter.kv_heads(L) < model.cfg.n_heads  # this block's own (inkling's differ per layer)
    p, h = f"blocks.{L}.", 1

    def edit(t, hook):
        mask = torch.zeros(t.shape[2], 1)
        mask[h] = 1
        return t + mask * noise(model, 1)

    names = [p + f"attn.hook_{x}" for x in "qkvz"]
    with torch.no_grad():
        base_logits, base = model.run_with_cache(TOKENS, names=names)
        logits, cache = model.run_with_cache(TOKENS, names=names, fwd_hooks=[(p + f"hook_{kind}_input", edit)])
    assert not torch.allclose(logits, base_logits)
    for x in "qkv":
        want = {h} if x == kind and not (gqa and kind != "q") else set()
        assert changed_heads(cache[p + f"attn.hook_{x}"], base[p + f"attn.hook_{x}"]) == want, x
    assert changed_heads(cache[p + "attn.hook_z"], base[p + "attn.hook_z"]) == {h}


# not inkling_text: its heads also read the residual through r_proj (relative-position logits), a fourth
# path that no q / k / v input covers, so writing all three inputs is not writing the block's input
@pytest.mark.parametrize("model_type", [t for t in TYPES if t != "inkling_text"] + ["falcon"])
def test_head_inputs_agree_with_writing_the_block_input(model_type):
    model = model_of(model_type)
    head_inputs_agree_with_writing_the_block_input(model, TOKENS, L, noise(model, 2))


@pytest.mark.parametrize("model_type", ["deepseek_v3", "stablelm", "falcon"])
def test_gradients_at_head_inputs_split_the_residual_gradient(model_type):
    """Chain rule: d/d resid_pre = d/d resid_post + d/d mlp_in + sum over heads of d/d (q, k, v inputs)."""
    model = model_of(model_type)
    p = f"blocks.{L}."
    names = [p + n for n in ("hook_resid_pre", "hook_resid_post", "hook_mlp_in", "hook_q_input", "hook_k_input",
                             "hook_v_input")]
    _, _, grads = model.grad_cache(TOKENS, lambda logits: logits[:, -1, :7].sum(), names=names)
    heads = sum(grads[p + f"hook_{k}_input"].sum(2) for k in "qkv")
    want = grads[p + "hook_resid_post"] + grads[p + "hook_mlp_in"] + heads
    torch.testing.assert_close(grads[p + "hook_resid_pre"], want, atol=1e-5, rtol=1e-4)
    assert all(grads[p + f"hook_{k}_input"][:, :, 1].abs().sum() > 0 for k in "qkv")


def test_edits_refuse_a_kv_cache_and_everything_is_put_back():
    model = model_of("deepseek_v3")
    attn = model.adapter.attn(model.adapter.layers(model.hf)[L])
    config = attn.config
    edit = lambda t, hook: t + 1.0  # noqa: E731
    with model.hooks([(f"blocks.{L}.hook_q_input", edit)]), pytest.raises(UncoverError, match="without a cache"):
        model.hf.generate(TOKENS[:1], max_new_tokens=2, do_sample=False)
    assert attn.config is config
    for m in model.hf.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and "_uncover_chains" not in m.__dict__


INLINE = ["bloom", "mpt", "gpt_neo", "xglm"]


@pytest.mark.parametrize("model_type", INLINE)
def test_attention_written_out_by_hand(model_type):
    """Bloom, MPT, GPT-Neo and XGLM compute attention themselves (no transformers attention interface):
    hook_pattern is their softmax, equal to the attentions HF returns with output_attentions=True;
    z = pattern @ v; without ALiBi (GPT-Neo, XGLM) pattern = softmax(c q k^T + causal mask)."""
    model = model_of(model_type)
    p = f"blocks.{L}.attn."
    names = [p + n for n in ("hook_q", "hook_k", "hook_v", "hook_z", "hook_pattern")]
    with torch.no_grad():
        ref = model.hf(TOKENS, output_attentions=True)
        logits, cache = model.run_with_cache(TOKENS, names=names)
    # equal up to float rounding: on some CPUs (AMD EPYC) GPT-Neo's logits differ from HF's by 3e-7
    torch.testing.assert_close(logits, ref.logits, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(cache[p + "hook_pattern"], ref.attentions[L].float(), atol=1e-6, rtol=1e-5)
    pattern = cache[p + "hook_pattern"]
    v = cache[p + "hook_v"].transpose(1, 2)
    torch.testing.assert_close(cache[p + "hook_z"], (pattern @ v).transpose(1, 2), atol=1e-6, rtol=1e-5)
    if model_type in ("gpt_neo", "xglm"):
        q, k = cache[p + "hook_q"].transpose(1, 2), cache[p + "hook_k"].transpose(1, 2)
        n = q.shape[2]
        scale = 1.0 if model_type == "gpt_neo" else q.shape[-1] ** -0.5
        mask = torch.ones(n, n, dtype=torch.bool).triu(1)
        torch.testing.assert_close((scale * q @ k.transpose(-1, -2)).masked_fill(mask, float("-inf")).softmax(-1),
                                   pattern, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("model_type", INLINE)
def test_writing_a_hand_written_pattern(model_type):
    """Zeroing head 2's pattern zeroes its z and leaves the other heads' z; afterwards softmax is torch's own."""
    model = model_of(model_type)
    p = f"blocks.{L}.attn."
    softmax = torch.nn.functional.softmax
    with torch.no_grad():
        _, base = model.run_with_cache(TOKENS, names=p + "hook_z")
        _, cache = model.run_with_cache(TOKENS, names=p + "hook_z", fwd_hooks=[
            (p + "hook_pattern", lambda t, hook: torch.cat([t[:, :2], 0 * t[:, 2:3], t[:, 3:]], 1))])
    z, z0 = cache[p + "hook_z"], base[p + "hook_z"]
    assert torch.equal(z[:, :, 2], torch.zeros_like(z[:, :, 2]))
    torch.testing.assert_close(torch.cat([z[:, :, :2], z[:, :, 3:]], 2), torch.cat([z0[:, :, :2], z0[:, :, 3:]], 2))
    assert torch.nn.functional.softmax is softmax
    for m in model.hf.modules():  # (HF's own output-capturing hooks may stay from output_attentions=True)
        hooks = list(m._forward_hooks.values()) + list(m._forward_pre_hooks.values())
        assert not [h for h in hooks if h.__module__.startswith("uncover")] and "_uncover_inline_handles" not in m.__dict__


def test_rerun_kv_inputs_refuse_a_kv_cache_and_are_put_back():
    model = model_of("falcon")
    attn = model.adapter.attn(model.adapter.layers(model.hf)[L])
    edit = lambda t, hook: t + 1.0  # noqa: E731
    with model.hooks([(f"blocks.{L}.hook_v_input", edit)]), pytest.raises(UncoverError, match="without"):
        model.hf.generate(TOKENS[:1], max_new_tokens=2, do_sample=False)
    assert "_uncover_rerun_kv" not in attn.__dict__
    for m in model.hf.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and "_uncover_chains" not in m.__dict__
