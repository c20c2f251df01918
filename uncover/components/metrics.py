"""Task metrics on a model's logits, and the 0 (corrupt) .. 1 (clean) normaliser.

The answer metrics (``answer_logits``, ``logit_diff``, ``answer_probs``, ``prob_diff``) live in
``uncover.core.metrics`` (tasks in ``uncover.data`` use them too) and are importable from here.

Every metric reads the logits at one position (the last by default: tasks are left padded, so the last
position is each prompt's final token). Answer ids may be one per prompt (``[batch]``) or a padded set per
prompt (``[batch, k]`` with ``-1`` for unused slots); sets are averaged (logits) or summed (probabilities).
``per_prompt=True`` returns ``[batch]``; otherwise the mean over the batch, a scalar.
"""
from __future__ import annotations

from torch import Tensor

from uncover.core.metrics import _reduce, answer_logits, answer_probs, logit_diff, prob_diff

__all__ = ["answer_logits", "answer_probs", "kl_to_clean", "logit_diff", "loss", "normalise", "prob_diff"]


def kl_to_clean(logits: Tensor, clean_logits: Tensor, pos: int = -1, per_prompt: bool = False) -> Tensor:
    """KL(clean || this run) of the next-token distributions at ``pos``, in nats."""
    clean_lp = clean_logits[:, pos].float().log_softmax(-1)
    lp = logits[:, pos].float().log_softmax(-1)
    kl = (clean_lp.exp() * (clean_lp - lp)).sum(-1)
    return _reduce(kl, per_prompt)


def loss(logits: Tensor, tokens: Tensor, mask: Tensor | None = None, per_token: bool = False) -> Tensor:
    """Next-token cross-entropy in nats: logits [batch, pos, vocab], tokens [batch, pos].

    ``mask`` [batch, pos] (bool or 0/1) selects which *predicted* tokens count (position t counts the
    prediction of tokens[:, t] from position t-1; position 0 is never predicted). ``per_token=True``
    returns the [batch, pos-1] losses for tokens 1.. instead of their masked mean.
    """
    lp = logits[:, :-1].float().log_softmax(-1)
    nll = -lp.gather(-1, tokens[:, 1:, None].to(logits.device)).squeeze(-1)
    if per_token:
        return nll
    if mask is None:
        return nll.mean()
    m = mask[:, 1:].to(nll.device, nll.dtype)
    if m.sum() == 0:
        raise ValueError("loss: the mask selects no predicted token (position 0 is never predicted).")
    return (nll * m).sum() / m.sum()


def normalise(value: Tensor | float, clean: Tensor | float, corrupt: Tensor | float) -> Tensor | float:
    """Map a metric to 0 at the corrupted run's value and 1 at the clean run's value."""
    denom = clean - corrupt
    if abs(float(denom)) < 1e-12:
        raise ValueError(
            f"normalise: the clean ({float(clean):.4g}) and corrupt ({float(corrupt):.4g}) metrics are equal, "
            "so there is nothing to normalise; check that the corruption changes the answer."
        )
    return (value - corrupt) / denom
