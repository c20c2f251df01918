"""Train an SAE or transcoder on activation batches: Adam, warm-up and decay, dead-latent tracking,
decoder-norm handling, checkpoints that resume, and progress (any uncover Progress) with a live L0 / explained variance /
dead fraction.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import torch

from uncover.core.results import Progress, Result, no_progress, show_status
from uncover.core.scoped import seeded
from uncover.errors import UncoverError
from uncover.features.sae import SAE

Batch = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


@dataclass
class SAETrainConfig:
    """Optimisation settings.

    total_tokens: stop after this many training tokens (rounded down to whole batches).
    lr: Adam learning rate; warmup_steps linear warm-up; decay_fraction of the run decays linearly to 0.
    sparsity_warmup_steps: ramp the L1 / L0 coefficient linearly from 0 (ReLU and JumpReLU).
    dead_after_tokens: a latent that has not fired for this many tokens counts as dead (feeds AuxK).
    checkpoint_dir / checkpoint_every: save (and resume from) a checkpoint every that many steps.
    """

    total_tokens: int
    batch_size: int = 4096
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 50
    decay_fraction: float = 0.2
    sparsity_warmup_steps: int = 0
    dead_after_tokens: int = 1_000_000
    log_every: int = 10
    checkpoint_dir: str | None = None
    checkpoint_every: int = 500
    seed: int = 0

    @property
    def total_steps(self) -> int:
        return self.total_tokens // self.batch_size


@dataclass
class TrainHistory(Result):
    """Logged metrics, one entry per logged step (explained variance is per batch)."""

    step: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    mse: list[float] = field(default_factory=list)
    explained_variance: list[float] = field(default_factory=list)
    l0: list[float] = field(default_factory=list)
    dead_fraction: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)


def lr_factor(step: int, cfg: SAETrainConfig) -> float:
    """Multiplier on cfg.lr: linear warm-up, constant, then linear decay to 0 over the last decay_fraction."""
    warm = min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
    decay_start = cfg.total_steps * (1 - cfg.decay_fraction)
    if cfg.decay_fraction > 0 and step >= decay_start:
        warm *= max(0.0, (cfg.total_steps - step) / max(cfg.total_steps - decay_start, 1))
    return warm


def _split(batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(batch, (tuple, list)):
        return batch[0], batch[1]
    return batch, None


def _rebatch(batches: Iterable[Batch], size: int) -> Iterator[Batch]:
    """Cut or join incoming batches into exactly ``size`` rows (the last partial batch is dropped)."""
    rest: Batch | None = None
    for batch in batches:
        if rest is not None:
            x0, t0 = _split(rest)
            x1, t1 = _split(batch)
            batch = torch.cat([x0, x1]) if t0 is None else (torch.cat([x0, x1]), torch.cat([t0, t1]))
        x, t = _split(batch)
        usable = len(x) - len(x) % size
        for s in range(0, usable, size):
            yield x[s:s + size] if t is None else (x[s:s + size], t[s:s + size])
        rest = None if usable == len(x) else (x[usable:] if t is None else (x[usable:], t[usable:]))


class SAETrainer:
    """Holds the SAE, Adam state, dead-latent counters and history; ``fit(batches)`` trains."""

    def __init__(self, sae: SAE, cfg: SAETrainConfig):
        self.sae, self.cfg = sae, cfg
        self.optimizer = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=cfg.betas, fused=True)
        self.step = 0
        # on the SAE's device: the dead mask indexes latents of activations on that device
        self.tokens_since_fired = torch.zeros(sae.cfg.d_sae, dtype=torch.long, device=sae.W_dec.device)
        self.history = TrainHistory()
        self.unit_decoder = sae.cfg.architecture in ("topk", "batchtopk", "jumprelu")
        if cfg.checkpoint_dir and (Path(cfg.checkpoint_dir) / "trainer.json").exists():
            self.load_checkpoint(cfg.checkpoint_dir)

    # ----- checkpoints -------------------------------------------------------------------------------
    def save_checkpoint(self, path: str | Path) -> None:
        """SAE (SAELens layout), optimiser state and trainer state, written atomically."""
        path = Path(path)
        self.sae.save(path / "sae")
        tmp = path / f".optimizer.pt.tmp{os.getpid()}"
        torch.save({"optimizer": self.optimizer.state_dict(), "tokens_since_fired": self.tokens_since_fired,
                    "state": {k: v for k, v in self.sae.state_dict().items()}}, tmp)
        os.replace(tmp, path / "optimizer.pt")
        tmp = path / f".trainer.json.tmp{os.getpid()}"
        tmp.write_text(json.dumps({"step": self.step, "history": asdict(self.history),
                                   "train_config": asdict(self.cfg)}))
        os.replace(tmp, path / "trainer.json")

    def load_checkpoint(self, path: str | Path) -> None:
        path = Path(path)
        meta = json.loads((path / "trainer.json").read_text())
        blob = torch.load(path / "optimizer.pt", weights_only=True, map_location=self.sae.W_dec.device)
        self.sae.load_state_dict(blob["state"])
        self.optimizer.load_state_dict(blob["optimizer"])
        self.tokens_since_fired = blob["tokens_since_fired"].to(self.sae.W_dec.device)
        self.step = meta["step"]
        self.history = TrainHistory(**meta["history"])

    # ----- training ----------------------------------------------------------------------------------
    @torch.no_grad()
    def _data_init(self, x: torch.Tensor, target: torch.Tensor | None) -> None:
        """Data-dependent start: b_dec at the data mean (the best constant); for TopK / BatchTopK also
        W_enc scaled so the first batch's reconstructions have the centred data's typical norm."""
        sae = self.sae
        tgt = x if target is None else target
        sae.b_dec.copy_(tgt.mean(0))
        if self.unit_decoder:
            sae.set_decoder_norm_to_unit()
        if sae.cfg.architecture not in ("topk", "batchtopk"):
            return
        centred = (tgt - sae.b_dec).norm(dim=-1).median()
        produced = (sae(x) - sae.b_dec).norm(dim=-1).median()
        if produced > 0:
            sae.W_enc.mul_(centred / produced)

    def train_step(self, x: torch.Tensor, target: torch.Tensor | None = None) -> dict[str, float]:
        """One optimiser step on x [batch, d_in] (target [batch, d_out] for transcoders)."""
        sae, cfg = self.sae, self.cfg
        if self.step == 0:
            self._data_init(x, target)
        x, target = self._local(x), None if target is None else self._local(target)
        factor = lr_factor(self.step, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr * factor
        dead = self.tokens_since_fired >= cfg.dead_after_tokens
        scale = min(1.0, (self.step + 1) / cfg.sparsity_warmup_steps) if cfg.sparsity_warmup_steps else 1.0
        out = sae.training_loss(x, target, dead=dead, sparsity_scale=scale)
        self.optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        self._reduce_grads()
        if self.unit_decoder:
            sae.remove_parallel_decoder_grad()
        self.optimizer.step()
        if self.unit_decoder:
            sae.set_decoder_norm_to_unit()
        fired = self._reduce_sum(out["acts_count"]) > 0
        # torch.where, not a masked assignment: no host sync on a GPU
        self.tokens_since_fired = torch.where(fired, 0, self.tokens_since_fired + len(x) * self._world())
        self.step += 1
        tgt = x if target is None else target
        variance = (tgt - tgt.mean(0)).pow(2).sum(-1).mean()
        loss, mse, l0, variance = (self._reduce_sum(torch.stack(
            [out["loss"].detach(), out["mse"], out["l0"], variance])) / self._world()).tolist()
        return {"loss": loss, "mse": mse, "explained_variance": 1 - mse / variance, "l0": l0,
                "dead_fraction": float(dead.float().mean()), "lr": cfg.lr * factor}

    # ----- data-parallel seams (identities here; uncover.features.distributed overrides them) --------
    def _local(self, t: torch.Tensor) -> torch.Tensor:
        """This process's rows of a batch [batch, d] (all of them in one process)."""
        return t

    def _world(self) -> int:
        return 1

    def _reduce_grads(self) -> None:
        """Average gradients over processes (nothing to do in one process)."""

    def _reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum of ``t`` over processes (``t`` itself in one process)."""
        return t

    def fit(self, batches: Iterable[Batch], progress: Progress = no_progress) -> TrainHistory:
        """Train until cfg.total_tokens; ``batches`` yields x or (x, target) tensors of any row count.

        After resuming from a checkpoint, the batches already consumed are skipped, so pass the same
        (deterministic) batch stream again.
        """
        cfg = self.cfg
        if cfg.total_steps < 1:
            raise UncoverError(f"total_tokens {cfg.total_tokens} is less than one batch of {cfg.batch_size}")
        stream = _rebatch(batches, cfg.batch_size)
        for _ in range(self.step):
            next(stream, None)
        last = None
        steps = progress(range(self.step, cfg.total_steps), "training SAE")
        for _ in steps:
            batch = next(stream, None)
            if batch is None:
                break
            x, target = _split(batch)
            last = self.train_step(x, target)
            if self.step % cfg.log_every == 0 or self.step == cfg.total_steps:
                self._log(last)
                show_status(steps, f"L0 {last['l0']:.1f}  EV {last['explained_variance']:.3f}  "
                                   f"dead {last['dead_fraction']:.1%}")
            if cfg.checkpoint_dir and self.step % cfg.checkpoint_every == 0:
                self.save_checkpoint(cfg.checkpoint_dir)
        if self.step < cfg.total_steps and last is None and self.step == 0:
            raise UncoverError("the batch stream was empty; harvest more tokens")
        if cfg.checkpoint_dir:
            self.save_checkpoint(cfg.checkpoint_dir)
        return self.history

    def _log(self, m: dict[str, float]) -> None:
        h = self.history
        h.step.append(self.step)
        h.tokens.append(self.step * self.cfg.batch_size)
        for key in ("loss", "mse", "explained_variance", "l0", "dead_fraction", "lr"):
            getattr(h, key).append(m[key])


def train_sae(sae: SAE, batches: Iterable[Batch], cfg: SAETrainConfig,
              progress: Progress = no_progress) -> TrainHistory:
    """Train ``sae`` in place on ``batches`` (x or (x, target) tensors); resumes from cfg.checkpoint_dir.
    Draws seeded by ``cfg.seed`` come from the global RNG, whose state is restored afterwards."""
    with seeded(cfg.seed):
        return SAETrainer(sae, cfg).fit(batches, progress=progress)


def lr_for_width(d_sae: int) -> float:
    """A learning rate that scales as 1/sqrt(width) (Gao et al. 2024): 2e-4 at 16,384 latents."""
    return 2e-4 / math.sqrt(d_sae / 2 ** 14)
