"""Iterative structured pruning with quality curves, one curve per importance measure.

At each step the units still present are scored on the calibration windows with the units removed so far
masked (so importance is re-measured on the model as it is), and the lowest-scoring units up to the next
share are removed. After each step the masked model is evaluated on:

- ``perplexity``: exp of the mean next-token loss on held-out corpus windows (disjoint from calibration);
- ``ioi``: the IOI logit difference (nats) on clean prompts (``uncover.data.ioi``);
- ``facts``: the share of facts the unpruned model gets right (greedy next token) that it still gets right.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from uncover.applications.pruning.importance import METHODS, importance
from uncover.applications.pruning.plan import PruningPlan, check_share, n_units, select
from uncover.core.results import Progress, Result, no_progress
from uncover.core.vocab import next_token_nll
from uncover.errors import UncoverError

if TYPE_CHECKING:
    from uncover.core.model import Model

MEASURES = ("perplexity", "ioi", "facts")


@dataclass
class EvalSet:
    """Held-out windows [n, pos], an IOI task (or None) and known facts' prompts with answer ids."""

    heldout: torch.Tensor
    ioi: object | None = None
    fact_prompts: list[str] = field(default_factory=list)
    fact_answers: list[int] = field(default_factory=list)


def split_corpus(model: "Model", n_calibration: int, n_heldout: int, seq_len: int, seed: int = 0,
                 source=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint calibration and held-out corpus windows, [n, seq_len] each."""
    from uncover.data.corpus import corpus_tokens

    rows = corpus_tokens(model, n_calibration + n_heldout, seq_len, seed=seed, source=source)
    return rows[:n_calibration], rows[n_calibration:]


def eval_set(model: "Model", heldout: torch.Tensor, n_ioi: int = 16, n_facts: int = 48, seed: int = 0) -> EvalSet:
    """An EvalSet for ``model``: IOI prompts and up to ``n_facts`` facts the model knows (greedy)."""
    from uncover.data.facts import FACTS, attribute_token, known_facts
    from uncover.data.ioi import ioi_task

    task = ioi_task(model, n=n_ioi, seed=seed) if n_ioi else None
    facts = []
    if n_facts:
        step = max(1, len(FACTS) // (4 * n_facts))
        facts = known_facts(model, FACTS[::step])[:n_facts]
    return EvalSet(heldout, task, [f.prompt() for f in facts], [attribute_token(model, f) for f in facts])


@torch.no_grad()
def perplexity(model: "Model", tokens: torch.Tensor, hooks: Sequence = (), batch_size: int = 8) -> float:
    """exp(mean next-token loss) over windows [n, pos] (every predicted token counts equally)."""
    total, count = 0.0, 0
    with model.hooks(list(hooks)):
        for chunk in torch.split(tokens, batch_size):
            nll = next_token_nll(model, model(chunk, return_normed=True), chunk)  # no whole logits
            total += float(nll.double().sum())
            count += nll.numel()
    return float(torch.tensor(total / count).exp())


@torch.no_grad()
def evaluate(model: "Model", data: EvalSet, hooks: Sequence = (), batch_size: int = 8) -> dict[str, float]:
    """{"perplexity", "ioi", "facts"} of the model with ``hooks`` active (NaN where data are missing)."""
    out = {"perplexity": perplexity(model, data.heldout, hooks, batch_size), "ioi": float("nan"),
           "facts": float("nan")}
    with model.hooks(list(hooks)):
        if data.ioi is not None:
            t = data.ioi
            out["ioi"] = float(t.metric(model(t.clean, attention_mask=t.attention_mask, logits_to_keep=1)))
        if data.fact_prompts:
            tokens, mask = model.to_tokens(data.fact_prompts, return_mask=True)
            pred = model(tokens, attention_mask=mask, logits_to_keep=1)[:, -1].argmax(-1).cpu()
            out["facts"] = float((pred == torch.tensor(data.fact_answers)).float().mean())
    return out


@dataclass
class PruningCurves(Result):
    """values[method][measure]: one value per entry of ``shares`` (share of ``unit`` removed; 0 first).

    plans[method]: the plan after each share (the 0 share has the empty plan).
    """

    unit: str
    shares: list[float]
    values: dict[str, dict[str, list[float]]]
    plans: dict[str, list[PruningPlan]]

    def at(self, method: str, measure: str, share: float) -> float:
        """The value of ``measure`` for ``method`` at the recorded share closest to ``share``."""
        i = min(range(len(self.shares)), key=lambda j: abs(self.shares[j] - share))
        return self.values[method][measure][i]

    def best(self, measure: str, share: float, among: Sequence[str] | None = None) -> str:
        """The method with the best ``measure`` at ``share`` (lowest perplexity, highest ioi and facts)."""
        methods = [m for m in (among or self.values) if m in self.values]
        sign = 1.0 if measure == "perplexity" else -1.0
        return min(methods, key=lambda m: sign * self.at(m, measure, share))


def prune_iteratively(model: "Model", calibration: torch.Tensor, method: str, unit: str,
                      shares: Sequence[float], plan: PruningPlan | None = None, batch_size: int = 8,
                      seed: int = 0, on_step: Callable[[float, PruningPlan], None] | None = None) -> list[PruningPlan]:
    """The plans after removing each of the increasing ``shares`` of ``unit``, re-scoring at every step."""
    shares = [check_share(s, "each share") for s in shares]
    if shares != sorted(shares) or len(set(shares)) != len(shares):
        raise UncoverError(f"shares must increase strictly, got {shares}")
    n_layers, width = n_units(model, unit)
    plan = plan or PruningPlan.empty(model)
    plans = []
    for step, share in enumerate(shares):
        k = round(share * n_layers * width) - plan.count(unit)
        if k > 0:
            scores = importance(model, calibration, method, unit, plan=plan, batch_size=batch_size,
                                seed=seed + step).scores
            plan = plan.extended(unit, select(scores, k, plan.removed(unit)))
        plans.append(plan)
        if on_step is not None:
            on_step(share, plan)
    return plans


def pruning_curves(model: "Model", calibration: torch.Tensor, data: EvalSet, methods: Sequence[str] = METHODS,
                   unit: str = "heads", shares: Sequence[float] = (0.1, 0.2, 0.3), batch_size: int = 8,
                   seed: int = 0, progress: Progress = no_progress) -> PruningCurves:
    """Quality against share removed for each importance method (iterative pruning, see the module doc)."""
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise UncoverError(f"unknown importance methods {bad}; choose from {', '.join(METHODS)}")
    base = evaluate(model, data, batch_size=batch_size)
    values: dict[str, dict[str, list[float]]] = {}
    plans: dict[str, list[PruningPlan]] = {}
    for method in progress(list(methods), f"pruning {unit}"):
        steps = prune_iteratively(model, calibration, method, unit, shares, batch_size=batch_size, seed=seed)
        evals = [evaluate(model, data, p.hooks(), batch_size) for p in steps]
        values[method] = {k: [base[k]] + [e[k] for e in evals] for k in MEASURES}
        plans[method] = [PruningPlan.empty(model)] + steps
    return PruningCurves(unit, [0.0] + [float(s) for s in shares], values, plans)
