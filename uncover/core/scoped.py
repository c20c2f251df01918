"""Changes a technique makes for its own duration and undoes on exit, so callers' objects stay as passed.

``frozen(module)`` turns off ``requires_grad`` on every parameter and restores each flag afterwards;
``seeded(seed)`` runs a block with the global torch RNGs (CPU and CUDA) seeded, then puts back their
previous state, so code that draws from the global RNG is reproducible without changing the caller's stream.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


@contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` with every parameter's ``requires_grad`` off; each flag is restored on exit."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield module
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with ``torch.manual_seed(seed)``; the global RNG states are restored on exit."""
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
        torch.manual_seed(seed)
        yield
