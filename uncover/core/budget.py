"""A memory budget for a run: the peak resident memory that uncover's self-sized work plans for.

``set_memory_budget(gb)`` (or ``with memory_budget(gb):``; ``uncover report --max-memory GB``) states it.
uncover cannot shrink what one forward of the model needs, but the work it sizes itself follows the budget:
vocabulary-sized chunks (``uncover.core.vocab``), the rows per forward of the variant engine
(``uncover.core.variants``) and the edge graph's memory check (circuits) take their sizes from
``working_bytes(model)``, what the budget leaves beside the model's weights. Without a budget they keep
their defaults (128 MiB vocabulary chunks, the caller's batch sizes, half the available memory).
"""
from __future__ import annotations

import resource
import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

from uncover.errors import UncoverError

if TYPE_CHECKING:
    from uncover.core.model import Model

CHUNK_SHARE = 16  # one chunk of working tensors takes at most this fraction of the room beside the weights
FORWARD_SHARE = 4  # one batched forward's estimated activations take at most this fraction of it
_budget: list[int | None] = [None]


def set_memory_budget(gb: float | None) -> None:
    """The peak resident memory in GB (1e9 bytes) that self-sized work plans for; None: no budget."""
    if gb is not None and not gb > 0:
        raise UncoverError(f"a memory budget is a positive number of GB, got {gb!r}")
    _budget[0] = None if gb is None else int(gb * 1e9)


@contextmanager
def memory_budget(gb: float | None) -> Iterator[None]:
    """``set_memory_budget(gb)`` inside the block, the previous budget after it."""
    before = _budget[0]
    set_memory_budget(gb)
    try:
        yield
    finally:
        _budget[0] = before


def budget_bytes() -> int | None:
    """The budget in bytes, or None."""
    return _budget[0]


def weights_bytes(model: "Model") -> int:
    """Bytes of the model's parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in [*model.hf.parameters(), *model.hf.buffers()])


def working_bytes(model: "Model") -> int | None:
    """Bytes the budget leaves beside the model's weights, or None without a budget."""
    budget = _budget[0]
    if budget is None:
        return None
    room = budget - weights_bytes(model)
    if room <= 0:
        raise UncoverError(f"{model.name}'s weights alone take {weights_bytes(model) / 1e9:.3g} GB, more than the "
                           f"{budget / 1e9:.3g} GB memory budget; raise the budget (--max-memory) or load the model "
                           "in a smaller dtype")
    return room


def chunk_bytes(model: "Model", default: int) -> int:
    """Bytes one chunk of working tensors may take: ``default``, or less where the budget leaves less room
    (a ``CHUNK_SHARE``-th of ``working_bytes``)."""
    room = working_bytes(model)
    return default if room is None else min(default, room // CHUNK_SHARE)


def forward_bytes(model: "Model") -> int | None:
    """Bytes the estimated activations of one batched forward may take under the budget (a
    ``FORWARD_SHARE``-th of ``working_bytes``), or None without a budget."""
    room = working_bytes(model)
    return None if room is None else room // FORWARD_SHARE


def peak_rss_bytes() -> int:
    """The process's peak resident set size so far (bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS counts bytes, Linux kB
