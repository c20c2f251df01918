"""Answer metrics on a model's logits, shared by tasks (``uncover.data``) and techniques.

Every metric reads the logits at one position (the last by default: tasks are left padded, so the last
position is each prompt's final token). Answer ids may be one per prompt (``[batch]``) or a padded set per
prompt (``[batch, k]`` with ``-1`` for unused slots); sets are averaged (logits) or summed (probabilities).
``per_prompt=True`` returns ``[batch]``; otherwise the mean over the batch, a scalar.
"""
from __future__ import annotations

from torch import Tensor


def _as_sets(ids: Tensor) -> tuple[Tensor, Tensor]:
    """[batch] or [batch, k] ids (-1 = unused) -> ([batch, k] ids safe to index, [batch, k] bool mask)."""
    ids = ids.reshape(ids.shape[0], -1).long()
    valid = ids >= 0
    return ids.clamp(min=0), valid


def _reduce(values: Tensor, per_prompt: bool) -> Tensor:
    return values if per_prompt else values.mean()


def answer_logits(logits: Tensor, ids: Tensor, pos: int = -1) -> Tensor:
    """Mean logit of each prompt's answer set at ``pos``: logits [batch, pos, vocab] -> [batch]."""
    ids, valid = _as_sets(ids.to(logits.device))
    picked = logits[:, pos].gather(-1, ids)
    return (picked * valid).sum(-1) / valid.sum(-1).clamp(min=1)


def logit_diff(logits: Tensor, answers: Tensor, wrong: Tensor, pos: int = -1, per_prompt: bool = False) -> Tensor:
    """Logit of the answer minus logit of the wrong answer (nats), read at ``pos``."""
    diff = answer_logits(logits, answers, pos) - answer_logits(logits, wrong, pos)
    return _reduce(diff, per_prompt)


def answer_probs(logits: Tensor, ids: Tensor, pos: int = -1) -> Tensor:
    """Total probability of each prompt's answer set at ``pos``: -> [batch]."""
    ids, valid = _as_sets(ids.to(logits.device))
    probs = logits[:, pos].float().softmax(-1).gather(-1, ids)
    return (probs * valid).sum(-1)


def prob_diff(logits: Tensor, answers: Tensor, wrong: Tensor, pos: int = -1, per_prompt: bool = False) -> Tensor:
    """Probability of the answer set minus probability of the wrong set (Hanna 2023's greater-than metric)."""
    diff = answer_probs(logits, answers, pos) - answer_probs(logits, wrong, pos)
    return _reduce(diff, per_prompt)
