"""Function vectors: exact indirect effects against a naive one-head-at-a-time loop; head outputs
against W_O; the vector is added at the last position only."""
import pytest
import torch

from uncover.data.icl import icl_task
from uncover.representations.function_vectors import (
    FunctionVector, head_outputs, indirect_effects, mean_head_activations,
)


@pytest.mark.slow
@torch.no_grad()
def test_exact_effects_match_a_naive_loop(smollm):
    task = icl_task("antonyms")
    clean, corrupted = task.prompts(3, n_shots=2, seed=0), task.prompts(3, n_shots=2, shuffle_labels=True, seed=1)
    mean_z = mean_head_activations(smollm, clean)
    layer = 14
    effects = indirect_effects(smollm, corrupted, mean_z, "exact", layers=[layer])
    assert bool((effects[:layer] == 0).all()) and bool((effects[layer + 1:] == 0).all())
    tokens, mask = smollm.to_tokens([p.text for p in corrupted], return_mask=True)
    answers = [smollm.tokenizer.encode(" " + p.answer, add_special_tokens=False)[0] for p in corrupted]
    rows = torch.arange(3)
    base = smollm(tokens, attention_mask=mask)[:, -1].softmax(-1)[rows, answers]
    for h in range(smollm.cfg.n_heads):
        def put(z, hook, h=h):
            z = z.clone()
            z[:, -1, h] = mean_z[layer, h]
            return z
        probs = smollm.run_with_hooks(tokens, [(f"blocks.{layer}.attn.hook_z", put)], attention_mask=mask)
        naive = (probs[:, -1].softmax(-1)[rows, answers] - base).mean()
        assert float(effects[layer, h]) == pytest.approx(float(naive), abs=1e-5)


def test_head_outputs_sum_mean_z_through_W_O(tiny_model):
    m = tiny_model("llama")
    mean_z = torch.randn(m.cfg.n_layers, m.cfg.n_heads, m.cfg.d_head)
    heads = [(0, 1), (2, 3)]
    expected = sum(mean_z[l, h] @ m.W_O(l)[h].detach() for l, h in heads)
    torch.testing.assert_close(head_outputs(m, mean_z, heads), expected, atol=1e-5, rtol=1e-5)


def test_function_vector_is_added_at_the_last_position(tiny_model, tmp_path):
    m = tiny_model("llama")
    fv = FunctionVector(torch.randn(m.cfg.d_model), 1, [(0, 0)], torch.zeros(3, 4), "t")
    name = "blocks.1.hook_resid_post"
    tokens = torch.randint(0, 1000, (2, 5))
    _, clean = m.run_with_cache(tokens, names=[name])
    _, steered = m.run_with_cache(tokens, names=[name], fwd_hooks=fv.hooks(2.0))
    expected = clean[name].clone()
    expected[:, -1] += 2.0 * fv.vector
    torch.testing.assert_close(steered[name], expected)
    loaded = FunctionVector.load(fv.save(tmp_path / "fv"))
    torch.testing.assert_close(loaded.vector, fv.vector)
    assert loaded.heads == [(0, 0)] and loaded.layer == 1


@pytest.mark.slow
def test_attribution_effects_are_the_first_order_estimate(smollm):
    """(mean_z - z) . d(sum of answer probs)/dz at the last token, with the gradient taken by hand."""
    task = icl_task("antonyms")
    clean, corrupted = task.prompts(3, n_shots=2, seed=0), task.prompts(3, n_shots=2, shuffle_labels=True, seed=1)
    mean_z = mean_head_activations(smollm, clean)
    layer = 14
    effects = indirect_effects(smollm, corrupted, mean_z, "attribution", layers=[layer])
    assert bool((effects[:layer] == 0).all()) and bool((effects[layer + 1:] == 0).all())
    tokens, mask = smollm.to_tokens([p.text for p in corrupted], return_mask=True)
    answers = [smollm.tokenizer.encode(" " + p.answer, add_special_tokens=False)[0] for p in corrupted]
    seen = {}

    def leaf(z, hook):
        seen["z"] = z.detach().requires_grad_(True)
        return seen["z"]

    with torch.enable_grad():
        logits = smollm.run_with_hooks(tokens, [(f"blocks.{layer}.attn.hook_z", leaf)], attention_mask=mask)
        total = logits[:, -1].softmax(-1)[torch.arange(3), answers].sum()
        (grad,) = torch.autograd.grad(total, seen["z"])
    z = seen["z"].detach()
    expect = ((mean_z[layer] - z[:, -1]) * grad[:, -1]).sum(-1).mean(0)
    torch.testing.assert_close(effects[layer], expect, atol=1e-6, rtol=1e-4)
