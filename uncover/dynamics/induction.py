"""The induction-head phase change (Olsson et al. 2022), reproduced on a two-layer attention-only model.

Training data are random token sequences ending in a repeated segment whose length varies per sequence,
so only in-context copying by content (not by position) lowers the loss on the repeat. Over training we track the in-context-learning (ICL) score (mean loss
over the last quarter of positions minus the mean over the first quarter) and, per head, the previous-token
score (mean attention from position i to i-1) and the induction score (mean attention from a token in the
repeat to the token just after its first occurrence). The phase change is where the ICL score falls
fastest; it coincides with the steepest rise of the best induction score.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from uncover.core.results import Progress, Result, no_progress
from uncover.components.heads import attention_patterns, diagonal_score
from uncover.dynamics.models import ToyConfig, ToyTransformer, as_model
from uncover.dynamics.tasks import InductionTask
from uncover.dynamics.trainer import TrainConfig, Trainer


@torch.no_grad()
def per_position_loss(model: ToyTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """Next-token loss at each position, averaged over the batch: tokens [batch, pos] -> [pos - 1]."""
    logits = as_model(model)(tokens)[:, :-1]
    losses = F.cross_entropy(logits.transpose(1, 2), tokens[:, 1:], reduction="none")  # [batch, pos-1]
    return losses.mean(0)


def icl_score(losses: torch.Tensor) -> float:
    """Mean loss over the last quarter of positions minus the mean over the first quarter (skipping the
    first prediction, which has no context). Negative when later tokens are predicted better."""
    n = len(losses)
    q = max(n // 4, 1)
    return float(losses[-q:].mean() - losses[1 : 1 + q].mean())


@torch.no_grad()
def head_scores(model: ToyTransformer, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Previous-token and induction scores per head, each [n_layers, n_heads], with the head-score
    mechanism of ``uncover.components.heads`` on the model's standard ``hook_pattern`` sites.

    tokens: [batch, pos] from ``repeated_sequences`` (BOS at 0, then a body repeating with period
    pos // 2). Previous-token: mean pattern[q, q-1] over q >= 1. Induction:
    mean pattern[q, q - period + 1] over queries q in the repeat (q >= period + 1).
    """
    pattern = attention_patterns(as_model(model), tokens)  # [layer, batch, head, query, key]
    pos = tokens.shape[1]
    period = pos // 2
    prev = diagonal_score(pattern, torch.arange(1, pos), 1)
    induction = diagonal_score(pattern, torch.arange(period + 1, pos), period - 1)
    return prev, induction


def steepest_change(steps: list[int], values: list[float], rising: bool) -> int | None:
    """The step at the middle of the interval where ``values`` change fastest (per step) in one direction."""
    if len(steps) < 2:
        return None
    slopes = [(values[i + 1] - values[i]) / (steps[i + 1] - steps[i]) for i in range(len(steps) - 1)]
    i = max(range(len(slopes)), key=lambda j: slopes[j] if rising else -slopes[j])
    return (steps[i] + steps[i + 1]) // 2


@dataclass
class InductionConfig:
    d_vocab: int = 64
    seq_len: int = 32
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    layer_norm: bool = False  # without LayerNorm the classic circuit forms quickly here (prev-token L0, induction L1)
    steps: int = 800
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.01
    eval_every: int = 25
    seed: int = 0

    def model_config(self) -> ToyConfig:
        return ToyConfig(d_vocab=self.d_vocab, n_ctx=self.seq_len, d_model=self.d_model, n_heads=self.n_heads,
                         d_head=self.d_model // self.n_heads, d_mlp=0, n_layers=self.n_layers,
                         layer_norm=self.layer_norm)


@dataclass
class InductionResult(Result):
    config: dict[str, Any]
    curves: list[dict[str, Any]]  # step, loss, icl_score, best prev-token / induction scores, per-head lists
    icl_change_step: int | None  # steepest fall of the ICL score
    induction_change_step: int | None  # steepest rise of the best induction score
    final_prev_token_scores: list[list[float]]  # [n_layers][n_heads]
    final_induction_scores: list[list[float]]

    def summary(self) -> dict[str, Any]:
        return asdict(self)


def run_induction(cfg: InductionConfig, progress: Progress = no_progress,
                  model: ToyTransformer | None = None) -> InductionResult:
    """Train the attention-only model and track the ICL and head scores every ``eval_every`` steps."""
    model = model or ToyTransformer(cfg.model_config(), seed=cfg.seed)
    task = InductionTask(cfg.d_vocab, cfg.seq_len, seed=cfg.seed)
    train = TrainConfig(steps=cfg.steps, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99),
                        warmup_steps=50, batch_size=cfg.batch_size, eval_every=cfg.eval_every, checkpoints="none",
                        seed=cfg.seed)
    result = Trainer(model, task, train, progress=progress).fit()
    steps = [r["step"] for r in result.metrics]
    icl = [r["icl_score"] for r in result.metrics]
    ind = [r["induction_score"] for r in result.metrics]
    prev, induction = head_scores(model, task.eval_tokens)
    return InductionResult(asdict(cfg), result.metrics, steepest_change(steps, icl, rising=False),
                           steepest_change(steps, ind, rising=True), prev.tolist(), induction.tolist())
