"""The built-in fact table is well formed, and known_facts filters as documented."""
from __future__ import annotations

from collections import Counter

import pytest

from uncover.data.facts import FACTS, RELATIONS, Fact, facts_for, known_facts
from uncover.errors import UncoverError


def test_table_shape_and_templates():
    assert len(FACTS) >= 300 and len(RELATIONS) >= 10
    for relation in RELATIONS.values():
        assert len(relation.templates) >= 3
        assert all(t.count("{}") == 1 and not t.endswith(" ") for t in relation.templates)
    assert all(f.attribute.startswith(" ") and f.attribute.strip() and f.relation in RELATIONS for f in FACTS)
    pairs = Counter((f.subject, f.relation) for f in FACTS)
    assert max(pairs.values()) == 1  # one attribute per subject and relation
    eiffel = Fact("Eiffel Tower", "landmark_city", " Paris")
    assert eiffel in FACTS and eiffel.prompt() == "The Eiffel Tower is located in the city of"
    assert eiffel.prompts()[0] == eiffel.prompt() and len(eiffel.prompts()) == len(RELATIONS["landmark_city"].templates)


def test_bad_input_says_what_to_do(tiny_lm):
    with pytest.raises(UncoverError, match="did you mean 'capital'"):
        facts_for("capitol")
    with pytest.raises(UncoverError, match="templates 0..3"):
        FACTS[0].prompt(9)
    with pytest.raises(UncoverError, match="min_prob"):
        known_facts(tiny_lm, FACTS[:3], min_prob=2.0)


def test_known_facts_keeps_single_token_greedy_attributes(tiny_lm):
    # on a random model, force a known fact by asking for the model's own greedy token as the attribute
    import torch

    prompts = [f.prompt() for f in FACTS[:6]]
    with torch.no_grad():
        greedy = [int(tiny_lm(tiny_lm.to_tokens(p))[0, -1].argmax()) for p in prompts]
    made_up = [Fact(f.subject, f.relation, " " + tiny_lm.tokenizer.decode([g])) for f, g in zip(FACTS[:6], greedy)]
    unknowable = [Fact("France", "capital", " no such word")]  # several tokens: never kept
    assert known_facts(tiny_lm, made_up + unknowable) == made_up
    assert known_facts(tiny_lm, made_up, min_prob=1.0) == []


def test_predict_next_equals_the_last_position_of_full_logits(tiny_lm):
    """Only the last position is unembedded (logits_to_keep=1): the same probabilities as whole logits."""
    import torch

    from uncover.data.facts import predict_next

    prompts = [f.prompt() for f in FACTS[:5]]
    got = predict_next(tiny_lm, prompts, batch_size=2)
    want = []
    for start in range(0, 5, 2):
        tokens, mask = tiny_lm.to_tokens(prompts[start:start + 2], return_mask=True)
        with torch.no_grad():
            want.append(tiny_lm(tokens, attention_mask=mask)[:, -1].float().softmax(-1))
    torch.testing.assert_close(got, torch.cat(want), rtol=1e-5, atol=1e-7)
