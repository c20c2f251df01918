"""Model-wise double descent (Nakkiran et al. 2021) on a small regression task with label noise.

A two-layer ReLU network with a fixed random first layer (random features) is fitted by its readout
to noisy targets of a random teacher. The readout is the minimum-norm least-squares solution, which is
where gradient descent from zero converges. Sweeping the width, the test loss goes down, peaks where the
model can first interpolate the noisy training set (width = n_train), and goes down again.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from uncover.core.results import Result


@dataclass
class DoubleDescentConfig:
    n_train: int = 100
    n_test: int = 1000
    d_input: int = 20
    noise: float = 0.5  # std of the label noise added to training targets
    widths: tuple[int, ...] = (5, 10, 20, 40, 60, 80, 90, 95, 100, 105, 110, 120, 150, 200, 300, 500, 1000, 2000)
    n_repeats: int = 5
    seed: int = 0


@dataclass
class DoubleDescentResult(Result):
    config: dict[str, Any]
    widths: list[int]
    train_loss: list[float]  # mean over repeats, MSE
    test_loss: list[float]  # against noise-free teacher targets
    peak_width: int  # width with the highest test loss

    def summary(self) -> dict[str, Any]:
        return asdict(self)


def min_norm_readout(features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The minimum-norm least-squares readout beta = pinv(features) @ targets. features [n, width]."""
    return torch.linalg.pinv(features) @ targets


def random_features(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """ReLU random features: relu(x @ weights / sqrt(d_input)); x [n, d], weights [d, width] -> [n, width]."""
    return torch.relu(x @ weights / math.sqrt(x.shape[1]))


def run_double_descent(cfg: DoubleDescentConfig) -> DoubleDescentResult:
    gen = torch.Generator().manual_seed(cfg.seed)
    train_losses = torch.zeros(len(cfg.widths), dtype=torch.float64)
    test_losses = torch.zeros(len(cfg.widths), dtype=torch.float64)
    for _ in range(cfg.n_repeats):
        teacher = torch.randn(cfg.d_input, generator=gen, dtype=torch.float64)
        x = torch.randn(cfg.n_train + cfg.n_test, cfg.d_input, generator=gen, dtype=torch.float64)
        clean = torch.tanh(x @ teacher / math.sqrt(cfg.d_input)) * 2  # a non-linear teacher
        noisy = clean[: cfg.n_train] + cfg.noise * torch.randn(cfg.n_train, generator=gen, dtype=torch.float64)
        for i, width in enumerate(cfg.widths):
            w = torch.randn(cfg.d_input, width, generator=gen, dtype=torch.float64)
            phi = random_features(x, w)
            beta = min_norm_readout(phi[: cfg.n_train], noisy)
            pred = phi @ beta
            train_losses[i] += (pred[: cfg.n_train] - noisy).pow(2).mean() / cfg.n_repeats
            test_losses[i] += (pred[cfg.n_train :] - clean[cfg.n_train :]).pow(2).mean() / cfg.n_repeats
    peak = cfg.widths[int(test_losses.argmax())]
    return DoubleDescentResult(asdict(cfg), list(cfg.widths), train_losses.tolist(), test_losses.tolist(), peak)
