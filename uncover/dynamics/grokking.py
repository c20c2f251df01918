"""Grokking on modular arithmetic with Nanda et al. (2023)'s progress measures.

``run_grokking`` trains the one-layer transformer, snapshots the weights every ``measure_every`` steps,
and afterwards measures every snapshot: train/test loss and accuracy, total and per-part weight norms,
restricted and excluded loss for the key frequencies of the final embedding, and the Gini coefficients of
the embedding's and the neuron-to-logit map's Fourier norms. The three phases are detected from the curves.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from uncover.core.results import Progress, Result, no_progress
from uncover.dynamics.data import ModularData, modular_data
from uncover.dynamics.models import ToyConfig, ToyTransformer, as_model, nanda_config
from uncover.dynamics.progress import (Phases, detect_phases, excluded_loss, fourier_component_norms,
                                       frequency_norms, gini, logit_key_frequencies, neuron_frequencies,
                                       restricted_loss, weight_norms)
from uncover.dynamics.tasks import ModularTask
from uncover.dynamics.trainer import TrainConfig, Trainer
from uncover.errors import UncoverError


@dataclass
class GrokConfig:
    """A grokking run; defaults are Nanda et al. (2023) (p=113, 30% train, full batch, lr 1e-3, wd 1)."""

    p: int = 113
    op: str = "add"
    train_frac: float = 0.3
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int = 512
    steps: int = 25_000
    lr: float = 1e-3
    weight_decay: float = 1.0
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 10
    eval_every: int = 100
    measure_every: int = 500  # weight snapshots for the progress measures
    seed: int = 0
    stop_at_test_acc: float | None = None  # stop early once test accuracy reaches this (e.g. 0.99)
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.measure_every % self.eval_every:
            raise UncoverError(f"measure_every={self.measure_every} must be a multiple of eval_every={self.eval_every} "
                             "(snapshots are taken at evaluations)")
        if self.d_model % self.n_heads:
            raise UncoverError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")

    def model_config(self) -> ToyConfig:
        cfg = nanda_config(self.p)
        cfg.d_model, cfg.n_heads, cfg.d_mlp = self.d_model, self.n_heads, self.d_mlp
        cfg.d_head = self.d_model // self.n_heads
        return cfg

    def train_config(self) -> TrainConfig:
        stop = {"test_acc": self.stop_at_test_acc} if self.stop_at_test_acc else {}
        return TrainConfig(steps=self.steps, lr=self.lr, weight_decay=self.weight_decay, betas=self.betas,
                           warmup_steps=self.warmup_steps, eval_every=self.eval_every, checkpoints="fixed",
                           checkpoint_every=self.measure_every, seed=self.seed, stop_at=stop, device=self.device)


@dataclass
class GrokResult(Result):
    """Curves (one row per evaluation), progress measures (one row per snapshot), key frequencies, phases."""

    config: dict[str, Any]
    curves: list[dict[str, float]]
    measures: list[dict[str, float]]
    key_freqs: list[int]  # found from the final logits (largest drop in per-frequency logit norms)
    embed_freq_norms: list[float]  # final W_E's norm per frequency 0..(p-1)/2
    neuron_freq_counts: dict[int, int]  # frequency -> number of neurons it dominates (FVE > 0.5)
    phases: dict[str, Any]
    train_seconds: float
    steps_done: int
    final_state: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def summary(self) -> dict[str, Any]:
        """JSON-able summary (no weights)."""
        data = asdict(self)
        data.pop("final_state")
        data["neuron_freq_counts"] = {str(k): v for k, v in self.neuron_freq_counts.items()}
        return data



@torch.no_grad()
def logit_grid(model: ToyTransformer, p: int) -> torch.Tensor:
    """Answer logits for every (a, b): [p, p, p]."""
    return model(_grid_tokens(model, p), last_only=True).logits[:, -1].reshape(p, p, -1).double().cpu()


def _grid_tokens(model: ToyTransformer, p: int) -> torch.Tensor:
    """Every input (a, b, '=') on the model's device: [p * p, 3], a-major."""
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    return torch.stack([a.reshape(-1), b.reshape(-1), torch.full((p * p,), p)], 1).to(model.embed.weight.device)


@torch.no_grad()
def neuron_grid(model: ToyTransformer, p: int) -> torch.Tensor:
    """MLP activations at the answer position for every (a, b): [p, p, d_mlp] (read at the standard
    ``blocks.0.mlp.hook_post`` site through ``uc.load``)."""
    name = "blocks.0.mlp.hook_post"
    _, cache = as_model(model).run_with_cache(_grid_tokens(model, p), names=[name])
    return cache[name][:, -1].reshape(p, p, -1).double().cpu()


def progress_measures(model: ToyTransformer, data: ModularData, key_freqs: list[int]) -> dict[str, float]:
    """Restricted/excluded loss, Gini of Fourier norms and weight norms at the model's current weights."""
    if data.op not in ("add", "sub"):
        raise UncoverError(f"progress measures are defined for op 'add' or 'sub', not {data.op!r}")
    p, sign = data.p, 1 if data.op == "add" else -1
    logits = logit_grid(model, p)
    labels = data.labels.reshape(p, p)
    train_mask = torch.zeros(p * p, dtype=torch.bool)
    train_mask[data.train_idx] = True
    block = model.blocks[0]
    w_logit = (block.mlp.fc_out.weight.T @ model.W_U).detach().double().cpu()  # neuron -> logit [d_mlp, p]
    norms = weight_norms(model)
    return {
        "restricted_loss": restricted_loss(logits, labels, key_freqs, sign),
        "excluded_loss": excluded_loss(logits, labels, key_freqs, train_mask.reshape(p, p), sign),
        "gini_embed": gini(fourier_component_norms(model.W_E[:p].detach().double().cpu())),
        "gini_logit": gini(fourier_component_norms(w_logit.T)),
        **{f"norm_{k}": v for k, v in norms.items()},
    }


def run_grokking(cfg: GrokConfig, out_dir: str | Path | None = None, progress: Progress = no_progress) -> GrokResult:
    """Train a grokking run and measure its progress; ``out_dir`` keeps metrics/checkpoints/resume state and
    the result (an uncover result folder: ``GrokResult.load(out_dir)``)."""
    data = modular_data(cfg.p, cfg.op, cfg.train_frac, seed=cfg.seed)
    model = ToyTransformer(cfg.model_config(), seed=cfg.seed)
    train_cfg = cfg.train_config()
    snapshots: dict[int, dict[str, torch.Tensor]] = {}

    def snapshot(step: int, row: dict, m: nn.Module) -> None:
        if step % cfg.measure_every == 0:
            snapshots[step] = {k: v.detach().cpu().clone() for k, v in m.state_dict().items()}

    task = ModularTask(data)  # the trainer moves it to its device
    trainer = Trainer(model, task, train_cfg, out_dir=out_dir, on_eval=snapshot, progress=progress)
    result = trainer.fit()
    final = {k: v.detach().cpu().clone() for k, v in trainer.model.state_dict().items()}
    snapshots[result.steps_done] = final
    snapshots = {s: w for s, w in snapshots.items() if s % cfg.measure_every == 0 or s == result.steps_done}

    probe = ToyTransformer(cfg.model_config()).eval()
    probe.load_state_dict(final)
    sign = 1 if cfg.op == "add" else -1
    key_freqs = logit_key_frequencies(logit_grid(probe, cfg.p), sign)
    embed_norms = frequency_norms(probe.W_E[: cfg.p].detach().double().cpu())
    freqs, fve = neuron_frequencies(neuron_grid(probe, cfg.p))
    dominated = freqs[fve > 0.5]
    counts = {int(k): int((dominated == k).sum()) for k in dominated.unique()}
    curve_at = {row["step"]: row for row in result.metrics}
    measures = []
    for step in sorted(snapshots):
        probe.load_state_dict(snapshots[step])
        row = {"step": step, **progress_measures(probe, data, key_freqs)}
        for key in ("train_loss", "test_loss", "train_acc", "test_acc"):
            if step in curve_at:
                row[key] = curve_at[step][key]
        measures.append(row)
    curves = [{k: v for k, v in row.items()} for row in result.metrics]
    phases = detect_phases([r["step"] for r in curves], [r["train_acc"] for r in curves],
                           [r["test_acc"] for r in curves], [r["test_loss"] for r in curves])
    res = GrokResult(config=asdict(cfg), curves=curves, measures=measures, key_freqs=key_freqs,
                     embed_freq_norms=embed_norms.tolist(),
                     neuron_freq_counts=counts, phases=_phases_dict(phases), train_seconds=result.seconds,
                     steps_done=result.steps_done, final_state=final)
    if out_dir is not None:
        res.save(out_dir)
    return res


def _phases_dict(phases: Phases) -> dict[str, Any]:
    return {"memorised": phases.memorised, "cleanup_start": phases.cleanup_start,
            "generalised": phases.generalised, "ranges": phases.ranges()}
