"""Unwanted directions: value-vector scores, probe, aligned vectors and interventions vs naive computations."""
from __future__ import annotations

import logging

import pytest
import torch

from uncover.applications.alignment import toxic
from uncover.data import wordlists
from uncover.errors import UncoverError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_value_scores_are_z_scores_of_the_listed_logits(align_lm):
    _, ids, _ = wordlists.single_token_words(align_lm, wordlists.word_list("negative"))
    got = toxic.value_scores(align_lm, ids)
    for l in (0, 2):
        logits = align_lm.W_out(l).detach() @ align_lm.W_U.detach()  # [d_mlp, vocab]
        z = (logits[:, ids].mean(1) - logits.mean(1)) / logits.std(1, unbiased=False)
        assert torch.allclose(got[l], z, atol=1e-4)


@pytest.mark.slow
def test_multi_token_words_are_listed(smollm):
    kept, ids, skipped = wordlists.single_token_words(smollm, wordlists.word_list("offensive"))
    assert skipped, "some listed offensive words are several tokens for smollm2"
    assert len(kept) == len(ids) and not set(kept) & set(skipped)
    assert all(len(smollm.tokenizer(w, add_special_tokens=False).input_ids) > 1 for w in skipped)
    with pytest.raises(UncoverError, match=repr(skipped[0])):
        wordlists.single_token_words(smollm, wordlists.word_list("offensive"), strict=True)
    with pytest.raises(UncoverError, match="no word of the list is left"):
        wordlists.single_token_words(smollm, [" xqzvbwrongword"])
    with pytest.raises(UncoverError, match="unknown word list"):
        wordlists.word_list("rude")


def test_aligned_vectors_and_svd(align_lm):
    d = torch.randn(align_lm.cfg.d_model, generator=torch.Generator().manual_seed(0))
    out = toxic.aligned_vectors(align_lm, d, k=5)
    W = torch.cat([align_lm.W_out(l).detach() for l in range(align_lm.cfg.n_layers)])
    cos = torch.nn.functional.cosine_similarity(W, d[None] / d.norm(), dim=1)
    assert torch.allclose(torch.tensor(out["cosines"]), cos.topk(5).values, atol=1e-5)
    V = torch.stack([align_lm.W_out(l)[i].detach() for l, i in out["neurons"]])
    V = V / V.norm(dim=1, keepdim=True)
    assert torch.allclose(torch.tensor(out["singular_values"]), torch.linalg.svdvals(V), atol=1e-4)
    assert all(c >= 0 for c in out["svd_cosines"])


def test_interventions_change_what_they_say(align_lm):
    tokens = align_lm.to_tokens(["The nurse said that he"])
    _, base = align_lm.run_with_cache(tokens, names=["blocks.1.mlp.hook_post", "blocks.1.hook_mlp_out"])
    _, cut = align_lm.run_with_cache(tokens, names=["blocks.1.hook_mlp_out"],
                                     fwd_hooks=toxic.scale_vectors([(1, 3), (1, 7)], 0.25))
    a = base["blocks.1.mlp.hook_post"]
    W = align_lm.W_out(1).detach()
    expected = base["blocks.1.hook_mlp_out"] - 0.75 * (a[..., 3:4] * W[3] + a[..., 7:8] * W[7])
    assert torch.allclose(cut["blocks.1.hook_mlp_out"], expected, atol=1e-5)
    d = torch.randn(align_lm.cfg.d_model)
    _, r0 = align_lm.run_with_cache(tokens, names=["blocks.2.hook_resid_post"])
    _, r1 = align_lm.run_with_cache(tokens, names=["ln_final.hook_normalized"],
                                    fwd_hooks=toxic.subtract_direction(d, 2, 0.5, 4.0))
    shifted = r0["blocks.2.hook_resid_post"] - 2.0 * d / d.norm()
    assert torch.allclose(r1["ln_final.hook_normalized"], align_lm.apply_final_norm(shifted), atol=1e-5)


def test_listed_prob_matches_softmax(align_lm):
    prompts = ["The nurse said that", "The pilot said"]
    ids = [align_lm.to_single_token("he"), align_lm.to_single_token("she")]
    got = toxic.listed_prob(align_lm, prompts, ids)
    for p, g in zip(prompts, got):
        with torch.no_grad():
            probs = align_lm(align_lm.to_tokens(p))[0, -1].softmax(-1)
        assert g == pytest.approx(float(probs[ids].sum()), abs=1e-6)


def test_best_respects_the_perplexity_budget():
    def rows(ppl):
        return [{"kind": "none", "strength": 0, "neutral": 0.1, "provoking": 0.2, "perplexity": 10.0},
                {"kind": "scale", "strength": 16, "neutral": 0.05, "provoking": 0.1, "perplexity": ppl}]

    probe = toxic.ProbeDirection(torch.ones(2), 0, 1.0, 1.0, 1.0)
    effects = toxic.DirectionEffects("negative", [], [], [], probe, {}, rows(10.5))
    assert effects.best()["strength"] == 16
    effects.rows = rows(12.0)
    assert effects.best() is None


def test_whole_experiment_on_a_tiny_model(align_lm, caplog):
    held = torch.randint(3, 200, (2, 12), generator=torch.Generator().manual_seed(0))
    with caplog.at_level(logging.WARNING, logger="uncover"):
        result = toxic.unwanted_directions(align_lm, "negative", held, n_vectors=(4,), n_aligned=(4,), alphas=(0.1,))
    assert [r["kind"] for r in result.rows] == ["none", "scale", "scale_aligned", "subtract"]
    assert 0.0 <= result.probe.test_accuracy <= 1.0


def test_value_scores_in_vocabulary_slices_equal_the_whole_covariance(align_lm, monkeypatch):
    """The unembedding's covariance summed over slices of 7 tokens against one centred [d_model, d_vocab]."""
    import uncover.core.vocab as V

    _, ids, _ = wordlists.single_token_words(align_lm, wordlists.word_list("negative"))
    monkeypatch.setattr(V, "VOCAB_BUDGET", 7 * align_lm.cfg.d_model)
    got = toxic.value_scores(align_lm, ids)
    U = align_lm.W_U.detach().float()
    centred = U - U.mean(1, keepdim=True)
    C = centred @ centred.T / U.shape[1]
    target = U[:, ids].mean(1) - U.mean(1)
    for l in range(align_lm.cfg.n_layers):
        W = align_lm.W_out(l).detach().float()
        torch.testing.assert_close(got[l], (W @ target) / ((W @ C) * W).sum(1).sqrt(), rtol=1e-5, atol=1e-6)
