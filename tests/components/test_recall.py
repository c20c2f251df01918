"""Attention knockout and subject enrichment against naive loops and the -inf formulation."""
import pytest
import torch

from uncover.components import recall as R
from uncover.data.facts import Fact


def test_zero_and_renormalise_equals_minus_infinity_logits(tiny_model):
    """The knockout hook (zero blocked entries, renormalise) equals softmax with blocked logits at -inf."""
    model = tiny_model("gpt2")  # no rotary embedding: scores are q . k / sqrt(d_head)
    tokens = torch.randint(0, 1000, (1, 6), generator=torch.Generator().manual_seed(0))
    _, cache = model.run_with_cache(tokens, names=["blocks.1.attn.hook_q", "blocks.1.attn.hook_k",
                                                   "blocks.1.attn.hook_pattern"])
    q, k = cache["blocks.1.attn.hook_q"][0], cache["blocks.1.attn.hook_k"][0]  # [pos, head, d_head]
    scores = torch.einsum("qhd,khd->hqk", q, k) / q.shape[-1] ** 0.5
    blocked = torch.tensor([False, True, True, False, False, False])
    logits = scores[:, -1].masked_fill(blocked, float("-inf"))
    expect = logits.softmax(-1)
    p = cache["blocks.1.attn.hook_pattern"][0, :, -1]
    assert torch.allclose(p, scores[:, -1].softmax(-1), atol=1e-5)  # the reconstruction is right
    renorm = p * ~blocked
    renorm = renorm / renorm.sum(-1, keepdim=True)
    assert torch.allclose(renorm, expect, atol=1e-5)
    # the core intervention the knockout uses does exactly this, and leaves the other query rows alone
    from uncover.core.hooks import HookPoint
    from uncover.core.interventions import block_attention

    pattern = cache["blocks.1.attn.hook_pattern"]
    knocked = block_attention(blocked)(pattern, HookPoint("blocks.1.attn.hook_pattern", 1))
    assert torch.allclose(knocked[0, :, -1], expect, atol=1e-5)
    assert torch.equal(knocked[:, :, :-1], pattern[:, :, :-1])


FACTS = [Fact("France", "capital", " Paris"), Fact("Japan", "capital", " Tokyo")]


def test_knockout_matches_a_one_fact_loop(smollm, tmp_path):
    r = R.attention_knockout(smollm, FACTS, window=3, layers=[4, 20], batch_size=4)
    again = R.KnockoutResult.load(r.save(tmp_path / "knockout"))
    assert torch.equal(again.per_fact, r.per_fact) and again.windows == r.windows
    assert r.values.shape == (3, 2) and r.per_fact.shape == (3, 2, 2)
    for i, fact in enumerate(FACTS):
        tokens = smollm.to_tokens(fact.prompt())
        subj = R.subject_positions(smollm, fact)
        assert smollm.to_str_tokens(tokens[0])[subj[0]].strip() == fact.subject
        answer = smollm.to_single_token(fact.attribute)
        with torch.no_grad():
            base = smollm(tokens)[0, -1].softmax(-1)[answer]
        n = tokens.shape[1]
        blocks = {"subject": subj, "relation": [p for p in range(n - 1) if p not in subj], "last": [n - 1]}
        for t, target in enumerate(r.targets):
            for w, (lo, hi) in enumerate(r.windows):
                def hook(pattern, point, keys=blocks[target]):
                    out = pattern.clone()
                    out[:, :, -1, keys] = 0
                    out[:, :, -1] /= out[:, :, -1].sum(-1, keepdim=True)
                    return out
                hooks = [(f"blocks.{l}.attn.hook_pattern", hook) for l in range(lo, hi)]
                with torch.no_grad():
                    p = smollm.run_with_hooks(tokens, hooks)[0, -1].softmax(-1)[answer]
                assert float(r.per_fact[t, w, i]) == pytest.approx(float((p - base) / base * 100), abs=1e-2)


def test_subject_enrichment_reads_the_lens_at_the_subject(smollm):
    from uncover.components.lens import logit_lens

    e = R.subject_enrichment(smollm, FACTS[:1])
    fact = FACTS[0]
    lens = logit_lens(smollm, fact.prompt(), target=smollm.to_single_token(fact.attribute))
    s = R.subject_positions(smollm, fact)[-1]
    assert torch.allclose(e.subject_rank, lens.target_rank[:, 0, s].float())
    assert torch.allclose(e.last_prob, lens.target_prob[:, 0, -1])
    assert float(e.last_rank[-1]) == 0  # the model knows it


def test_knockout_bad_target(smollm):
    from uncover.errors import UncoverError

    with pytest.raises(UncoverError, match="unknown knockout targets"):
        R.attention_knockout(smollm, FACTS, targets=["object"])
