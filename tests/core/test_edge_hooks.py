"""Edge-level hook points (core/edges.py) on every architecture and both bundled models.

Each is checked against an independent computation: the block's own input residual, z @ W_O from the weights,
the model's own attention output, runs that write the standard residual names instead, and the chain rule.
"""
from __future__ import annotations

import pytest
import torch

from tests.conftest import ARCHITECTURES
from uncover.core.attention import _RoutedConfig
from uncover.errors import UncoverError

pytestmark = pytest.mark.usefixtures("one_thread")

ARCHS = ARCHITECTURES + ["toy"]
TOKENS = torch.randint(5, 1000, (2, 10), generator=torch.Generator().manual_seed(0))
L = 1  # the layer every test edits (tiny models have 3)
EDGE = ("hook_q_input", "hook_k_input", "hook_v_input", "attn.hook_result", "hook_mlp_in")


def changed_heads(a: torch.Tensor, b: torch.Tensor, axis: int = 2) -> set[int]:
    return set((a != b).movedim(axis, 0).flatten(1).any(1).nonzero().flatten().tolist())


def post_norm(model):
    """Gemma 2/3's post-attention norm (hook_result sums to its input), else the identity."""
    if model.cfg.architecture in ("gemma2", "gemma3"):
        return model.adapter.attn_out_module(model.adapter.layers(model.hf)[L])
    return lambda t: t


def o_bias(model):
    if model.cfg.architecture == "toy":
        return None
    return getattr(model.adapter.o_proj(model.adapter.layers(model.hf)[L]), "bias", None)


def one_head(h: int, delta: torch.Tensor):
    """A hook adding ``delta`` [d_model] to head h's copy only (a new tensor, as interventions return)."""

    def fn(t, hook):
        mask = torch.zeros(t.shape[2], 1, dtype=t.dtype)
        mask[h] = 1
        return t + mask * delta

    return fn


def noise(model, seed: int, scale: float = 0.5) -> torch.Tensor:
    return torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.mark.parametrize("arch", ARCHS)
def test_names_shapes_and_on_request(tiny_model, arch):
    model = tiny_model(arch)
    names = [f"blocks.{l}.{e}" for l in range(model.cfg.n_layers) for e in EDGE]
    assert set(names) <= set(model.hook_names())
    assert not set(names) & set(model.resolve_names(None)), "edge names are computed on request only"
    with torch.no_grad():
        ref = model.hf(TOKENS).logits
        logits, cache = model.run_with_cache(TOKENS, names=names)
    assert torch.equal(logits, ref), "edge hooks that change nothing leave the logits bitwise equal"
    b, p = TOKENS.shape
    c = model.cfg
    for name in names:
        want = (b, p, c.d_model) if name.endswith("hook_mlp_in") else (b, p, c.n_heads, c.d_model)
        assert tuple(cache[name].shape) == want, name


@pytest.mark.parametrize("arch", ARCHS)
def test_inputs_are_the_residual_each_reader_reads(tiny_model, arch):
    model = tiny_model(arch)
    p = f"blocks.{L}."
    names = [p + e for e in EDGE if e != "attn.hook_result"] + [p + "hook_resid_pre"]
    names += [] if model.cfg.parallel else [p + "hook_resid_mid"]
    _, cache = model.run_with_cache(TOKENS, names=names)
    pre = cache[p + "hook_resid_pre"]
    for kind in "qkv":
        assert torch.equal(cache[p + f"hook_{kind}_input"], pre[:, :, None].expand(-1, -1, model.cfg.n_heads, -1))
    mlp_reads = pre if model.cfg.parallel else cache[p + "hook_resid_mid"]
    assert torch.equal(cache[p + "hook_mlp_in"], mlp_reads)


@pytest.mark.parametrize("arch", ARCHS)
def test_result_is_z_times_W_O_and_sums_to_the_attention_output(tiny_model, arch):
    model = tiny_model(arch)
    p = f"blocks.{L}."
    names = [p + "attn.hook_result", p + "attn.hook_z", p + "hook_attn_out"]
    with torch.no_grad():
        _, cache = model.run_with_cache(TOKENS, names=names)
        result = cache[p + "attn.hook_result"]
        by_weights = torch.einsum("bphe,hed->bphd", cache[p + "attn.hook_z"], model.W_O(L))
        torch.testing.assert_close(result, by_weights, atol=1e-6, rtol=1e-5)
        bias = o_bias(model)
        total = result.sum(2) + (0 if bias is None else bias)  # the bias once, not per head
        torch.testing.assert_close(post_norm(model)(total), cache[p + "hook_attn_out"], atol=1e-5, rtol=1e-4)
        # zeroing head 2's result removes exactly its term from the attention output
        _, edited = model.run_with_cache(TOKENS, names=[p + "hook_attn_out"], fwd_hooks=[
            (p + "attn.hook_result", lambda t, hook: torch.cat([t[:, :, :2], 0 * t[:, :, 2:3], t[:, :, 3:]], 2))])
        want = post_norm(model)(total - result[:, :, 2])
        torch.testing.assert_close(edited[p + "hook_attn_out"], want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["q", "k", "v"])
@pytest.mark.parametrize("arch", ARCHS)
def test_writing_one_heads_input_changes_only_that_head(tiny_model, arch, kind):
    """Head 1 shares its KV head with head 0 under grouped-query attention (4 heads, 2 KV heads)."""
    model = tiny_model(arch)
    gqa = model.cfg.n_kv_heads < model.cfg.n_heads
    p, h = f"blocks.{L}.", 1
    edit = [(p + f"hook_{kind}_input", one_head(h, noise(model, 1)))]
    names = [p + f"attn.hook_{x}" for x in "qkvz"]
    with torch.no_grad():
        base_logits, base = model.run_with_cache(TOKENS, names=names)
        logits, cache = model.run_with_cache(TOKENS, names=names, fwd_hooks=edit)
        _, base_pattern = model.run_with_cache(TOKENS, names=p + "attn.hook_pattern")
        _, pattern = model.run_with_cache(TOKENS, names=p + "attn.hook_pattern", fwd_hooks=edit)
    assert not torch.allclose(logits, base_logits)
    for x in "qkv":
        want = {h} if x == kind and not (gqa and kind != "q") else set()  # GQA: the shared KV heads stay
        assert changed_heads(cache[p + f"attn.hook_{x}"], base[p + f"attn.hook_{x}"]) == want, x
    assert changed_heads(cache[p + "attn.hook_z"], base[p + "attn.hook_z"]) == {h}
    pattern_heads = changed_heads(pattern[p + "attn.hook_pattern"], base_pattern[p + "attn.hook_pattern"], axis=1)
    assert pattern_heads == ({h} if kind != "v" else set())


@pytest.mark.parametrize("arch", ARCHS)
def test_head_inputs_agree_with_writing_the_block_input(tiny_model, arch):
    model = tiny_model(arch)
    head_inputs_agree_with_writing_the_block_input(model, TOKENS, L, noise(model, 2))


def head_inputs_agree_with_writing_the_block_input(model, tokens: torch.Tensor, layer: int, d: torch.Tensor) -> None:
    """Every head reading x' = x + d through its q, k and v inputs = the block reading x' (its z and attention
    output); one head's q input := x' gives that head the q of the block reading x'."""
    p = f"blocks.{layer}."
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names=p + "hook_resid_pre")
        moved = cache[p + "hook_resid_pre"] + d
        names = [p + "attn.hook_z", p + "attn.hook_q", p + "hook_attn_out"]
        _, ref = model.run_with_cache(tokens, names=names, fwd_hooks=[(p + "hook_resid_pre", lambda t, hook: moved)])
        each = lambda t, hook: moved[:, :, None].expand_as(t)  # noqa: E731
        _, via_heads = model.run_with_cache(tokens, names=names, fwd_hooks=[(p + f"hook_{k}_input", each) for k in "qkv"])
        torch.testing.assert_close(via_heads[p + "attn.hook_z"], ref[p + "attn.hook_z"], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(via_heads[p + "hook_attn_out"], ref[p + "hook_attn_out"], atol=1e-5, rtol=1e-4)

        def head_2(t, hook):
            return torch.cat([t[:, :, :2], moved[:, :, None], t[:, :, 3:]], 2)

        _, one = model.run_with_cache(tokens, names=p + "attn.hook_q", fwd_hooks=[(p + "hook_q_input", head_2)])
    torch.testing.assert_close(one[p + "attn.hook_q"][:, :, 2], ref[p + "attn.hook_q"][:, :, 2], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_mlp_in_changes_the_mlp_input_only(tiny_model, arch):
    model = tiny_model(arch)
    p = f"blocks.{L}."
    read_by_mlp = p + ("hook_resid_pre" if model.cfg.parallel else "hook_resid_mid")
    names = [p + "mlp.hook_pre", p + "hook_attn_out", p + "hook_mlp_out", p + "hook_resid_post", read_by_mlp]
    with torch.no_grad():
        base_logits, base = model.run_with_cache(TOKENS, names=names)
        y = base[read_by_mlp] + noise(model, 3)
        logits, cache = model.run_with_cache(TOKENS, names=names, fwd_hooks=[(p + "hook_mlp_in", lambda t, hook: y)])
        # independent: the MLP sees y exactly as if the residual it reads were y
        _, ref = model.run_with_cache(TOKENS, names=p + "mlp.hook_pre", fwd_hooks=[(read_by_mlp, lambda t, hook: y)])
    assert not torch.allclose(logits, base_logits)
    torch.testing.assert_close(cache[p + "mlp.hook_pre"], ref[p + "mlp.hook_pre"], atol=1e-6, rtol=1e-5)
    assert torch.equal(cache[read_by_mlp], base[read_by_mlp]), "the residual stream that bypasses the MLP keeps its value"
    assert torch.equal(cache[p + "hook_attn_out"], base[p + "hook_attn_out"])
    bypass = base[read_by_mlp] + (base[p + "hook_attn_out"] if model.cfg.parallel else 0)
    torch.testing.assert_close(cache[p + "hook_resid_post"], bypass + cache[p + "hook_mlp_out"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_gradients_at_edges_split_the_residual_gradient(tiny_model, arch):
    """Chain rule: d/d resid_pre = d/d resid_post + d/d mlp_in + sum over heads of d/d (q, k, v inputs);
    and every head's result gets the gradient of the attention output it is summed into."""
    model = tiny_model(arch)
    p = f"blocks.{L}."
    names = [p + n for n in ("hook_resid_pre", "hook_resid_post", "hook_mlp_in", "hook_q_input", "hook_k_input",
                             "hook_v_input", "attn.hook_result")]
    _, _, grads = model.grad_cache(TOKENS, lambda logits: logits[:, -1, :7].sum(), names=names)
    heads = sum(grads[p + f"hook_{k}_input"].sum(2) for k in "qkv")
    want = grads[p + "hook_resid_post"] + grads[p + "hook_mlp_in"] + heads
    torch.testing.assert_close(grads[p + "hook_resid_pre"], want, atol=1e-5, rtol=1e-4)
    assert heads.abs().sum() > 0 and all(grads[p + f"hook_{k}_input"][:, :, 1].abs().sum() > 0 for k in "qkv")
    result = grads[p + "attn.hook_result"]
    torch.testing.assert_close(result, result[:, :, :1].expand_as(result))


def test_kv_input_edits_on_a_grouped_query_layer_refuse_a_kv_cache(tiny_model):
    model = tiny_model("llama")
    assert model.cfg.n_kv_heads < model.cfg.n_heads
    edit = one_head(1, noise(model, 4))
    with model.hooks([(f"blocks.{L}.hook_k_input", edit)]), pytest.raises(UncoverError, match="without a cache"):
        model.hf.generate(TOKENS[:1], max_new_tokens=2, do_sample=False)
    with model.hooks([(f"blocks.{L}.hook_q_input", edit)]):  # q inputs need no extra heads: generation works
        out = model.hf.generate(TOKENS[:1], max_new_tokens=2, do_sample=False)
    assert out.shape == (1, TOKENS.shape[1] + 2)


@pytest.mark.parametrize("arch", ["llama", "phi3", "gemma3"])
def test_everything_is_put_back(tiny_model, arch):
    model = tiny_model(arch)
    layer = model.adapter.layers(model.hf)[L]
    attn = model.adapter.attn(layer)
    before = {k: getattr(attn, k) for k in ("num_key_value_groups", "num_key_value_heads") if hasattr(attn, k)}
    config = attn.config
    edit = one_head(1, noise(model, 5))
    hooks = [(f"blocks.{L}.hook_{k}_input", edit) for k in "kv"]
    with model.hooks(hooks):
        assert isinstance(attn.config, _RoutedConfig)
        with model.hooks(hooks):  # nested: still routed, until the outer block ends
            model(TOKENS)
        assert isinstance(attn.config, _RoutedConfig)
        model(TOKENS)
    assert attn.config is config and not hasattr(attn, "_uncover_carry")
    assert {k: getattr(attn, k) for k in before} == before
    for module in layer.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks and "_uncover_chains" not in vars(module)
    assert torch.equal(model(TOKENS), model.hf(TOKENS).logits)


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["smollm", "gemma"])
def test_bundled_models(request, fixture):
    model = request.getfixturevalue(fixture)
    tokens = model.to_tokens("When Mary and John went to the store, John gave a drink to")
    p = "blocks.3."
    with torch.no_grad():
        ref = model.hf(tokens).logits
        logits, cache = model.run_with_cache(tokens, names=[p + e for e in EDGE] + [
            p + "hook_resid_pre", p + "attn.hook_z", p + "hook_attn_out"])
        assert torch.equal(logits, ref)
        pre = cache[p + "hook_resid_pre"]
        for kind in "qkv":
            assert torch.equal(cache[p + f"hook_{kind}_input"], pre[:, :, None].expand(-1, -1, model.cfg.n_heads, -1))
        layer = model.adapter.layers(model.hf)[3]
        total = cache[p + "attn.hook_result"].sum(2)
        out = model.adapter.attn_out_module(layer)(total) if fixture == "gemma" else total
        torch.testing.assert_close(out, cache[p + "hook_attn_out"], atol=1e-4, rtol=1e-3)
        by_weights = torch.einsum("bphe,hed->bphd", cache[p + "attn.hook_z"], model.W_O(3))
        torch.testing.assert_close(cache[p + "attn.hook_result"], by_weights, atol=1e-4, rtol=1e-3)
        h = model.cfg.n_heads - 1  # shares its KV head with the heads before it
        for kind in "qkv":
            edit = [(p + f"hook_{kind}_input", one_head(h, pre.std() * torch.randn(model.cfg.d_model,
                     generator=torch.Generator().manual_seed(6))))]
            edited, c2 = model.run_with_cache(tokens, names=p + "attn.hook_z", fwd_hooks=edit)
            assert changed_heads(c2[p + "attn.hook_z"], cache[p + "attn.hook_z"]) == {h}, kind
            assert not torch.allclose(edited, ref)
