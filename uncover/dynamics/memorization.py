"""Memorisation vs generalisation with corrupted labels (Doshi et al. 2023, "To grok or not to grok").

An MLP learns modular addition while a fraction of its training labels are replaced by wrong ones. Each
hidden neuron's inverse participation ratio (IPR) over the Fourier spectrum of its input weights separates
generalising neurons (one frequency: IPR near 1) from memorising ones (spread spectrum: low IPR).
Pruning the lowest-IPR neurons removes memorisation: accuracy on the corrupted training labels falls
while test accuracy holds or rises. ``phase_diagram`` classifies runs over corruption x weight decay.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import torch

from uncover.core.results import Progress, Result, no_progress
from uncover.dynamics.data import modular_data
from uncover.dynamics.models import ModularMLP
from uncover.dynamics.progress import ipr, one_sided_power
from uncover.dynamics.tasks import ModularTask
from uncover.dynamics.trainer import TrainConfig, Trainer

PHASES = ("coexistence", "partial inversion", "full inversion", "memorisation", "forgetting")


@dataclass
class MemorizationConfig:
    p: int = 43
    train_frac: float = 0.5
    corrupt_frac: float = 0.2
    width: int = 256
    act_fn: str = "quadratic"  # Doshi et al.'s choice; it generalises far faster here than ReLU
    steps: int = 2000
    lr: float = 5e-3
    weight_decay: float = 1.0
    seed: int = 0
    eval_every: int = 100


@dataclass
class MemorizationResult(Result):
    config: dict[str, Any]
    curves: list[dict[str, float]]
    final: dict[str, float]
    neuron_ipr: list[float]
    pruning: list[dict[str, float]] = field(default_factory=list)  # one row per pruned fraction
    phase: str = ""

    def summary(self) -> dict[str, Any]:
        return asdict(self)


def neuron_ipr(model: ModularMLP, r: int = 2) -> torch.Tensor:
    """IPR [width] of each hidden neuron: the one-sided Fourier power of its a- and b-weights, summed."""
    wa, wb = model.neuron_input_weights()
    power = one_sided_power(wa.detach()) + one_sided_power(wb.detach())
    return ipr(power[:, 1:], r)  # the constant component carries no frequency


@torch.no_grad()
def evaluate_with_mask(model: ModularMLP, task: ModularTask, keep: torch.Tensor) -> dict[str, float]:
    """The task's metrics with hidden neurons where ``keep`` [width] is False removed: a copy of the model
    whose output weights from those neurons are zero (exactly a zero ablation of them; ``model`` is untouched)."""
    pruned = copy.deepcopy(model)
    pruned.fc_out.weight.mul_(keep.to(pruned.fc_out.weight))
    return task.evaluate(pruned)


def prune_by_ipr(model: ModularMLP, task: ModularTask, fractions: Iterable[float]) -> list[dict[str, float]]:
    """Zero the lowest-IPR neurons (each fraction of the width in turn) and re-evaluate."""
    scores = neuron_ipr(model)
    order = scores.argsort()  # lowest IPR first
    rows = []
    for frac in fractions:
        keep = torch.ones(len(scores), dtype=torch.bool)
        keep[order[: int(round(frac * len(scores)))]] = False
        rows.append({"pruned_frac": frac, "ipr_cut": float(scores[order[max(int(round(frac * len(scores))) - 1, 0)]]),
                     **evaluate_with_mask(model, task, keep)})
    return rows


def classify_phase(metrics: dict[str, float], threshold: float = 0.9) -> str:
    """Doshi et al.'s phases from final accuracies (``threshold`` marks 'high').

    coexistence: generalises and still fits the corrupted labels; partial / full inversion: generalises
    and predicts the *true* label on some / nearly all corrupted examples; memorisation: fits the training
    set but does not generalise; forgetting: fits neither.
    """
    test, train = metrics["test_acc"], metrics["train_acc"]
    mem, true = metrics.get("corrupt_mem_acc", 0.0), metrics.get("corrupt_true_acc", 0.0)
    if test >= threshold:
        if mem >= 0.5:
            return "coexistence"
        return "full inversion" if true >= threshold else "partial inversion"
    return "memorisation" if train >= threshold else "forgetting"


def run_memorization(cfg: MemorizationConfig, prune_fractions: Iterable[float] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6),
                     progress: Progress = no_progress) -> MemorizationResult:
    data = modular_data(cfg.p, "add", cfg.train_frac, seed=cfg.seed, corrupt_frac=cfg.corrupt_frac)
    task = ModularTask(data)
    model = ModularMLP(cfg.p, width=cfg.width, act_fn=cfg.act_fn, seed=cfg.seed)
    train = TrainConfig(steps=cfg.steps, lr=cfg.lr, weight_decay=cfg.weight_decay, eval_every=cfg.eval_every,
                        checkpoints="none", seed=cfg.seed)
    result = Trainer(model, task, train, progress=progress).fit()
    final = result.metrics[-1]
    pruning = prune_by_ipr(model, task, prune_fractions) if cfg.corrupt_frac > 0 else []
    return MemorizationResult(asdict(cfg), result.metrics, final, neuron_ipr(model).tolist(), pruning,
                              classify_phase(final))


def phase_diagram(corrupt_fracs: list[float], weight_decays: list[float], base: MemorizationConfig | None = None,
                  progress: Progress = no_progress) -> list[dict[str, Any]]:
    """One run per (corruption fraction, weight decay): final metrics, mean IPR and the phase."""
    base = base or MemorizationConfig()
    rows = []
    grid = [(c, wd) for c in corrupt_fracs for wd in weight_decays]
    for corrupt, wd in progress(grid, "phase diagram"):
        cfg = MemorizationConfig(**{**asdict(base), "corrupt_frac": corrupt, "weight_decay": wd})
        res = run_memorization(cfg, prune_fractions=())
        rows.append({"corrupt_frac": corrupt, "weight_decay": wd, "phase": res.phase,
                     "mean_ipr": sum(res.neuron_ipr) / len(res.neuron_ipr), **res.final})
    return rows
