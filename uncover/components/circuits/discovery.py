"""Automated circuit discovery: a score for every edge of the graph (``EdgeScores``).

- ``eap`` (edge attribution patching, Syed et al. 2023): ``(ablated_s - clean_s) . d metric / d input_r`` at
  the clean run, summed over prompts and positions; two forwards and one backward.
- ``eap-ig`` (Hanna et al. 2024): the same with the gradient averaged over ``steps`` points between the
  ablated and the clean run (midpoints ``(k + 0.5) / steps``). ``ig="inputs"`` interpolates the residual
  entering layer 0 (``steps`` forward + backward passes); ``ig="activations"`` interpolates each
  receiver's own input between its ablated and clean value, one group of receivers at a time
  (``steps`` passes per layer's attention, MLP and the logits); ``ig="clean-corrupted"`` averages the
  gradients at the two end points only.
- ``acdc`` (Conmy et al. 2023): receivers in reverse topological order, each incoming edge removed when
  the metric moves by less than ``tau``; run for a sweep of taus, an edge scores the largest tau at which
  it is kept (edges removed at every tau score the size of their own measured change, below the smallest
  tau), so
  ACDC ranks edges like the gradient methods do.

Scores are in the task metric's unit (nats of logit difference, or probability) for eap / eap-ig: the
estimated change of the metric when the edge alone is removed (negative: the edge helps the task).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import torch
from torch import Tensor

from uncover.components.circuits.graph import KINDS, Graph
from uncover.components.circuits.patching import EMBED, EdgePatcher, logits_hook
from uncover.core.results import Progress, Result, no_progress
from uncover.errors import UncoverError, closest

if TYPE_CHECKING:
    from uncover.core.model import Model
    from uncover.data.tasks import Task

METHODS = ("eap", "eap-ig", "acdc")
IG_VARIANTS = ("inputs", "activations", "clean-corrupted")
GROUP_COLUMNS = 96  # receivers per matrix product of the scores: wide enough for an efficient product


@dataclass
class EdgeScores(Result):
    """Per-edge scores of one discovery method on one task.

    scores: float32 [n_sources, n_receivers] (0 where no edge exists; see ``graph.allowed``); method,
    ablation, options: how they were computed; metric_clean / metric_ablated: the task metric of the model
    and of the fully ablated run; seconds: wall time of the discovery (ablation caches excluded).
    """

    n_layers: int
    n_heads: int
    parallel: bool
    mlp: bool
    scores: Tensor
    method: str
    ablation: str
    task: str
    metric_unit: str
    metric_clean: float
    metric_ablated: float
    options: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def graph(self) -> Graph:
        return Graph(self.n_layers, self.n_heads, self.parallel, self.mlp)

    def top(self, n: int = 10) -> list[tuple[str, float]]:
        """The ``n`` edges with the largest |score|, named ``source -> receiver``."""
        g = self.graph
        out = []
        for s, r, v in g.edges(self.scores):
            out.append((g.edge_name(s, r), v))
            if len(out) == n:
                break
        return out


def _receiver_blocks(graph: Graph, model: "Model") -> list[tuple[str, int, int, int]]:
    """(hook name, first receiver, receivers, sources read) of every receiver group, in receiver order."""
    H, blocks = graph.n_heads, []
    for l in range(graph.n_layers):
        k = graph.sources_before(l)
        blocks += [(f"blocks.{l}.hook_{kind}_input", graph.head_receiver(l, 0, kind), H, k) for kind in KINDS]
        if graph.mlp:
            blocks.append((f"blocks.{l}.hook_mlp_in", graph.mlp_receiver(l), 1, graph.sources_before(l, mlp=True)))
    return blocks + [(logits_hook(model), graph.logits_receiver, 1, graph.n_sources)]


def _receiver_names(graph: Graph, model: "Model") -> list[str]:
    return [name for name, *_ in _receiver_blocks(graph, model)]


def _scatter(patcher: EdgePatcher, grads: dict[str, Tensor], scores: Tensor, weight: float = 1.0) -> None:
    """Add ``(ablated - clean) . grad`` of each receiver in ``grads`` into ``scores`` [S, R] (in place): the
    gradients of consecutive receiver groups stacked [>= GROUP_COLUMNS receivers, b * p * d], one matrix
    product each with the differences of the sources the last of them reads."""
    diff = patcher.differences()  # [S, b * p * d]
    present = [b for b in _receiver_blocks(patcher.graph, patcher.model) if b[0] in grads]
    while present:
        group, cols = [], 0
        while present and cols < GROUP_COLUMNS:
            group.append(present.pop(0))
            cols += group[-1][2]
        stacked = torch.cat([grads[name].float().movedim(2, 0).reshape(n, -1) if n > 1 else
                             grads[name].float().reshape(1, -1) for name, _, n, _ in group])
        products = diff[: group[-1][3]] @ stacked.T  # [sources, receivers of the group]
        col = 0
        for _, first, n, k in group:
            scores[:k, first: first + n] += weight * products[:k, col: col + n]
            col += n


def _accumulate(total: dict[str, Tensor], grads: dict[str, Tensor]) -> None:
    """Add ``grads`` (one pass's, fresh tensors) into ``total`` in place: a new [b, p, ..., d] sum per pass
    would allocate (and page in) every receiver's gradient again, ~1 s per pass on smollm2 IOI."""
    owned = {t.untyped_storage().data_ptr() for t in total.values()}
    for name, g in grads.items():
        if name in total:
            total[name] += g
            continue
        g = g.float()
        total[name] = g.clone() if g.untyped_storage().data_ptr() in owned else g  # never two names on one storage
        owned.add(g.untyped_storage().data_ptr())


def _grads(patcher: EdgePatcher, names: Sequence[str], hooks: Sequence = (), **kwargs) -> dict[str, Tensor]:
    """Gradients of the task metric (mean over prompts) at ``names`` in a clean run with ``hooks``."""
    task = patcher.task
    _, _, grads = patcher.model.grad_cache(task.clean, task.metric, list(names), attention_mask=task.attention_mask,
                                           fwd_hooks=list(hooks), logits_to_keep=1, **kwargs)
    return {n: grads[n] for n in names}


def eap(patcher: EdgePatcher) -> Tensor:
    """EAP scores [S, R]: gradients at the clean run."""
    scores = torch.zeros(patcher.graph.n_sources, patcher.graph.n_receivers)
    _scatter(patcher, _grads(patcher, _receiver_names(patcher.graph, patcher.model)), scores)
    return scores


def eap_ig(patcher: EdgePatcher, steps: int = 5, ig: str = "inputs", progress: Progress = no_progress) -> Tensor:
    """EAP-IG scores [S, R] (see the module docstring for the three variants)."""
    if ig not in IG_VARIANTS:
        raise UncoverError(f"unknown EAP-IG variant {ig!r}; choose one of {', '.join(IG_VARIANTS)}")
    if steps < 1:
        raise UncoverError(f"steps must be >= 1, got {steps}")
    g = patcher.graph
    scores = torch.zeros(g.n_sources, g.n_receivers)
    names = _receiver_names(g, patcher.model)
    start = patcher.values[0] - patcher.clean[0]  # [b, p, d]: ablated minus clean layer-0 input
    if ig in ("inputs", "clean-corrupted"):
        alphas = [0.0, 1.0] if ig == "clean-corrupted" else [(k + 0.5) / steps for k in range(steps)]
        total: dict[str, Tensor] = {}
        for a in progress(alphas, "EAP-IG steps"):
            # alpha = distance from the ablated input: the input is clean + (1 - alpha) * (ablated - clean)
            shift = ((1 - a) * start).to(patcher.clean.dtype)
            hook = (EMBED, lambda t, hook, shift=shift: t + shift)
            _accumulate(total, _grads(patcher, names, [hook]))
        _scatter(patcher, total, scores, 1.0 / len(alphas))  # the scores are linear in the gradients
        return scores
    return _eap_ig_activations(patcher, steps, scores, progress)


def _eap_ig_activations(patcher: EdgePatcher, steps: int, scores: Tensor, progress: Progress) -> Tensor:
    """Each receiver group's input interpolated between its ablated and clean value, one group at a time."""
    model, g, task = patcher.model, patcher.graph, patcher.task
    diff = patcher.values - patcher.clean  # [S, b, p, d]
    names = [f"blocks.{l}.hook_resid_pre" for l in range(g.n_layers)]
    with torch.no_grad():
        _, cache = model.run_with_cache(task.clean, names=names, attention_mask=task.attention_mask)
    groups: list[tuple[int, list[str], int]] = []  # (layer to start at, receiver names, sources they read)
    for l in range(g.n_layers):
        groups.append((l, [f"blocks.{l}.hook_{k}_input" for k in KINDS], g.sources_before(l)))
        if g.mlp:
            groups.append((l, [f"blocks.{l}.hook_mlp_in"], g.sources_before(l, mlp=True)))
    groups.append((g.n_layers - 1, [logits_hook(model)], g.n_sources))
    alphas = [(k + 0.5) / steps for k in range(steps)]
    for layer, group, k in progress(groups, "EAP-IG receivers"):
        shift_full = diff[:k].sum(0)  # the receiver's ablated input minus its clean input [b, p, d]
        total: dict[str, Tensor] = {}
        for a in alphas:
            def interpolate(t: Tensor, hook, a=a, shift=shift_full) -> Tensor:
                s = ((1 - a) * shift).to(t.dtype)
                new = t + (s.unsqueeze(2) if t.dim() == 4 else s)
                return new.detach().requires_grad_(True)
            resid = cache[f"blocks.{layer}.hook_resid_pre"]
            _accumulate(total, _grads(patcher, group, [(n, interpolate) for n in group], start_at_layer=layer,
                                      resid_pre=resid))
        _scatter(patcher, total, scores, 1.0 / steps)
    return scores


def acdc(patcher: EdgePatcher, taus: Sequence[float] = (0.001, 0.01, 0.03, 0.1), metric: str = "kl",
         progress: Progress = no_progress) -> tuple[Tensor, dict[float, Tensor], int]:
    """ACDC at each tau: (scores [S, R], {tau: kept edges bool [S, R]}, edges tested); see the module docstring."""
    if metric not in ("kl", "task"):
        raise UncoverError(f"ACDC metric must be 'kl' (to the model's output) or 'task', not {metric!r}")
    if not taus or any(t <= 0 for t in taus):
        raise UncoverError(f"taus must be positive thresholds, got {list(taus)}")
    g = patcher.graph
    full = patcher.metric(patcher.clean_logits)
    distance: Callable[[Tensor], float] = patcher.kl if metric == "kl" else (lambda lo: abs(patcher.metric(lo) - full))
    taus = sorted(taus, reverse=True)
    kept: dict[float, Tensor] = {}
    measured = torch.zeros(g.n_sources, g.n_receivers)
    tests = 0
    for tau in progress(taus, "ACDC taus"):
        keep, change, n = _acdc_once(patcher, tau, distance)
        kept[tau] = keep.bool() & g.allowed
        measured, tests = change, tests + n
    scores = torch.where(g.allowed, measured.abs().clamp(max=min(taus) * 0.999), torch.zeros(()))
    for tau in reversed(taus):  # smallest first, so a larger tau that keeps the edge overwrites
        scores = torch.where(kept[tau], torch.full_like(scores, tau), scores)
    return scores, kept, tests


def _acdc_once(patcher: EdgePatcher, tau: float, distance: Callable[[Tensor], float]) -> tuple[Tensor, Tensor, int]:
    """One ACDC pass: (keep mask [S, R] float, the distance change measured for each tested edge, how many
    edges were tested: those into nodes nothing reads any more are removed untested)."""
    g = patcher.graph
    keep = g.allowed.float().clone()
    change = torch.zeros(g.n_sources, g.n_receivers)
    current = distance(patcher.clean_logits)
    receivers = list(range(g.n_receivers - 1, -1, -1))
    node_of_source = {g.source_node(s): s for s in range(g.n_sources)}
    tests = 0
    for r in receivers:
        node = g.receiver_node(r)
        if node != "logits":
            s_node = node_of_source[node]
            if not bool(keep[s_node].any()):  # nothing reads this node any more: its inputs cannot matter
                keep[:, r] = 0
                continue
        for s in reversed(g.allowed[:, r].nonzero().flatten().tolist()):
            keep[s, r] = 0
            tests += 1
            new = distance(patcher.run([keep])[0])
            change[s, r] = new - current
            if new - current < tau:
                current = new
            else:
                keep[s, r] = 1
    return keep, change, tests


def discover(model: "Model", task: "Task", method: str = "eap-ig", ablation: str = "corrupt", steps: int = 5,
             ig: str = "inputs", taus: Sequence[float] = (0.001, 0.01, 0.03, 0.1), acdc_metric: str = "kl",
             patcher: EdgePatcher | None = None, progress: Progress = no_progress, **build) -> EdgeScores:
    """Score every edge of ``model``'s graph on ``task`` with ``method`` (eap, eap-ig, acdc).

    ablation: corrupt (default: the task's corrupted prompts), zero, mean, resample (see EdgePatcher.build;
    pass ``patcher`` to reuse its caches). Returns EdgeScores with scores [n_sources, n_receivers].
    """
    if method not in METHODS:
        hint = closest(method, METHODS)
        raise UncoverError(f"unknown circuit discovery method {method!r}; choose one of {', '.join(METHODS)}"
                           + (f" (did you mean {hint!r}?)" if hint else ""))
    patcher = patcher or EdgePatcher.build(model, task, ablation, **build)
    start = time.perf_counter()
    options: dict = {}
    if method == "eap":
        scores = eap(patcher)
    elif method == "eap-ig":
        scores, options = eap_ig(patcher, steps, ig, progress), {"steps": steps, "ig": ig}
    else:
        scores, kept, tests = acdc(patcher, taus, acdc_metric, progress)
        options = {"taus": sorted(taus, reverse=True), "metric": acdc_metric, "tests": tests,
                   "kept": {str(t): int(k.sum()) for t, k in kept.items()}}
    g = patcher.graph
    return EdgeScores(g.n_layers, g.n_heads, g.parallel, g.mlp, scores.float() * g.allowed, method,
                      patcher.ablation, task.name, task.metric_unit, patcher.metric(patcher.clean_logits),
                      patcher.metric(patcher.ablated_logits), options, time.perf_counter() - start)
