"""Toy models of superposition (Elhage et al. 2022), many trained at once.

A toy model compresses n sparse features into m < n hidden dimensions and reconstructs them:
``h = W x``, ``x' = ReLU(Wᵀ h + b)`` (or ``x' = Wᵀ h + b`` for the linear model), with ``W`` [m, n].
Each feature is 0 with probability 1 - p (its *sparsity* S = 1 - p) and uniform on [0, 1] otherwise,
and the loss weights feature i's squared error by its importance I_i. Every tensor carries a leading
*instance* axis, so one call trains a whole sweep (sparsities x importances x seeds) in one batched loop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from uncover.core.results import Result
from uncover.errors import UncoverError


@dataclass
class SuperpositionConfig:
    """A sweep of toy models trained together.

    feature_probability: [instances] or [instances, n_features], P(feature != 0) = 1 - sparsity.
    importance: [n_features] or [instances, n_features].
    """

    n_features: int
    n_hidden: int
    feature_probability: torch.Tensor
    importance: torch.Tensor | None = None
    nonlinear: bool = True
    steps: int = 5_000
    batch_size: int = 1024
    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        p = torch.as_tensor(self.feature_probability, dtype=torch.float32)
        if p.ndim == 0:
            p = p[None]
        if p.ndim == 1:
            p = p[:, None].expand(-1, self.n_features)
        if p.shape[-1] != self.n_features or p.ndim != 2:
            raise UncoverError(
                f"feature_probability must be [instances] or [instances, {self.n_features}], got {tuple(p.shape)}"
            )
        if (p <= 0).any() or (p > 1).any():
            raise UncoverError("feature_probability must lie in (0, 1]: it is P(feature is non-zero)")
        imp = torch.ones(self.n_features) if self.importance is None else torch.as_tensor(
            self.importance, dtype=torch.float32)
        self.feature_probability = p.contiguous()
        self.importance = imp.expand(p.shape[0], -1).contiguous()
        if self.n_hidden < 1 or self.n_features < 1:
            raise UncoverError("n_features and n_hidden must be positive")

    @property
    def n_instances(self) -> int:
        return self.feature_probability.shape[0]


@dataclass
class ToyResult(Result):
    """Trained weights of every instance. W: [instances, m, n]; b: [instances, n];
    loss: [instances] importance-weighted MSE on a fresh batch of 8 x batch_size after training."""

    config: SuperpositionConfig
    W: torch.Tensor
    b: torch.Tensor
    loss: torch.Tensor
    loss_curve: torch.Tensor = field(repr=False)   # [logged steps, instances]


def sample_features(p: torch.Tensor, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """Sparse features [batch, instances, n]: uniform in [0, 1] with probability p, else 0."""
    u = torch.rand((batch_size, *p.shape), generator=generator)
    return torch.where(u < p, u / p, 0.0)   # given u < p, u / p is uniform on [0, 1)


def reconstruct(W: torch.Tensor, b: torch.Tensor, x: torch.Tensor, nonlinear: bool = True) -> torch.Tensor:
    """x' = ReLU(Wᵀ W x + b) per instance. W [inst, m, n], b [inst, n], x [batch, inst, n]."""
    xt = x.transpose(0, 1)                                  # [inst, batch, n]
    out = (xt @ W.transpose(1, 2) @ W).transpose(0, 1) + b    # [batch, inst, n]
    return torch.relu(out) if nonlinear else out


def train_toy_models(cfg: SuperpositionConfig) -> ToyResult:
    """Train all instances of ``cfg`` jointly with Adam (cosine-decayed lr); each has its own loss."""
    gen = torch.Generator().manual_seed(cfg.seed)
    inst, n, m = cfg.n_instances, cfg.n_features, cfg.n_hidden
    W = torch.nn.Parameter(torch.randn(inst, m, n, generator=gen) * math.sqrt(2.0 / (n + m)))
    b = torch.nn.Parameter(torch.zeros(inst, n))
    opt = torch.optim.Adam([W, b], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / cfg.steps, 1.0))))
    log_every = max(cfg.steps // 50, 1)
    curve = []
    for step in range(cfg.steps):
        x = sample_features(cfg.feature_probability, cfg.batch_size, gen)
        err = cfg.importance * (x - reconstruct(W, b, x, cfg.nonlinear)) ** 2
        per_instance = err.mean(dim=(0, 2))
        opt.zero_grad(set_to_none=True)
        per_instance.sum().backward()
        opt.step()
        sched.step()
        if step % log_every == 0 or step == cfg.steps - 1:
            curve.append(per_instance.detach())
    with torch.no_grad():   # final loss on a large fresh batch, so comparing seeds is not batch noise
        x = sample_features(cfg.feature_probability, 8 * cfg.batch_size, gen)
        final = (cfg.importance * (x - reconstruct(W, b, x, cfg.nonlinear)) ** 2).mean(dim=(0, 2))
    return ToyResult(cfg, W.detach(), b.detach(), final, torch.stack(curve))


def feature_norms(W: torch.Tensor) -> torch.Tensor:
    """||W_i|| for each feature column: [..., n]."""
    return W.norm(dim=-2)


def gram(W: torch.Tensor) -> torch.Tensor:
    """WᵀW: [..., n, n] (feature i's reconstruction weight from feature j)."""
    return W.transpose(-1, -2) @ W


def superposition_interference(W: torch.Tensor) -> torch.Tensor:
    """Σ_{j≠i} (Ŵ_i · W_j)²: how much other features project onto feature i's direction. [..., n]."""
    unit = W / W.norm(dim=-2, keepdim=True).clamp_min(1e-8)
    overlaps = (unit.transpose(-1, -2) @ W) ** 2
    return overlaps.sum(-1) - overlaps.diagonal(dim1=-2, dim2=-1)


def feature_dimensionality(W: torch.Tensor) -> torch.Tensor:
    """D_i = ||W_i||² / Σ_j (Ŵ_i · W_j)²: the fraction of a hidden dimension feature i owns. [..., n].

    1 for a dedicated dimension, 1/2 for an antipodal pair, 2/5 for a pentagon, 0 when not represented.
    """
    unit = W / W.norm(dim=-2, keepdim=True).clamp_min(1e-8)
    denom = ((unit.transpose(-1, -2) @ W) ** 2).sum(-1)
    return W.norm(dim=-2) ** 2 / denom.clamp_min(1e-8)


def dimensions_per_feature(W: torch.Tensor) -> torch.Tensor:
    """m / ||W||_F² : hidden dimensions per embedded feature, per instance. [...]."""
    return W.shape[-2] / (W ** 2).sum(dim=(-2, -1)).clamp_min(1e-8)


def best_instances(result: ToyResult, n_groups: int) -> torch.Tensor:
    """For a sweep laid out as [n_groups x seeds], the index of the lowest-loss seed in each group."""
    loss = result.loss.view(n_groups, -1)
    return loss.argmin(dim=1) + torch.arange(n_groups) * loss.shape[1]


# --- the n=2, m=1 phase diagram -------------------------------------------------------------------

PHASES = ("feature 2 not represented", "feature 2 dedicated", "superposition")


def classify_phase(W: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Phase of n=2, m=1 models from W [..., 1, 2]: 0 = feature 2 not represented,
    1 = feature 2 gets the dimension alone, 2 = both represented antipodally (superposition)."""
    w1, w2 = W[..., 0, 0], W[..., 0, 1]
    both = (w1.abs() > threshold) & (w2.abs() > threshold) & (w1 * w2 < 0)
    dedicated = ~both & (w2.abs() > threshold) & (w2.abs() > w1.abs())
    return torch.where(both, 2, torch.where(dedicated, 1, 0))


@dataclass
class PhaseDiagram(Result):
    """Phase of the best seed at each (density, relative importance) cell.

    densities: [rows] P(feature != 0); importances: [cols] importance of feature 2 (feature 1 has 1);
    phase: [rows, cols] int index into PHASES; W: [rows, cols, 1, 2].
    """

    densities: torch.Tensor
    importances: torch.Tensor
    phase: torch.Tensor
    W: torch.Tensor


def phase_diagram(
    densities: torch.Tensor, importances: torch.Tensor, seeds: int = 3, steps: int = 3_000, seed: int = 0
) -> PhaseDiagram:
    """Train n=2, m=1 ReLU toys on a density x relative-importance grid (all cells and seeds at once)."""
    rows, cols = len(densities), len(importances)
    p = densities.float()[:, None, None].expand(rows, cols, seeds).reshape(-1)
    rel = importances.float()[None, :, None].expand(rows, cols, seeds).reshape(-1)
    imp = torch.stack([torch.ones_like(rel), rel], dim=-1)
    cfg = SuperpositionConfig(2, 1, p, imp, steps=steps, lr=1e-2, seed=seed)
    result = train_toy_models(cfg)
    best = best_instances(result, rows * cols)
    W = result.W[best].view(rows, cols, 1, 2)
    return PhaseDiagram(densities, importances, classify_phase(W), W)


def toy_experiments(full: bool = False, seed: int = 0) -> dict[str, Any]:
    """The toy-model experiments the report and ``uncover toy superposition`` show, as JSON-able data.

    five_in_two: n=5 features in m=2 dimensions, dense vs sparse (W, dimensionality D); sweep: n=20, m=5
    with importance 0.7^i over feature probabilities, ReLU and linear (WᵀW, norms ||W_i||, represented
    count with ||W_i|| > 0.5, mean interference); phase: the n=2, m=1 phase diagram; dimensionality:
    dimensions per feature and per-feature D (Elhage et al. 2022). ``full`` runs the paper-size versions.
    """
    steps = 6000 if full else 1500
    out: dict[str, Any] = {}
    # n=5, m=2: dense (importance 0.8^i) vs sparse (equal importance)
    p = torch.tensor([1.0] * 3 + [0.03] * 3)
    imp = torch.stack([0.8 ** torch.arange(5.0)] * 3 + [torch.ones(5)] * 3)
    r = train_toy_models(SuperpositionConfig(5, 2, p, imp, steps=steps, lr=3e-2, seed=seed))
    best = best_instances(r, 2)
    out["five_in_two"] = {"W": r.W[best].tolist(), "D": feature_dimensionality(r.W[best]).tolist()}
    # n=20, m=5, importance 0.7^i across sparsity, ReLU and linear
    probs = [1.0, 0.3, 0.1, 0.03, 0.01] if not full else [1.0, 0.5, 0.3, 0.2, 0.1, 0.05, 0.03, 0.01, 0.003]
    pt = torch.tensor(probs).repeat_interleave(2)
    sweep = {}
    for nonlinear, lr in ((True, 1e-2), (False, 3e-2)):
        r = train_toy_models(SuperpositionConfig(20, 5, pt, 0.7 ** torch.arange(20.0), nonlinear=nonlinear,
                                                 steps=steps, batch_size=256, lr=lr, seed=seed))
        W = r.W[best_instances(r, len(probs))]
        norms = feature_norms(W)
        sweep["relu" if nonlinear else "linear"] = {
            "gram": gram(W).tolist(), "norms": norms.tolist(),
            "represented": (norms > 0.5).sum(-1).tolist(),
            "interference": [float(superposition_interference(w)[n > 0.5].mean()) if (n > 0.5).any() else 0.0
                             for w, n in zip(W, norms)]}
    out["sweep"] = {"probabilities": probs, **sweep}
    # n=2, m=1 phase diagram
    grid = 9 if full else 5
    dens, rel = torch.logspace(0, -2, grid), torch.logspace(-1, 1, grid)
    pd = phase_diagram(dens, rel, seeds=4 if full else 3, steps=steps, seed=seed)
    out["phase"] = {"densities": dens.tolist(), "importances": rel.tolist(), "phase": pd.phase.tolist()}
    # feature dimensionality
    n, m = (200, 20) if full else (40, 4)
    probs = torch.logspace(-0.2, -2.0 if full else -1.6, 10 if full else 6)
    r = train_toy_models(SuperpositionConfig(n, m, probs.repeat_interleave(2), steps=10_000 if full else 2000,
                                             batch_size=512, lr=1e-2, seed=seed))
    W = r.W[best_instances(r, len(probs))]
    D = feature_dimensionality(W)
    out["dimensionality"] = {"n": n, "m": m, "probabilities": probs.tolist(),
                             "dims_per_feature": dimensions_per_feature(W).tolist(),
                             "D": [d[d > 0.05].tolist() for d in D]}
    return out
