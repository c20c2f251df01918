"""Pruning: importance measures against naive computations, plans, and physically smaller models."""
from __future__ import annotations

import json

import pytest
import torch

import uncover as uc
from tests.conftest import tiny_hf
from tests.editing.conftest import word_tokenizer
from uncover.applications.pruning.curves import EvalSet, evaluate, perplexity, pruning_curves
from uncover.applications.pruning.importance import importance, wanda_mask
from uncover.applications.pruning.physical import n_params, prune_model, save_pruned
from uncover.applications.pruning.plan import PruningPlan, check_share, select
from uncover.components import metrics
from uncover.core.pruned import GatherLinear
from uncover.errors import UncoverError

pytestmark = pytest.mark.usefixtures("one_thread")
FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3"]


def _tokens(n=4, pos=10, seed=0):
    return torch.randint(3, 1000, (n, pos), generator=torch.Generator().manual_seed(seed))


def _mask_grads(model, tokens, unit):
    """Naive: a mask parameter per unit, one backward per window -> dL(x)/dm [n, layers, units]."""
    n_layers = model.cfg.n_layers
    width = model.cfg.n_heads if unit == "heads" else model.cfg.d_mlp
    out = []
    for row in tokens:
        mask = torch.ones(n_layers, width, requires_grad=True)
        name = "blocks.{}.attn.hook_z" if unit == "heads" else "blocks.{}.mlp.hook_post"
        shape = (lambda t: (1, 1, -1, 1)) if unit == "heads" else (lambda t: (1, 1, -1))
        hooks = [(name.format(l), lambda t, hook, l=l: t * mask[l].view(shape(t))) for l in range(n_layers)]
        with torch.enable_grad(), model.hooks(hooks):
            logits = model(row[None])
            loss = metrics.loss(logits, row[None])
            (g,) = torch.autograd.grad(loss, mask)
        out.append(g)
    return torch.stack(out)


@pytest.mark.parametrize("unit", ["heads", "neurons"])
def test_gradient_and_attribution_match_explicit_mask_gradients(tiny_model, unit, monkeypatch):
    import uncover.core.vocab as V

    model = tiny_model("llama")
    tokens = _tokens()
    monkeypatch.setattr(V, "VOCAB_BUDGET", 7 * model.cfg.d_vocab)  # the loss in chunks of 7 positions
    g = _mask_grads(model, tokens, unit)
    michel = g.abs().mean(0)
    michel = michel / michel.norm(dim=1, keepdim=True)
    got = importance(model, tokens, "gradient", unit, batch_size=3).scores
    assert torch.allclose(got, michel, atol=1e-5, rtol=1e-4)
    attribution = importance(model, tokens, "attribution", unit, batch_size=3).scores
    assert torch.allclose(attribution, -g.mean(0), atol=1e-6, rtol=1e-4)


def test_perplexity_in_vocabulary_chunks_equals_that_of_full_logits(tiny_model, monkeypatch):
    import uncover.core.vocab as V

    model = tiny_model("gemma3")
    tokens = _tokens(5, 9)
    plan = PruningPlan.empty(model).extended("heads", {0: [1]})
    monkeypatch.setattr(V, "VOCAB_BUDGET", 7 * model.cfg.d_vocab)
    for hooks in ([], plan.hooks()):
        with torch.no_grad(), model.hooks(hooks):
            want = float(metrics.loss(model(tokens), tokens).double().exp())
        assert perplexity(model, tokens, hooks, batch_size=2) == pytest.approx(want, rel=1e-6)


def test_attribution_estimates_the_loss_change_of_removing_a_head(tiny_model):
    """First-order estimate vs the measured change: same sign ordering for the extreme heads."""
    model = tiny_model("llama")
    tokens = _tokens(6, 12)
    est = importance(model, tokens, "attribution", "heads").scores
    base = torch.log(torch.tensor(perplexity(model, tokens)))
    true = torch.zeros_like(est)
    for l in range(model.cfg.n_layers):
        for h in range(model.cfg.n_heads):
            plan = PruningPlan(3, 4, 96, heads={l: [h]})
            true[l, h] = torch.log(torch.tensor(perplexity(model, tokens, plan.hooks()))) - base
    corr = torch.corrcoef(torch.stack([est.flatten(), true.flatten()]))[0, 1]
    assert corr > 0.9


def test_activation_magnitude_and_wanda_match_naive_loops(tiny_model):
    model = tiny_model("llama")
    tokens = _tokens()
    hf = model.hf
    c = model.cfg
    _, cache = model.run_with_cache(tokens, names=lambda n: n.endswith("hook_z") or n.endswith("mlp.hook_post"))
    act = torch.zeros(c.n_layers, c.n_heads)
    wanda = torch.zeros(c.n_layers, c.n_heads)
    mag = torch.zeros(c.n_layers, c.n_heads)
    for l, layer in enumerate(hf.model.layers):
        W = layer.self_attn.o_proj.weight  # [d_model, n_heads * d_head]
        z = cache[f"blocks.{l}.attn.hook_z"].reshape(-1, c.n_heads * c.d_head)
        xnorm = z.norm(dim=0)
        for h in range(c.n_heads):
            cols = slice(h * c.d_head, (h + 1) * c.d_head)
            act[l, h] = (z[:, cols] @ W[:, cols].T).norm(dim=-1).mean()
            for i in range(W.shape[0]):
                for j in range(cols.start, cols.stop):
                    wanda[l, h] += W[i, j].abs() * xnorm[j]
            q = layer.self_attn.q_proj.weight[cols]
            mag[l, h] = (q.pow(2).sum() + W[:, cols].pow(2).sum()).sqrt()
    assert torch.allclose(importance(model, tokens, "activation").scores, act, rtol=1e-4)
    assert torch.allclose(importance(model, tokens, "wanda").scores, wanda, rtol=1e-4)
    assert torch.allclose(importance(model, tokens, "magnitude").scores, mag, rtol=1e-5)
    # neurons: wanda on the down projection's columns
    n_w = importance(model, tokens, "wanda", "neurons").scores
    post = cache["blocks.1.mlp.hook_post"].reshape(-1, c.d_mlp)
    down = hf.model.layers[1].mlp.down_proj.weight
    assert torch.allclose(n_w[1], (down.abs() * post.norm(dim=0)[None]).sum(0), rtol=1e-4)


def test_wanda_mask_drops_lowest_scores_per_row():
    g = torch.Generator().manual_seed(1)
    W, x = torch.randn(5, 8, generator=g), torch.rand(8, generator=g)
    keep = wanda_mask(W, x, 0.25)
    for i in range(5):
        scores = [(abs(W[i, j].item()) * x[j].item(), j) for j in range(8)]
        dropped = {j for _, j in sorted(scores)[:2]}
        assert {j for j in range(8) if not keep[i, j]} == dropped
    with pytest.raises(UncoverError, match="between 0 and 1"):
        wanda_mask(W, x, 1.0)


@pytest.mark.parametrize("share", [0, 1, -0.2, 1.5, "half"])
def test_share_outside_unit_interval_is_refused(share):
    with pytest.raises(UncoverError, match="0 and 1|number in"):
        check_share(share)


def test_plans_keep_a_unit_per_layer():
    with pytest.raises(UncoverError, match="every head of layer 1"):
        PruningPlan(3, 4, 96, heads={1: [0, 1, 2, 3]})
    scores = torch.tensor([[0.0, 0.1, 0.2, 0.3], [5.0, 6.0, 7.0, 8.0]])
    chosen = select(scores, 4)
    assert chosen == {0: [0, 1, 2], 1: [0]}  # layer 0 keeps its most important head
    with pytest.raises(UncoverError, match="at most 6 of 8"):
        select(scores, 7)


def test_random_scores_depend_on_seed_only(tiny_model):
    model = tiny_model("llama")
    a = importance(model, None, "random", seed=3).scores
    assert torch.equal(a, importance(model, None, "random", seed=3).scores)
    assert not torch.equal(a, importance(model, None, "random", seed=4).scores)


@pytest.mark.parametrize("arch", FAMILIES)
def test_physically_pruned_model_matches_masks_and_reloads(arch, tmp_path):
    from transformers import AutoModelForCausalLM

    model = uc.load(tiny_hf(arch), tokenizer=word_tokenizer())
    plan = PruningPlan(3, 4, 96, heads={0: [1], 1: [0, 1], 2: [3]}, neurons={0: [1, 5, 7], 2: list(range(50))})
    tokens = _tokens(2, 12)
    with torch.no_grad(), model.hooks(plan.hooks()):
        masked = model(tokens)
    before = {k: v.clone() for k, v in model.hf.state_dict().items()}
    pruned = prune_model(model, plan)
    assert all(torch.equal(v, model.hf.state_dict()[k]) for k, v in before.items())  # original untouched
    assert (pruned(tokens) - masked).abs().max() <= 1e-4
    d = model.cfg.d_head
    layers = pruned.hf.model.layers
    assert layers[1].self_attn.q_proj.out_features == 2 * d
    assert layers[1].self_attn.k_proj.out_features == 1 * d  # heads 0 and 1 shared KV head 0: it is gone
    assert isinstance(layers[0].self_attn.k_proj, GatherLinear)  # kept heads 0, 2, 3: groups of 1 and 2
    assert layers[2].mlp.down_proj.in_features == 46
    removed = 4 * d * model.cfg.d_model * 2 + 53 * model.cfg.d_model * 3 + 2 * d * model.cfg.d_model
    assert n_params(model) - n_params(pruned) == removed + (0 if arch != "qwen2" else 4 * d + 2 * d)
    folder = save_pruned(pruned, tmp_path / "pruned")
    again = uc.load(str(folder))
    assert (again(tokens) - masked).abs().max() <= 1e-4
    hf = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
    assert (hf(tokens).logits - masked).abs().max() <= 1e-4
    assert json.loads((folder / "config.json").read_text())["uncover_pruning"]["d_mlp"] == [93, 96, 46]


def test_physical_pruning_refuses_fused_families_and_pruned_models(tiny_model):
    gpt2 = tiny_model("gpt2")
    with pytest.raises(UncoverError, match="fused projections"):
        prune_model(gpt2, PruningPlan(3, 4, 256, heads={0: [0]}))
    llama = tiny_model("llama")
    pruned = prune_model(llama, PruningPlan(3, 4, 96, heads={0: [0]}))
    with pytest.raises(UncoverError, match="already physically pruned"):
        prune_model(pruned, PruningPlan(3, 4, 96, heads={0: [1]}))
    with pytest.raises(UncoverError, match="not pruned"):
        save_pruned(llama, "unused")


def test_pruning_curves_are_iterative_and_evaluated(tiny_model, tmp_path):
    model = tiny_model("llama")
    cal, held = _tokens(4, 10, 1), _tokens(4, 10, 2)
    data = EvalSet(held)
    curves = pruning_curves(model, cal, data, methods=["gradient", "random"], shares=(0.25, 0.5))
    assert curves.shares == [0.0, 0.25, 0.5]
    for method in ("gradient", "random"):
        plans = curves.plans[method]
        assert [p.count("heads") for p in plans] == [0, 3, 6]
        assert all(set(map(tuple, _pairs(a))) <= set(map(tuple, _pairs(b))) for a, b in zip(plans, plans[1:]))
        for share, plan, value in zip(curves.shares, plans, curves.values[method]["perplexity"]):
            assert value == pytest.approx(evaluate(model, data, plan.hooks())["perplexity"], rel=1e-6)
    assert curves.best("perplexity", 0.5) in ("gradient", "random")
    again = type(curves).load(curves.save(tmp_path / "curves"))
    assert again.values["random"]["perplexity"] == curves.values["random"]["perplexity"]
    assert again.plans["gradient"][-1].heads == curves.plans["gradient"][-1].heads


def _pairs(plan):
    return [(l, h) for l, hs in plan.heads.items() for h in hs]
