"""Vocabulary chunks (uncover.core.vocab) and the unembedding's input (return_normed) against full logits."""
from __future__ import annotations

import pytest
import torch

import uncover.core.vocab as V
from uncover.components.metrics import loss


@pytest.fixture(scope="module", params=["llama", "gemma3"])
def model(request, tiny_model):
    return tiny_model(request.param)


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 1000, (3, 11), generator=torch.Generator().manual_seed(0))


def test_return_normed_is_the_unembeddings_input(model, tokens):
    normed = model(tokens, return_normed=True)
    assert normed.shape == (*tokens.shape, model.cfg.d_model)
    assert torch.equal(model.unembed(normed), model(tokens))
    hook = [("blocks.0.hook_resid_post", lambda t, h: 2 * t)]
    assert torch.equal(model.unembed(model.run_with_hooks(tokens, fwd_hooks=hook, return_normed=True)),
                       model.run_with_hooks(tokens, fwd_hooks=hook))


def test_log_prob_chunks_cover_every_row_once(model, tokens, monkeypatch):
    monkeypatch.setattr(V, "VOCAB_BUDGET", 4 * model.cfg.d_vocab)  # 33 rows in chunks of 4
    normed = model(tokens, return_normed=True).flatten(0, 1)
    full = model(tokens).flatten(0, 1).float().log_softmax(-1)
    chunks = list(V.log_prob_chunks(model, normed, 2 * normed))
    assert [c[1][0].shape[0] for c in chunks] == [4] * 8 + [1]
    # a matmul of fewer rows may round differently in the last bit
    torch.testing.assert_close(torch.cat([c[1][0] for c in chunks]), full, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(torch.cat([c[1][1] for c in chunks]), model.unembed(2 * normed).float().log_softmax(-1),
                               rtol=1e-6, atol=1e-6)


def test_next_token_nll_equals_the_loss_of_full_logits(model, tokens, monkeypatch):
    monkeypatch.setattr(V, "VOCAB_BUDGET", 5 * model.cfg.d_vocab)  # 30 predictions in chunks of 5
    with torch.no_grad():
        got = V.next_token_nll(model, model(tokens, return_normed=True), tokens)
        want = loss(model(tokens), tokens, per_token=True)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_next_token_nll_gradients_equal_those_of_full_logits(model, tokens, monkeypatch):
    """Gradients at a hook through the checkpointed chunks against autograd through whole logits."""
    monkeypatch.setattr(V, "VOCAB_BUDGET", 5 * model.cfg.d_vocab)
    name = "blocks.1.hook_resid_post"
    _, _, chunked = model.grad_cache(tokens, lambda n: V.next_token_nll(model, n, tokens).mean(-1).sum(), [name],
                                     return_normed=True)
    _, _, full = model.grad_cache(tokens, lambda logits: loss(logits, tokens, per_token=True).mean(-1).sum(), [name])
    torch.testing.assert_close(chunked[name], full[name], rtol=1e-5, atol=1e-7)
