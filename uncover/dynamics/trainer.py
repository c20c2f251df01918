"""A small, fast training loop for toy tasks.

Full-batch or mini-batch AdamW with linear warm-up; evaluation every ``eval_every`` steps; metrics as
JSONL (``metrics.jsonl``, one line per evaluation); weight checkpoints as safetensors at a fixed or
log-spaced schedule (``checkpoints/step_000123.safetensors``); an exact resume file (``resume.pt``: model,
optimizer, scheduler and RNG state); progress through any uncover ``Progress`` (a live loss/accuracy line). Runs on a GPU when one is present.

A ``TrainingTask`` supplies the batches, the loss and the evaluation; ``uncover.dynamics.tasks`` has the ones
used here (modular arithmetic, induction sequences).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from uncover.core.memory import tune_allocator
from uncover.core.results import Progress, Result, no_progress, show_status
from uncover.errors import UncoverError


class TrainingTask(Protocol):
    """What the trainer needs from a task."""

    def batch(self, step: int, batch_size: int | None, generator: torch.Generator) -> Any:
        """The training batch for ``step`` (the whole training set when ``batch_size`` is None)."""

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """Scalar training loss of ``model`` on ``batch``."""

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Metrics at the current weights (e.g. train/test loss and accuracy), under ``torch.no_grad``."""

    def to(self, device: torch.device) -> "TrainingTask":
        """The task with its data on ``device`` (the trainer's: a GPU when one is present)."""


@dataclass
class TrainConfig:
    """How to train. ``weight_decay=0`` gives plain Adam (the slingshot setting of Thilak et al. 2022);
    ``fixed_norm`` rescales all weights to that L2 norm after every step (Liu et al. 2022's LU curves)."""

    steps: int = 1000
    lr: float = 1e-3
    weight_decay: float = 1.0
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 10
    batch_size: int | None = None  # None = full batch
    eval_every: int = 100
    checkpoints: str = "log"  # "log" (log-spaced), "fixed" (every checkpoint_every) or "none"
    n_checkpoints: int = 30  # for the log-spaced schedule
    checkpoint_every: int = 1000  # for the fixed schedule
    seed: int = 0
    stop_at: dict[str, float] = field(default_factory=dict)  # e.g. {"test_acc": 0.99}: stop once all reached
    fixed_norm: float | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.steps < 1 or self.eval_every < 1:
            raise UncoverError("steps and eval_every must be positive integers")
        if self.checkpoints not in ("log", "fixed", "none"):
            raise UncoverError(f"checkpoints={self.checkpoints!r}; use 'log', 'fixed' or 'none'")
        self.betas = tuple(self.betas)


def checkpoint_steps(cfg: TrainConfig) -> list[int]:
    """The steps at which weights are saved (always including 0 and the last step)."""
    if cfg.checkpoints == "none":
        return []
    if cfg.checkpoints == "fixed":
        steps = set(range(0, cfg.steps + 1, cfg.checkpoint_every))
    else:
        steps = {int(round(x)) for x in torch.logspace(0, math.log10(cfg.steps), cfg.n_checkpoints).tolist()}
    return sorted(steps | {0, cfg.steps})


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def weight_norm(model: nn.Module) -> float:
    """L2 norm of all parameters together."""
    return math.sqrt(sum(float(p.detach().pow(2).sum()) for p in model.parameters()))


@dataclass
class TrainResult(Result):
    """What a run produced: the metric rows, per-step train losses, checkpoint paths and timings."""

    metrics: list[dict[str, float]]
    train_losses: list[float]
    checkpoints: dict[int, Path]
    steps_done: int
    seconds: float
    out_dir: Path | None

    def column(self, key: str) -> list[float]:
        return [row[key] for row in self.metrics if key in row]


class Trainer:
    """Train ``model`` on ``task`` with ``cfg``; ``out_dir`` (optional) receives metrics and checkpoints.

    ``trainer.fit()`` resumes exactly from ``out_dir/resume.pt`` when one is there and ``resume=True``.
    ``on_eval(step, row, model)`` may add entries to each metrics row (e.g. progress measures).
    """

    def __init__(self, model: nn.Module, task: TrainingTask, cfg: TrainConfig, out_dir: str | Path | None = None,
                 on_eval: Callable[[int, dict, nn.Module], None] | None = None,
                 progress: Progress = no_progress):
        tune_allocator()  # a full-batch step allocates tens of MiB: reuse it rather than fault it back in
        self.cfg, self.task, self.on_eval, self.progress = cfg, task, on_eval, progress
        self.device = resolve_device(cfg.device)
        self.model = model.to(self.device)
        self.task = task.to(self.device)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        fused = self.device.type in ("cpu", "cuda")
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                           betas=cfg.betas, fused=fused)
        warmup = max(cfg.warmup_steps, 1)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: min((s + 1) / warmup, 1.0))
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.step = 0
        self.metrics: list[dict[str, float]] = []
        self.train_losses: list[float] = []
        self.checkpoints: dict[int, Path] = {}
        self.seconds = 0.0

    # ---- persistence -------------------------------------------------------------------------
    def _save_checkpoint(self) -> None:
        if self.out_dir is None:
            return
        path = self.out_dir / "checkpoints" / f"step_{self.step:07d}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}, str(path))
        self.checkpoints[self.step] = path

    def save_resume(self) -> None:
        """Write everything needed to continue bit-for-bit: weights, optimizer, scheduler, RNG, history."""
        if self.out_dir is None:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "step": self.step, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "generator": self.generator.get_state(),
            "train_losses": torch.tensor(self.train_losses, dtype=torch.float64), "seconds": self.seconds,
            "config": json.dumps(asdict(self.cfg)),
        }
        tmp = self.out_dir / "resume.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(self.out_dir / "resume.pt")

    def _load_resume(self) -> None:
        path = self.out_dir / "resume.pt"
        state = torch.load(path, map_location=self.device, weights_only=True)
        saved = json.loads(state["config"])
        for key in ("lr", "weight_decay", "batch_size", "seed", "warmup_steps"):
            if saved[key] != getattr(self.cfg, key):
                raise UncoverError(f"{path} was written with {key}={saved[key]!r} but this run has "
                                 f"{key}={getattr(self.cfg, key)!r}; use a new out_dir or resume=False")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        self.step, self.seconds = int(state["step"]), float(state["seconds"])
        self.train_losses = state["train_losses"].tolist()
        metrics_path = self.out_dir / "metrics.jsonl"
        if metrics_path.exists():
            rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line]
            self.metrics = [r for r in rows if r["step"] <= self.step]
        for ckpt in sorted((self.out_dir / "checkpoints").glob("step_*.safetensors")):
            step = int(ckpt.stem.split("_")[1])
            if step <= self.step:
                self.checkpoints[step] = ckpt

    def _write_metrics(self) -> None:
        if self.out_dir is None:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        lines = "".join(json.dumps(row) + "\n" for row in self.metrics)
        (self.out_dir / "metrics.jsonl").write_text(lines)

    # ---- the loop ----------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        with torch.no_grad():
            row = {"step": self.step, **self.task.evaluate(self.model)}
            row["weight_norm"] = weight_norm(self.model)
            if self.on_eval is not None:
                self.on_eval(self.step, row, self.model)
        self.model.train()
        row["seconds"] = self.seconds
        self.metrics = [r for r in self.metrics if r["step"] != self.step] + [row]
        return row

    def _reached_stop(self, row: dict[str, float]) -> bool:
        stop = self.cfg.stop_at
        return bool(stop) and all(key in row and row[key] >= value for key, value in stop.items())

    def fit(self, resume: bool = True) -> TrainResult:
        """Train until ``cfg.steps`` (or until every ``stop_at`` threshold is reached at an evaluation)."""
        cfg = self.cfg
        if resume and self.out_dir is not None and (self.out_dir / "resume.pt").exists():
            self._load_resume()
        save_at = set(checkpoint_steps(cfg))
        if self.step == 0 and not self.metrics:
            self.evaluate()
            if 0 in save_at:
                self._save_checkpoint()
        stopped = self._reached_stop(self.metrics[-1]) if self.metrics else False
        steps = self.progress(range(self.step, cfg.steps if not stopped else self.step), "training")
        for _ in steps:
            t0 = time.perf_counter()
            batch = self.task.batch(self.step, cfg.batch_size, self.generator)
            loss = self.task.loss(self.model, batch)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            if cfg.fixed_norm is not None:
                self._rescale_to_norm(cfg.fixed_norm)
            self.step += 1
            self.train_losses.append(float(loss.detach()))
            self.seconds += time.perf_counter() - t0
            if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                t1 = time.perf_counter()
                row = self.evaluate()
                self.seconds += time.perf_counter() - t1
                stopped = self._reached_stop(row)
                show_status(steps, " ".join(f"{k}={v:.3g}" for k, v in row.items() if k.endswith(("loss", "acc"))))
            if self.step in save_at or stopped:
                self._save_checkpoint()
            if stopped:
                break
        self._write_metrics()
        self.save_resume()
        return TrainResult(self.metrics, self.train_losses, dict(self.checkpoints), self.step, self.seconds,
                           self.out_dir)

    @torch.no_grad()
    def _rescale_to_norm(self, target: float) -> None:
        scale = target / max(weight_norm(self.model), 1e-12)
        for p in self.model.parameters():
            p.mul_(scale)


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a safetensors checkpoint written by the Trainer into ``model`` (in place); returns it."""
    model.load_state_dict(load_file(str(path)))
    return model
