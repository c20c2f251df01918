"""Bias heads: data balance and split, bias score and head gradients against naive computations."""
from __future__ import annotations

import pytest
import torch

from uncover.applications.alignment.bias import BiasHeads, bias_heads, bias_score, head_bias_gradients
from uncover.data import bias
from uncover.errors import UncoverError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_prompts_are_balanced_and_split_holds_out_templates_and_jobs():
    train, test = bias.bias_split("train"), bias.bias_split("test")
    for part in (train, test):
        assert sum(part.stereotype) == 0 and len(part) > 0
    assert not set(train.occupations) & set(test.occupations)
    templates = [{p.replace(o, "{}") for p, o in zip(d.prompts, d.occupations)} for d in (train, test)]
    assert templates[0] and templates[1] and not templates[0] & templates[1]
    with pytest.raises(UncoverError, match="unbalanced"):
        bias.bias_prompts(male=("pilot",), female=())
    with pytest.raises(UncoverError, match="train"):
        bias.bias_split("validation")


def test_bias_score_matches_single_prompt_runs(align_lm):
    data = bias.bias_split("test")
    he, she = bias.pronoun_ids(align_lm)
    naive = []
    for prompt, s in zip(data.prompts, data.stereotype):
        lp = align_lm(align_lm.to_tokens(prompt))[0, -1].log_softmax(-1)
        naive.append(s * (lp[he] - lp[she]))
    got = bias_score(align_lm, data, per_prompt=True)
    assert torch.allclose(got, torch.stack(naive).detach(), atol=1e-4)


def test_head_gradients_match_explicit_mask(align_lm):
    data = bias.bias_split("train")
    c = align_lm.cfg
    mask = torch.ones(c.n_layers, c.n_heads, requires_grad=True)
    hooks = [(f"blocks.{l}.attn.hook_z", lambda t, hook, l=l: t * mask[l].view(1, 1, -1, 1)) for l in range(c.n_layers)]
    tokens, am, stereo = bias.tokenize(align_lm, data)
    he, she = bias.pronoun_ids(align_lm)
    with torch.enable_grad(), align_lm.hooks(hooks):
        lp = align_lm(tokens, attention_mask=am)[:, -1].log_softmax(-1)
        (g,) = torch.autograd.grad((stereo * (lp[:, he] - lp[:, she])).mean(), mask)
    assert torch.allclose(head_bias_gradients(align_lm, data), g, atol=1e-5, rtol=1e-4)


def test_masking_curve_and_crossing(align_lm):
    held = torch.randint(3, 200, (2, 12), generator=torch.Generator().manual_seed(0))
    result = bias_heads(align_lm, held, counts=(1, 3))
    assert result.counts[0] == 0 and result.bias_test[0] == pytest.approx(float(bias_score(align_lm, bias.bias_split("test"))))
    k = result.counts[-1]
    if k:
        assert result.bias_test[-1] == pytest.approx(float(bias_score(align_lm, bias.bias_split("test"),
                                                                      result.plan(k, align_lm).hooks())))


def test_crossing_needs_both_halved_bias_and_small_perplexity_rise():
    def make(bias_test, ppl):
        return BiasHeads(torch.zeros(1, 1), [], [0, 1, 2], [0.0] * 3, bias_test, [0.5] * 3, ppl)

    assert make([1.0, 0.4, 0.2], [10.0, 10.5, 12.0]).crossing() == 1
    assert make([1.0, 0.6, 0.4], [10.0, 10.5, 12.0]).crossing() is None  # halved only where ppl rose 20%
    assert make([1.0, 0.6, 0.4], [10.0, 10.5, 10.9]).crossing() == 2
