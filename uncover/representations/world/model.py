"""Othello-GPT (Li et al. 2022): a toy transformer over move tokens, trained to predict the next legal move.

The model is an ``uncover.dynamics`` ``ToyTransformer`` (so ``uc.load(model)`` gives it the standard hook
names) trained by the dynamics ``Trainer`` (checkpoints, exact resume, JSONL metrics, progress). Input:
the moves of a game as tokens [batch, T-1] (T = S*S - 4 playable squares; ``pad_token`` after the end);
output at position i: logits [T] over the next move, i.e. a move in the state after moves 0..i.

Metrics on held-out games, over positions where a move follows: ``legal_acc``, the share of top-1
predictions that are legal, and ``legal_f1``, the F1 of the set of moves given probability above
``F1_THRESHOLD`` against the legal set.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from uncover.core.results import Progress, no_progress
from uncover.data.othello import Games, pad_token, random_games
from uncover.dynamics.models import ToyConfig, ToyTransformer
from uncover.dynamics.trainer import TrainConfig, Trainer, load_checkpoint, resolve_device
from uncover.errors import UncoverError

F1_THRESHOLD = 0.01  # a move is "predicted" when the model gives it at least this probability


@dataclass
class OthelloConfig:
    """An Othello-GPT run: board size, model shape, training data and schedule.

    n_games: the training pool (random games, drawn once); batches sample games from it.
    """

    size: int = 6
    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int = 512
    n_games: int = 40_000
    n_eval_games: int = 500
    steps: int = 3000
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    lr_decay: str = "cosine"  # "cosine": after warm-up, down to min_lr_frac * lr at the last step; "none"
    min_lr_frac: float = 0.05
    eval_every: int = 250
    checkpoints: str = "log"
    seed: int = 0
    device: str = "auto"
    stop_at: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.lr_decay not in ("cosine", "none"):
            raise UncoverError(f"lr_decay={self.lr_decay!r}; use 'cosine' or 'none'")
        if self.d_model % self.n_heads:
            raise UncoverError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")

    @property
    def n_moves(self) -> int:
        return self.size * self.size - 4

    def model_config(self) -> ToyConfig:
        return ToyConfig(d_vocab=self.n_moves + 1, d_vocab_out=self.n_moves, n_ctx=self.n_moves - 1,
                         d_model=self.d_model, n_heads=self.n_heads, d_head=self.d_model // self.n_heads,
                         d_mlp=self.d_mlp, n_layers=self.n_layers, act_fn="gelu", layer_norm=True)

    def lr_factor(self, step: int) -> float:
        """Learning-rate multiplier at ``step``: linear warm-up, then cosine decay (or constant)."""
        warm = max(self.warmup_steps, 1)
        if step < warm:
            return (step + 1) / warm
        if self.lr_decay == "none":
            return 1.0
        done = min((step - warm) / max(self.steps - warm, 1), 1.0)
        return self.min_lr_frac + (1 - self.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * done))

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=self.steps, lr=self.lr, weight_decay=self.weight_decay, betas=(0.9, 0.99),
                           warmup_steps=self.warmup_steps, batch_size=self.batch_size, eval_every=self.eval_every,
                           checkpoints=self.checkpoints, seed=self.seed, stop_at=dict(self.stop_at),
                           device=self.device)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "OthelloConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# Named configurations. "cpu": 6x6 in minutes on a CPU; "quick": the report's default (about a minute);
# "tiny": tests; "gpu": the papers' 8x8 model (8 layers, d_model 512, 8 heads) on millions of games.
CONFIGS: dict[str, OthelloConfig] = {
    "tiny": OthelloConfig(n_layers=2, d_model=32, n_heads=2, d_mlp=64, n_games=300, n_eval_games=60, steps=40,
                          batch_size=32, lr=3e-3, warmup_steps=5, eval_every=20, checkpoints="none"),
    "quick": OthelloConfig(n_layers=3, d_model=96, n_heads=4, d_mlp=384, n_games=4000, n_eval_games=200,
                           steps=300, batch_size=64, lr=3e-3, warmup_steps=30, eval_every=50, checkpoints="none"),
    "cpu": OthelloConfig(),
    "gpu": OthelloConfig(size=8, n_layers=8, d_model=512, n_heads=8, d_mlp=2048, n_games=2_000_000,
                         n_eval_games=2000, steps=60_000, batch_size=512, lr=5e-4, weight_decay=0.01,
                         warmup_steps=1000, eval_every=2000),
}


def named_config(name: str, **overrides: Any) -> OthelloConfig:
    """A copy of ``CONFIGS[name]`` with fields replaced by ``overrides``."""
    if name not in CONFIGS:
        raise UncoverError(f"unknown Othello configuration {name!r}; choose one of {sorted(CONFIGS)}")
    return OthelloConfig.from_dict({**asdict(CONFIGS[name]), **overrides})


def next_move_logits(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Logits [batch, T-1, T] for the move after each of the first T-1 moves of ``tokens`` [batch, T]."""
    return model(tokens[:, :-1]).logits


def legal_metrics(logits: torch.Tensor, legal: torch.Tensor, valid: torch.Tensor) -> dict[str, float]:
    """Top-1 legal share and legal-set F1 over the ``valid`` positions.

    logits [..., V]; legal [..., V] bool (the legal moves at each position); valid [...] bool.
    """
    logits, legal = logits[valid], legal[valid]
    if not len(logits):
        raise UncoverError("no position to score: every position is past the end of its game")
    top1 = legal.gather(-1, logits.argmax(-1, keepdim=True))[:, 0]
    predicted = logits.softmax(-1) >= F1_THRESHOLD
    hit = (predicted & legal).sum(-1).float()
    f1 = 2 * hit / (predicted.sum(-1) + legal.sum(-1)).float()
    return {"legal_acc": float(top1.float().mean()), "legal_f1": float(f1.mean())}


def position_targets(games: Games) -> tuple[torch.Tensor, torch.Tensor]:
    """(legal [n, T-1, T] bool, valid [n, T-1] bool) for the predictions after moves 0..T-2.

    Position i predicts a move in state i+1; it counts when move i was played and someone is to move.
    """
    legal = games.legal_tokens()[:, 1:-1]
    valid = (games.moves[:, :-1] >= 0) & (games.to_move[:, 1:-1] != 0)
    return legal, valid


def training_tokens(cfg: OthelloConfig, device: torch.device | str = "cpu", chunk: int = 50_000) -> torch.Tensor:
    """The training pool's tokens [n_games, T], generated on ``device`` (a GPU makes millions of games
    quickly) in chunks of ``chunk`` games, each chunk seeded from ``cfg.seed``."""
    parts = [random_games(min(chunk, cfg.n_games - start), cfg.size, seed=cfg.seed + i, device=device,
                          record=False).tokens for i, start in enumerate(range(0, cfg.n_games, chunk))]
    return torch.cat(parts)


class OthelloTask:
    """Next-move prediction on a pool of random games; evaluation on held-out games (the trainer's Task)."""

    def __init__(self, cfg: OthelloConfig, device: torch.device | str = "cpu"):
        self.cfg = cfg
        self.train_tokens = training_tokens(cfg, device)
        self.eval_games = random_games(cfg.n_eval_games, cfg.size, seed=cfg.seed + 1_000_003)
        self.eval_tokens = self.eval_games.tokens
        self.eval_legal, self.eval_valid = position_targets(self.eval_games)
        self.to(device)

    def to(self, device: torch.device | str) -> "OthelloTask":
        self.train_tokens = self.train_tokens.to(device)
        self.eval_tokens, self.eval_legal, self.eval_valid = (t.to(device) for t in
                                                               (self.eval_tokens, self.eval_legal, self.eval_valid))
        return self

    def batch(self, step: int, batch_size: int | None, generator: torch.Generator) -> torch.Tensor:
        n = len(self.train_tokens)
        if batch_size is None or batch_size >= n:
            return self.train_tokens
        rows = torch.randint(0, n, (batch_size,), generator=generator).to(self.train_tokens.device)
        return self.train_tokens[rows]

    def loss(self, model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        logits = next_move_logits(model, tokens)
        targets = tokens[:, 1:].masked_fill(tokens[:, 1:] == pad_token(self.cfg.size), -100)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        rows = []
        for start in range(0, len(self.eval_tokens), 256):
            chunk = slice(start, start + 256)
            logits = next_move_logits(model, self.eval_tokens[chunk])
            rows.append((logits, self.eval_legal[chunk], self.eval_valid[chunk]))
        logits, legal, valid = (torch.cat(x) for x in zip(*rows))
        return {"loss": float(self.loss(model, self.eval_tokens)), **legal_metrics(logits, legal, valid)}


@dataclass
class OthelloRun:
    """A trained Othello-GPT: the model, its config, metric rows (one per evaluation) and timings."""

    model: ToyTransformer
    config: OthelloConfig
    metrics: list[dict[str, float]]
    train_seconds: float
    wall_seconds: float
    cpu_seconds: float
    out_dir: Path | None = None

    @property
    def final(self) -> dict[str, float]:
        return self.metrics[-1]

    def summary(self) -> dict[str, Any]:
        """JSON-able: config, curves (step, seconds, loss, legal_acc, legal_f1) and timings (wall clock, the
        trainer's step time, and the process's CPU time, which a busy shared machine does not inflate)."""
        keep = ("step", "seconds", "loss", "legal_acc", "legal_f1")
        return {"config": asdict(self.config), "curves": [{k: r[k] for k in keep if k in r} for r in self.metrics],
                "train_seconds": self.train_seconds, "wall_seconds": self.wall_seconds, "cpu_seconds": self.cpu_seconds,
                "out_dir": str(self.out_dir) if self.out_dir else None}


def train_othello(cfg: OthelloConfig, out_dir: str | Path | None = None, progress: Progress = no_progress,
                  resume: bool = True) -> OthelloRun:
    """Train Othello-GPT with the dynamics Trainer; ``out_dir`` keeps metrics, checkpoints, resume state and
    ``othello_run.json`` (reload with :func:`load_run`)."""
    t0, c0 = time.perf_counter(), time.process_time()
    model = ToyTransformer(cfg.model_config(), seed=cfg.seed)
    task = OthelloTask(cfg, resolve_device(cfg.device))
    trainer = Trainer(model, task, cfg.train_config(), out_dir=out_dir, progress=progress)
    # the dynamics trainer warms up then holds the rate; this run decays it (the schedule is saved on resume)
    trainer.scheduler = torch.optim.lr_scheduler.LambdaLR(trainer.optimizer, cfg.lr_factor)
    result = trainer.fit(resume=resume)
    model = trainer.model.eval()
    run = OthelloRun(model, cfg, result.metrics, result.seconds, time.perf_counter() - t0,
                     time.process_time() - c0, Path(out_dir) if out_dir is not None else None)
    if out_dir is not None:
        _save_run(run, Path(out_dir))
    return run


def _save_run(run: OthelloRun, out: Path) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in run.model.state_dict().items()}, str(out / "model.safetensors"))
    summary = run.summary()
    if (out / "othello_run.json").exists():  # a resumed run: wall time adds up over sessions
        before = json.loads((out / "othello_run.json").read_text())
        if before.get("steps_done", 0) < run.metrics[-1]["step"]:
            summary["wall_seconds"] += before.get("wall_seconds", 0.0)
            summary["cpu_seconds"] += before.get("cpu_seconds", 0.0)
    summary["steps_done"] = run.metrics[-1]["step"]
    (out / "othello_run.json").write_text(json.dumps(summary, indent=1))


def load_run(path: str | Path, device: str = "cpu") -> OthelloRun:
    """A run saved by :func:`train_othello` (its ``othello_run.json`` and ``model.safetensors``)."""
    folder = Path(path)
    meta, weights = folder / "othello_run.json", folder / "model.safetensors"
    if not meta.is_file() or not weights.is_file():
        raise UncoverError(f"{folder} holds no trained Othello-GPT (othello_run.json + model.safetensors); "
                           f"train one with `uncover othello train --out {folder}`")
    data = json.loads(meta.read_text())
    cfg = OthelloConfig.from_dict(data["config"])
    model = load_checkpoint(ToyTransformer(cfg.model_config()), weights).to(device).eval()
    metrics = [dict(r) for r in data["curves"]]
    return OthelloRun(model, cfg, metrics, data["train_seconds"], data["wall_seconds"], data["cpu_seconds"], folder)


def default_run_dir(name: str = "cpu") -> Path:
    """Where ``uncover othello train --config NAME`` saves by default (and where the report looks)."""
    from uncover.core.loading import cache_root

    return cache_root() / "othello" / name
