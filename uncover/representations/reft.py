"""Representation fine-tuning: learn a small intervention on hidden states, with the model frozen.

* LoReFT (Wu 2024): ``phi(h) = h + R^T (W h + b - R h)``, R [rank, d_model] with orthonormal rows
  (kept orthonormal by torch's orthogonal parametrisation), W [rank, d_model], b [rank].
* RED (Wu 2024, representation editing): ``phi(h) = scale * h + bias``, scale initialised to ones.

A ``Reft`` holds one intervention per layer and applies it as a hook on ``blocks.{l}.hook_resid_post``
at chosen prompt positions (negative = counted from the end; prompts are left-padded). In generation
only the prompt pass is edited.

    >>> reft = Reft(model.cfg.d_model, layers=[12], kind="loreft", rank=4)
    >>> train_reft(model, reft, prompts, answers, steps=100)
    >>> model.generate("Q: hot\\nA:", fwd_hooks=reft.hooks())
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import torch
from torch import nn
from torch.nn.utils.parametrizations import orthogonal

from uncover.core.hooks import HookPoint
from uncover.core.results import Progress, no_progress
from uncover.core.results import Result
from uncover.core.scoped import frozen, seeded
from uncover.data.icl import icl_task
from uncover.errors import UncoverError

if TYPE_CHECKING:
    from uncover.core.model import Model

KINDS = ("loreft", "red")


class LoReFT(nn.Module):
    """h + R^T (W h + b - R h) on the last axis of h [..., d_model]."""

    def __init__(self, d_model: int, rank: int):
        super().__init__()
        if not 1 <= rank <= d_model:
            raise UncoverError(f"rank must be between 1 and d_model={d_model}, got {rank}")
        self.rotate = orthogonal(nn.Linear(d_model, rank, bias=False))
        self.source = nn.Linear(d_model, rank)

    @property
    def R(self) -> torch.Tensor:
        """[rank, d_model] with orthonormal rows."""
        return self.rotate.weight

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + (self.source(h) - self.rotate(h)) @ self.R


class RED(nn.Module):
    """scale * h + bias on the last axis of h [..., d_model]."""

    def __init__(self, d_model: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.scale * h + self.bias


class Reft(nn.Module, Result):
    """Interventions at ``layers`` on the residual stream, at prompt ``positions`` (default the last)."""

    def __init__(self, d_model: int, layers: Sequence[int], kind: str = "loreft", rank: int = 4,
                 positions: Sequence[int] = (-1,), seed: int = 0):
        super().__init__()
        if kind not in KINDS:
            raise UncoverError(f"unknown ReFT kind {kind!r}; choose from {KINDS}")
        if not layers:
            raise UncoverError("pass at least one layer to intervene on")
        self.d_model, self.layers, self.kind, self.rank = d_model, list(layers), kind, rank
        self.positions = list(positions)
        with seeded(seed):
            self.edits = nn.ModuleDict({str(l): LoReFT(d_model, rank) if kind == "loreft" else RED(d_model)
                                        for l in self.layers})

    @property
    def n_parameters(self) -> int:
        """Trainable parameters (for LoReFT, R counts as its rank x d_model entries)."""
        per = 2 * self.rank * self.d_model + self.rank if self.kind == "loreft" else 2 * self.d_model
        return per * len(self.layers)

    def _hook(self, edit: nn.Module) -> Callable:
        def fn(t: torch.Tensor, hook: HookPoint) -> torch.Tensor | None:
            if hook.ctx.get("prompt_done") and t.shape[1] == 1:
                return None  # a generated token: ReFT edits the prompt only
            hook.ctx["prompt_done"] = True
            index = torch.tensor(self.positions, device=t.device) % t.shape[1]
            out = t.clone()
            out[:, index] = edit(t[:, index].float()).to(t.dtype)
            return out

        return fn

    def hooks(self) -> list:
        """Hooks for ``model.hooks`` / ``model.generate(fwd_hooks=...)``."""
        return [(f"blocks.{l}.hook_resid_post", self._hook(self.edits[str(l)])) for l in self.layers]

    def to_fields(self) -> dict:
        return {"d_model": self.d_model, "layers": self.layers, "kind": self.kind, "rank": self.rank,
                "positions": self.positions, "state": dict(self.state_dict())}

    @classmethod
    def from_fields(cls, fields: dict) -> "Reft":
        state = fields.pop("state")
        reft = cls(**fields)
        reft.load_state_dict(state)
        return reft


def lora_parameter_count(model: "Model", rank: int, layers: Sequence[int] | None = None) -> int:
    """Parameters of LoRA with this rank on the query and value projections of ``layers`` (default all,
    the usual LoRA setting): rank * (d_in + d_out) per projection."""
    cfg = model.cfg
    layers = range(cfg.n_layers) if layers is None else layers
    q_out, v_out = cfg.n_heads * cfg.d_head, cfg.n_kv_heads * cfg.d_head
    return sum(rank * ((cfg.d_model + q_out) + (cfg.d_model + v_out)) for _ in layers)


def _answer_ids(model: "Model", answers: Sequence[str]) -> torch.Tensor:
    return torch.tensor([model.tokenizer.encode(" " + a, add_special_tokens=False)[0] for a in answers])


def train_reft(model: "Model", reft: Reft, prompts: Sequence[str], answers: Sequence[str], steps: int = 100,
               lr: float = 5e-3, weight_decay: float = 0.0,
               progress: Progress = no_progress) -> list[float]:
    """Train ``reft`` (model frozen) so each prompt's next token is the first token of ``" " + answer``;
    full-batch AdamW. Returns the loss (nats) at each step."""
    if len(prompts) != len(answers) or not prompts:
        raise UncoverError(f"need one answer per prompt; got {len(prompts)} prompts and {len(answers)} answers")
    tokens, mask = model.to_tokens(list(prompts), return_mask=True)
    targets = _answer_ids(model, answers).to(model.device)
    reft.to(model.device)
    opt = torch.optim.AdamW(reft.parameters(), lr=lr, weight_decay=weight_decay)
    losses = []
    with torch.enable_grad(), frozen(model.hf):  # the caller's requires_grad flags come back on exit
        for _ in progress(range(steps), f"training {reft.kind}"):
            logits = model.run_with_hooks(tokens, reft.hooks(), attention_mask=mask)
            loss = nn.functional.cross_entropy(logits[:, -1].float(), targets)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    return losses


@torch.no_grad()
def reft_accuracy(model: "Model", prompts: Sequence[str], answers: Sequence[str], reft: Reft | None = None) -> float:
    """Fraction of prompts whose greedy next token is the answer's first token (with ``reft`` if given)."""
    tokens, mask = model.to_tokens(list(prompts), return_mask=True)
    logits = model.run_with_hooks(tokens, reft.hooks() if reft is not None else [], attention_mask=mask)
    return float((logits[:, -1].argmax(-1).cpu() == _answer_ids(model, answers)).float().mean())


@dataclass
class ReftResult(Result):
    """Held-out accuracy before/after, the intervention's and rank-matched LoRA's parameter counts."""

    kind: str
    task: str
    accuracy_before: float
    accuracy_after: float
    train_accuracy_after: float
    n_parameters: int
    lora_parameters: int
    losses: list[float] = field(default_factory=list)
    reft: Reft | None = None


def reft_experiment(model: "Model", task_name: str = "antonyms", kind: str = "loreft", layer: int | None = None,
                    rank: int = 4, steps: int = 30, lr: float = 5e-3, seed: int = 0,
                    progress: Progress = no_progress) -> ReftResult:
    """Train on zero-shot prompts of half a task's pairs; score on the other half."""
    train, test = icl_task(task_name).split(0.5, seed)
    layer = 2 * model.cfg.n_layers // 5 if layer is None else layer
    reft = Reft(model.cfg.d_model, [layer], kind, rank, seed=seed)
    tr, te = train.zero_shot(), test.zero_shot()
    before = reft_accuracy(model, [p.text for p in te], [p.answer for p in te])
    losses = train_reft(model, reft, [p.text for p in tr], [p.answer for p in tr], steps, lr, progress=progress)
    after = reft_accuracy(model, [p.text for p in te], [p.answer for p in te], reft)
    train_after = reft_accuracy(model, [p.text for p in tr], [p.answer for p in tr], reft)
    return ReftResult(kind, task_name, before, after, train_after, reft.n_parameters,
                      lora_parameter_count(model, rank), losses, reft)
