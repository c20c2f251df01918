"""Vocabulary-sized work in bounded memory: log-probabilities from the unembedding's input, a chunk of
positions at a time, so no [batch, pos, d_vocab] tensor is ever whole (Gemma 3's 262k vocabulary makes
one 1 GiB per 1024 positions in float32).

``model(tokens, return_normed=True)`` gives the unembedding's input [batch, pos, d_model]; the functions
here unembed rows of it ``vocab_rows(model)`` at a time ([rows, d_vocab] float32 of at most ``VOCAB_BUDGET``
elements each, fewer under a memory budget). log_softmax is per row, so the values are those of the full logits (up to the last bit:
a matmul of fewer rows may round differently). ``vocab_slices`` cuts the vocabulary itself, for products
over it such as the unembedding's covariance.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from uncover.core.budget import chunk_bytes

if TYPE_CHECKING:
    from uncover.core.model import Model

VOCAB_BUDGET = 2 ** 25  # elements per [rows, d_vocab] chunk (128 MiB in float32)


def chunk_elements(model: "Model") -> int:
    """float32 elements per chunk: ``VOCAB_BUDGET``, fewer under a tight memory budget (``uncover.core.budget``)."""
    return chunk_bytes(model, 4 * VOCAB_BUDGET) // 4


def vocab_rows(model: "Model") -> int:
    """Rows of d_vocab logits per chunk: at least one, at most ``chunk_elements`` elements."""
    return max(1, chunk_elements(model) // model.cfg.d_vocab)


def vocab_slices(model: "Model", width: int) -> Iterator[slice]:
    """Slices of the vocabulary whose [width, slice] blocks hold at most ``chunk_elements`` elements."""
    step = max(1, chunk_elements(model) // width)
    for s in range(0, model.cfg.d_vocab, step):
        yield slice(s, s + step)


def log_prob_chunks(model: "Model", *normed: Tensor) -> Iterator[tuple[slice, list[Tensor]]]:
    """For the same rows of each normalised residual [n, d_model]: (the rows, float32 log-probabilities
    [rows, d_vocab] of each), chunk after chunk."""
    step = vocab_rows(model)
    for s in range(0, normed[0].shape[0], step):
        rows = slice(s, s + step)
        yield rows, [model.unembed(h[rows]).float().log_softmax(-1) for h in normed]


def _nll(model: "Model", h: Tensor, target: Tensor) -> Tensor:
    """-log p(target) [rows] from normalised residuals h [rows, d_model] and target ids [rows]."""
    return -model.unembed(h).float().log_softmax(-1).gather(-1, target[:, None]).squeeze(-1)


def next_token_nll(model: "Model", normed: Tensor, tokens: Tensor) -> Tensor:
    """Next-token cross-entropy [batch, pos - 1] in nats from the unembedding's input normed [batch, pos,
    d_model] and tokens [batch, pos] (= ``uncover.components.metrics.loss(logits, tokens, per_token=True)``).

    Differentiable: with gradients on, each chunk is recomputed in the backward pass (activation
    checkpointing), so the graph keeps no [rows, d_vocab] tensor either.
    """
    h = normed[:, :-1].flatten(0, 1)
    target = tokens[:, 1:].flatten().to(h.device)
    step, grad = vocab_rows(model), torch.is_grad_enabled() and h.requires_grad
    nll = [checkpoint(_nll, model, h[s:s + step], target[s:s + step], use_reentrant=False) if grad
           else _nll(model, h[s:s + step], target[s:s + step]) for s in range(0, len(h), step)]
    return torch.cat(nll).view(tokens.shape[0], -1)
