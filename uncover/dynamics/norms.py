"""Slingshots (Thilak et al. 2022) and the weight-norm picture of grokking (Liu et al. 2022, "Omnigrok").

``detect_slingshots`` finds training-loss spikes (a jump of at least ``factor`` over the recent minimum)
and, given the last layer's weight norm over training, how much it grew into each spike.
``run_slingshots`` trains with Adam and no weight decay and relates the spikes to the onset of
generalisation. ``norm_sweep`` trains at several fixed weight norms (rescaling after every step, as Liu
et al. do) and ``init_decay_sweep`` over initialisation scale x weight decay: train loss against weight
norm is L-shaped and test loss U-shaped ("LU").
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from uncover.core.results import Progress, Result, no_progress
from uncover.dynamics.data import modular_data
from uncover.dynamics.models import ModularMLP, ToyTransformer, nanda_config
from uncover.dynamics.tasks import ModularTask
from uncover.dynamics.trainer import TrainConfig, Trainer, weight_norm
from uncover.errors import UncoverError


@dataclass
class Slingshot:
    """One loss spike: where it starts and peaks, the loss before/at the peak, last-layer norm growth."""

    start: int  # first step (1-based, as in TrainResult.train_losses[start - 1]) above the threshold
    peak: int
    loss_before: float  # minimum over the window before the spike
    loss_peak: float
    norm_growth: float | None  # last-layer norm at the start / norm `window` steps earlier (None if unknown)


def detect_slingshots(train_losses: list[float], last_layer_norms: list[float] | None = None,
                      factor: float = 10.0, window: int = 50, min_jump: float = 1e-3) -> list[Slingshot]:
    """Spikes in a per-step training-loss curve.

    A spike starts at step t when loss[t] >= factor * min(loss[t-window:t]) and exceeds that minimum by
    at least ``min_jump``; it lasts while the loss stays above the threshold. ``last_layer_norms``
    (same length as the losses) gives each spike's norm growth over the preceding window.
    """
    if last_layer_norms is not None and len(last_layer_norms) != len(train_losses):
        raise UncoverError("last_layer_norms must have one entry per training step (same length as train_losses)")
    spikes: list[Slingshot] = []
    t = window
    n = len(train_losses)
    while t < n:
        base = min(train_losses[t - window : t])
        threshold = max(factor * base, base + min_jump)
        if train_losses[t] < threshold:
            t += 1
            continue
        start, peak = t, t
        while t < n and train_losses[t] >= threshold:
            if train_losses[t] > train_losses[peak]:
                peak = t
            t += 1
        growth = None
        if last_layer_norms is not None:
            growth = last_layer_norms[start] / max(last_layer_norms[start - window], 1e-12)
        spikes.append(Slingshot(start + 1, peak + 1, base, train_losses[peak], growth))
    return spikes


class _NormTrackingTask:
    """A ModularTask that records the unembedding's norm each time the training loss is computed."""

    def __init__(self, task: ModularTask, norms: list[float]):
        self.task, self.norms = task, norms

    def batch(self, step, batch_size, generator):
        return self.task.batch(step, batch_size, generator)

    def loss(self, model, batch):
        self.norms.append(float(model.unembed.weight.detach().norm()))
        return self.task.loss(model, batch)

    def evaluate(self, model):
        return self.task.evaluate(model)

    def to(self, device):
        self.task.to(device)
        return self


@dataclass
class SlingshotResult(Result):
    config: dict[str, Any]
    train_losses: list[float]
    last_layer_norms: list[float]  # per step
    curves: list[dict[str, float]]
    spikes: list[Slingshot]
    onset: int | None  # first evaluated step with test accuracy >= 0.5

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data["spikes_relative_to_onset"] = [s.peak - self.onset for s in self.spikes] if self.onset else None
        return data


def run_slingshots(p: int = 47, train_frac: float = 0.5, steps: int = 3000, lr: float = 1e-3,
                   d_model: int = 64, seed: int = 0, eval_every: int = 25,
                   progress: Progress = no_progress) -> SlingshotResult:
    """Adam without weight decay on modular addition (Thilak et al. 2022's setting, made small)."""
    cfg = nanda_config(p)
    cfg.d_model, cfg.d_head, cfg.d_mlp = d_model, d_model // cfg.n_heads, 4 * d_model
    model = ToyTransformer(cfg, seed=seed)
    task = ModularTask(modular_data(p, "add", train_frac, seed=seed))
    norms: list[float] = []
    train = TrainConfig(steps=steps, lr=lr, weight_decay=0.0, eval_every=eval_every, checkpoints="none", seed=seed)
    result = Trainer(model, _NormTrackingTask(task, norms), train, progress=progress).fit()
    onset = next((r["step"] for r in result.metrics if r["test_acc"] >= 0.5), None)
    spikes = detect_slingshots(result.train_losses, norms)
    return SlingshotResult({"p": p, "train_frac": train_frac, "steps": steps, "lr": lr, "d_model": d_model,
                            "seed": seed, "weight_decay": 0.0}, result.train_losses, norms, result.metrics,
                           spikes, onset)


def _mlp_run(p: int, train_frac: float, width: int, steps: int, lr: float, weight_decay: float, init_scale: float,
             fixed_norm: float | None, seed: int, act_fn: str) -> dict[str, float]:
    task = ModularTask(modular_data(p, "add", train_frac, seed=seed))
    model = ModularMLP(p, width=width, act_fn=act_fn, init_scale=init_scale, seed=seed)
    cfg = TrainConfig(steps=steps, lr=lr, weight_decay=weight_decay, eval_every=steps, checkpoints="none",
                      fixed_norm=fixed_norm, seed=seed, warmup_steps=1)
    result = Trainer(model, task, cfg).fit()
    row = dict(result.metrics[-1])
    row["final_norm"] = weight_norm(model)
    return row


def norm_sweep(norms: list[float], p: int = 31, train_frac: float = 0.5, width: int = 128, steps: int = 1000,
               lr: float = 1e-2, seed: int = 0, act_fn: str = "quadratic") -> list[dict[str, float]]:
    """Train an MLP at each fixed total weight norm (no weight decay); final train/test loss and accuracy."""
    rows = []
    for norm in norms:
        row = _mlp_run(p, train_frac, width, steps, lr, 0.0, 1.0, norm, seed, act_fn)
        rows.append({"norm": norm, **row})
    return rows


def init_decay_sweep(init_scales: list[float], weight_decays: list[float], p: int = 31, train_frac: float = 0.5,
                     width: int = 128, steps: int = 1000, lr: float = 1e-2, seed: int = 0,
                     act_fn: str = "quadratic") -> list[dict[str, float]]:
    """Initial weight scale x weight decay: where each run's norm ends and what it generalises to."""
    rows = []
    for scale in init_scales:
        for wd in weight_decays:
            row = _mlp_run(p, train_frac, width, steps, lr, wd, scale, None, seed, act_fn)
            rows.append({"init_scale": scale, "weight_decay": wd, **row})
    return rows

