"""Every causal-LM type of the installed transformers: tiny random model -> level, parity, hooks, techniques.

A representative set (one per structural case) gets every check of uncover.coverage.check;
every other type gets load + bitwise parity with every default hook cached. scripts/coverage.py writes the
same rows as docs/coverage.md.
"""
from __future__ import annotations

import functools

import pytest
import torch

from tests.conftest import tiny_hf
from uncover.core.adapters import LlamaAdapter, adapter_for
from uncover.coverage import build, causal_lm_types, check, share_full
from uncover.core.adapters.structural import ResidualAdapter, StructuralAdapter, discover
from uncover.core.model import Model
from uncover.errors import UncoverError

pytestmark = pytest.mark.usefixtures("one_thread")

# one model type per structural case the adapters recognise
DEEP = {
    "olmo2": "QK-norm over all heads, post-norms only (sandwich without pre-MLP norm)",
    "granite": "residual multiplier",
    "cohere": "parallel attention + MLP sharing one norm",
    "phi": "parallel, LayerNorm, plain MLP",
    "stablelm": "LayerNorm, GQA with fixed KV-head reshapes",
    "gpt_bigcode": "fused [q | k | v] with multi-query attention",
    "falcon": "fused multi-query qkv, attention written out by hand (sdpa / softmax branches), k / v inputs by re-runs",
    "bloom": "attention and MLP that add the residual themselves, ALiBi attention written out by hand",
    "xglm": "attention written out by hand over [batch * head] rows, q scaled after its projection",
    "minicpm3": "multi-head latent attention, residual scaled by a constant of the block",
    "persimmon": "fused per-head qkv with per-head LayerNorms",
    "gptj": "parallel, separate projections, rotary on part of each head",
    "mixtral": "mixture of experts",
    "qwen2_moe": "mixture of experts with a shared expert",
    "gpt_oss": "mixture of experts, attention sinks",
    "deepseek_v3": "multi-head latent attention, dense then MoE blocks",
    "smollm3": "successor of the default model",
    "internlm3": "LlamaForCausalLM under another model_type",
    "exaone4": "post-norms and QK-norm",
    "mamba": "state-space model: residual stream only",
    "jamba": "hybrid attention / state-space model",
}


@functools.lru_cache(maxsize=None)
def row(model_type: str):
    return check(model_type, deep=model_type in DEEP)


@pytest.mark.parametrize("model_type", causal_lm_types())
def test_every_causal_lm_type(model_type):
    r = row(model_type)
    if r.level == "skipped":
        pytest.skip(r.reason)
    if r.level == "refused":
        assert r.reason, "a refused type must say why"
        return
    assert not r.failed, f"{model_type} ({r.level}): {r.failed}"


def test_share_of_decoder_transformers_with_full_hooks():
    """Measured over every buildable decoder-only transformer type; FLOOR is the level reached today."""
    full, total = share_full([row(t) for t in causal_lm_types()])
    FLOOR = 0.90  # issue 19; 100 of 109 with transformers 5.24 (72 of 111 before the structural mechanisms)
    assert total > 50 and full / total >= FLOOR, f"{full}/{total} full"


@pytest.mark.parametrize("arch", ["llama", "qwen3", "phi3", "gemma3", "gpt2", "gpt_neox", "gpt_neox_seq"])
def test_structural_adapter_equals_the_hand_written_one(arch):
    """Discovered from modules alone, the structural adapter gives the hand-written adapter's activations."""
    hf = tiny_hf(arch)
    hand = Model(hf)
    found = discover(hf)
    assert found.plans is not None, found.reason
    structural = StructuralAdapter(hf, found)
    tokens = torch.randint(3, 1000, (2, 7), generator=torch.Generator().manual_seed(1))
    names = [n for n in hand.hook_names() if not hand._sites[n].on_request and n != "hook_pos_embed"]
    with torch.no_grad():
        ref, cache = hand.run_with_cache(tokens, names=names)
        hand.adapter, hand.cfg = structural, structural.config(hf)
        hand._sites = structural.sites(hf, hand.cfg)
        assert set(names) <= set(hand.hook_names()), set(names) - set(hand.hook_names())
        out, mine = hand.run_with_cache(tokens, names=names)
    assert torch.equal(out, ref)
    for n in names:
        assert torch.equal(mine[n], cache[n]), n


def test_adapter_is_chosen_by_modules():
    """internlm3 is a Llama under another model_type: it gets the structural adapter and full hooks."""
    hf = build("internlm3")
    adapter = adapter_for(hf)
    assert isinstance(adapter, StructuralAdapter) and adapter.missing == []
    assert isinstance(adapter_for(tiny_hf("llama")), LlamaAdapter)


def test_detection_happens_once_at_load():
    """After load no probe hook stays on any module and the attention implementation is the model's own."""
    hf = build("olmo2")
    before = hf.config._attn_implementation
    Model(hf)
    assert hf.config._attn_implementation == before
    for m in hf.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks, type(m).__name__


def test_residual_level_names_and_errors():
    hf = build("mamba")
    model = Model(hf)
    assert isinstance(model.adapter, ResidualAdapter)
    n = model.cfg.n_layers
    assert set(model.hook_names()) == {"hook_embed", "ln_final.hook_normalized"} | {
        f"blocks.{l}.hook_resid_{k}" for l in range(n) for k in ("pre", "post")}
    with pytest.raises(UncoverError, match="residual-stream level only .*no attention module"):
        model.run_with_cache(torch.tensor([[1, 2, 3]]), names=["blocks.0.attn.hook_z"])
    with pytest.raises(UncoverError, match="residual-stream level"):
        model.W_O(0)
    # the residual after block l is what block l + 1 reads
    _, cache = model.run_with_cache(torch.tensor([[1, 2, 3]]))
    assert torch.equal(cache["blocks.0.hook_resid_post"], cache["blocks.1.hook_resid_pre"])


def test_moe_router_and_output():
    """hook_router are the router's logits (recomputed from resid_mid by hand); hook_mlp_out is the MoE output."""
    model = Model(build("mixtral"))
    tokens = torch.randint(3, 900, (2, 6), generator=torch.Generator().manual_seed(0))
    _, cache = model.run_with_cache(tokens)
    layer = model.adapter.layers(model.hf)[1]
    mid = cache["blocks.1.hook_resid_mid"]
    logits = torch.nn.functional.linear(layer.post_attention_layernorm(mid), layer.mlp.gate.weight)
    torch.testing.assert_close(cache["blocks.1.mlp.hook_router"], logits)  # [batch, pos, n_experts]
    torch.testing.assert_close(mid + cache["blocks.1.hook_mlp_out"], cache["blocks.1.hook_resid_post"])
    with pytest.raises(UncoverError, match="read-only"):
        model.run_with_hooks(tokens, [("blocks.1.mlp.hook_router", lambda t, h: t * 0)])


def test_missing_names_are_explained():
    model = Model(build("jetmoe"))  # mixture of attention heads: per-expert output projections, no per-head z
    assert "attn.hook_z" in model.adapter.missing
    with pytest.raises(UncoverError, match="partial level.*hook_attn_out"):
        model.run_with_cache(torch.tensor([[1, 2, 3]]), names=["blocks.0.attn.hook_z"])


def test_residual_scales_are_found_from_the_forward():
    """MiniCPM3 adds attention and MLP outputs times scale_depth / sqrt(n_layers) (no config field uncover
    reads): the scale is fitted at load and snapped to the block's own constant, so hook_attn_out is the
    attention module's output times that constant, exactly what the residual gains."""
    model = Model(build("minicpm3"))
    layer = model.adapter.layers(model.hf)[1]
    plan = model.adapter.plans[layer]
    assert plan.attn_scale == plan.mlp_scale == layer.residual_scale != 1.0
    tokens = torch.randint(3, 900, (2, 6), generator=torch.Generator().manual_seed(0))
    seen = {}
    handle = layer.self_attn.register_forward_hook(lambda m, a, out: seen.update(o=out[0]))
    try:
        _, cache = model.run_with_cache(tokens)
    finally:
        handle.remove()
    assert torch.equal(cache["blocks.1.hook_attn_out"], seen["o"] * layer.residual_scale)
    torch.testing.assert_close(cache["blocks.1.hook_resid_pre"] + cache["blocks.1.hook_attn_out"],
                               cache["blocks.1.hook_resid_mid"])


def test_per_layer_head_size():
    """Gemma 4's global layers have larger heads than its sliding ones: hook_z and hook_result of each block
    use that block's head size; the results are z @ W_O per head and sum to the output projection's output."""
    model = Model(build("gemma4_unified_text"))
    tokens = torch.randint(3, 900, (2, 6), generator=torch.Generator().manual_seed(0))
    names = [f"blocks.{l}.attn.hook_{n}" for l in (0, 1) for n in ("z", "v", "result")]
    _, cache = model.run_with_cache(tokens, names=names)
    assert cache["blocks.0.attn.hook_z"].shape[-1] != cache["blocks.1.attn.hook_z"].shape[-1]
    for l in (0, 1):
        z = cache[f"blocks.{l}.attn.hook_z"]
        assert z.shape[:3] == (2, 6, model.cfg.n_heads) and z.shape[-1] == cache[f"blocks.{l}.attn.hook_v"].shape[-1]
        torch.testing.assert_close(cache[f"blocks.{l}.attn.hook_result"], torch.einsum("bphe,hed->bphd", z, model.W_O(l)))


def test_an_identity_norm_is_not_the_attention():
    """ModernBERT's first block has ``attn_norm = Identity()`` beside ``attn``: the attention is ``attn``."""
    model = Model(build("modernbert-decoder"))
    layer = model.adapter.layers(model.hf)[0]
    assert model.adapter.attn(layer) is layer.attn and model.adapter.missing == []


def test_per_layer_kv_heads():
    """MiMo-V2-Flash's sliding layers have twice the KV heads of its full ones: each block's hook_k / hook_v
    carry that block's KV heads (its k_proj's width over the head size), and the coverage check expects so."""
    model = Model(build("mimo_v2_flash"))
    tokens = torch.randint(3, 900, (2, 6), generator=torch.Generator().manual_seed(0))
    _, cache = model.run_with_cache(tokens, names=[f"blocks.{l}.attn.hook_{k}" for l in (0, 1) for k in "kv"])
    for l, layer in enumerate(model.adapter.layers(model.hf)):
        a = layer.self_attn
        n = a.k_proj.out_features // a.head_dim
        assert model.adapter.kv_heads(l) == n == cache[f"blocks.{l}.attn.hook_k"].shape[2] == cache[f"blocks.{l}.attn.hook_v"].shape[2]
    assert model.adapter.kv_heads(0) != model.adapter.kv_heads(1) and model.cfg.n_kv_heads == model.adapter.kv_heads(0)


def test_per_layer_type_sizes_shrink_in_proportion():
    """Inkling's sliding layers have sizes of their own (swa_num_attention_heads, swa_num_key_value_heads =
    2 x num_key_value_heads, swa_head_dim): the tiny config keeps their ratio to the shrunk size."""
    from transformers import AutoConfig
    from uncover.coverage import tiny_config

    base, tiny = AutoConfig.for_model("inkling_text"), tiny_config("inkling_text")
    for k in ("num_attention_heads", "num_key_value_heads", "head_dim"):
        assert getattr(tiny, "swa_" + k) * getattr(base, k) == getattr(tiny, k) * getattr(base, "swa_" + k), k


def test_attention_that_returns_its_bias():
    """GPT-NeoX-Japanese's last attention returns (out, weights, dense_bias) and its block adds out + bias:
    hook_attn_out is that sum; writing it moves resid_mid by exactly the change."""
    model = Model(build("gpt_neox_japanese"))
    layer = model.adapter.layers(model.hf)[1]
    assert layer.attention.dense_bias is not None
    tokens = torch.randint(3, 900, (2, 6), generator=torch.Generator().manual_seed(0))
    seen = {}
    handle = layer.attention.register_forward_hook(lambda m, a, out: seen.update(o=out[0]))
    try:
        _, cache = model.run_with_cache(tokens)
    finally:
        handle.remove()
    p = "blocks.1."
    assert torch.equal(cache[p + "hook_attn_out"], seen["o"] + layer.attention.dense_bias)
    torch.testing.assert_close(cache[p + "hook_resid_pre"] + cache[p + "hook_attn_out"], cache[p + "hook_resid_mid"])
    delta = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(1))
    _, moved = model.run_with_cache(tokens, names=[p + "hook_resid_mid"],
                                    fwd_hooks=[(p + "hook_attn_out", lambda t, hook: t + delta)])
    torch.testing.assert_close(moved[p + "hook_resid_mid"], cache[p + "hook_resid_mid"] + delta)


def test_hybrids_are_not_counted_as_transformers():
    """Falcon-H1 runs a mamba mixer beside attention in every block and Bailing-Hybrid has DeltaNet layers:
    hybrids (issue 19 names Falcon-H1 among them), not counted in the share of decoder-only transformers;
    GPT-OSS (whose MLP's name contains "ssM") and OPT (loose nn.Linear fc1 / fc2) still are."""
    from uncover.coverage import _all_attention

    assert not _all_attention(build("falcon_h1")) and not _all_attention(build("bailing_hybrid"))
    assert _all_attention(build("gpt_oss")) and _all_attention(build("opt"))


def test_readme_shows_the_coverage_headline():
    """The README's coverage section is the one scripts/coverage.py wrote with docs/coverage.md (same numbers)."""
    import re
    from pathlib import Path

    root = Path(__file__).parents[2]
    readme, table = (root / "README.md").read_text(), (root / "docs" / "coverage.md").read_text()
    section = readme.split("<!-- coverage:start", 1)[1].split("<!-- coverage:end -->", 1)[0]
    assert "](docs/coverage.md)" in section
    full, total = re.search(r"\*\*(\d+) of (\d+) decoder-only transformer types", section).groups()
    assert re.search(rf"\*\*{full} of {total} \(\d+%\) decoder-only transformer types", table)
    assert table.count("| full |") == int(re.search(r"Over all \d+ causal-LM types: (\d+) full", section).group(1))
