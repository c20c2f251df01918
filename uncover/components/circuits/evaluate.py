"""Circuits from edge scores, and how faithful they are.

- ``select``: the top-n edges (or those above a threshold), then dangling edges pruned; ``grow``: greedy
  growth from the logits (the best-scoring edge into a node already in the circuit). Edges rank by
  ``by="abs"`` (|score|, auto-circuit's convention: edges that matter either way) or ``by="signed"`` (the
  edges that help the task: the most negative scores, whose removal lowers the metric most; eap / eap-ig).
- ``prune_dangling``: keep an edge only on a path from the embedding to the logits through kept edges.
- ``faithfulness_curve``: faithfulness ``(m(circuit) - m(ablated)) / (m(model) - m(ablated))`` of the
  top-n circuits for a list of n, under the ablation the patcher states; the smallest circuit reaching a
  target faithfulness.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import torch
from torch import Tensor

from uncover.components.circuits.discovery import EdgeScores
from uncover.components.circuits.graph import Graph
from uncover.components.circuits.patching import EdgePatcher
from uncover.core.results import Progress, Result, no_progress
from uncover.errors import UncoverError

if TYPE_CHECKING:
    from uncover.core.model import Model
    from uncover.data.tasks import Task

TARGET = 0.8  # the faithfulness a circuit must reach (Must hold of the circuits issue; a convention)


def _receiver_node_index(g: Graph) -> Tensor:
    """For each receiver, the index of its node among the sources (heads and MLPs) or n_sources (logits)."""
    index = torch.empty(g.n_receivers, dtype=torch.long)
    source_of = {name: s for s, name in enumerate(g.source_names)}
    for r in range(g.n_receivers):
        node = g.receiver_node(r)
        index[r] = g.n_sources if node == "logits" else source_of[node]
    return index


def prune_dangling(g: Graph, keep: Tensor) -> Tensor:
    """``keep`` (bool [S, R]) without the edges that are not on an embedding -> logits path of kept edges."""
    keep = keep.bool() & g.allowed
    node = _receiver_node_index(g)
    into = [(node == s).nonzero().flatten() for s in range(g.n_sources)]
    reach = torch.zeros(g.n_sources + 1, dtype=torch.bool)
    reach[0] = True
    for s in range(1, g.n_sources):  # receivers of node s only read earlier sources: one pass in order
        reach[s] = bool((keep[:, into[s]] & reach[: g.n_sources, None]).any())
    useful = torch.zeros(g.n_sources + 1, dtype=torch.bool)
    useful[g.n_sources] = True
    for s in range(g.n_sources - 1, -1, -1):
        useful[s] = bool((keep[s] & useful[node]).any())
    return keep & reach[: g.n_sources, None] & useful[node][None, :]


RANKINGS = ("abs", "signed")


def _ranked(g: Graph, scores: Tensor, by: str = "abs") -> Tensor:
    """The key edges are ranked by (larger first); -inf where no edge exists."""
    if by not in RANKINGS:
        raise UncoverError(f"rank edges by 'abs' (|score|) or 'signed' (helpful edges first), not {by!r}")
    key = scores.float().abs() if by == "abs" else -scores.float()
    return torch.where(g.allowed, key, torch.full((), float("-inf")))


def select(g: Graph, scores: Tensor, top_n: int | None = None, threshold: float | None = None,
           prune: bool = True, by: str = "abs") -> Tensor:
    """The circuit (bool [S, R]) of the ``top_n`` best-ranked edges (``by``: see the module docstring), or
    those whose key (|score|, or -score) is >= ``threshold``; dangling edges pruned unless ``prune=False``."""
    g.check_scores(scores)
    if (top_n is None) == (threshold is None):
        raise UncoverError("pass exactly one of top_n (a number of edges) or threshold (a minimum key)")
    a = _ranked(g, scores, by)
    if top_n is not None:
        if top_n < 0:
            raise UncoverError(f"top_n must be >= 0, got {top_n}")
        keep = torch.zeros_like(g.allowed)
        idx = a.flatten().argsort(descending=True)[: min(top_n, g.n_edges)]
        keep.view(-1)[idx] = True
    else:
        keep = (a >= threshold) & g.allowed
    return prune_dangling(g, keep) if prune else keep


def grow(g: Graph, scores: Tensor, n_edges: int, by: str = "abs") -> Tensor:
    """Greedy growth from the logits: repeatedly add the best-ranked edge into a node already connected to
    the logits, until ``n_edges`` edges (bool [S, R]; then dangling edges pruned)."""
    g.check_scores(scores)
    a = _ranked(g, scores, by)
    node = _receiver_node_index(g)
    in_circuit = torch.zeros(g.n_sources + 1, dtype=torch.bool)
    in_circuit[g.n_sources] = True
    keep = torch.zeros_like(g.allowed)
    for _ in range(min(n_edges, g.n_edges)):
        open_ = in_circuit[node][None, :] & ~keep & g.allowed
        cand = torch.where(open_, a, torch.full((), float("-inf")))
        i = int(cand.flatten().argmax())
        if not bool(open_.view(-1)[i]):
            break
        s, r = divmod(i, g.n_receivers)
        keep[s, r] = True
        in_circuit[s] = True
    return prune_dangling(g, keep)


@dataclass
class FaithfulnessCurve(Result):
    """Faithfulness of the top-n circuits of one set of edge scores.

    requested: the n asked for; edges: edges left after pruning dangling ones; faithfulness, metric, kl
    (nats, model || circuit): per circuit; n_total: edges in the graph; ablation, method: as scored.
    """

    requested: list[int]
    edges: list[int]
    faithfulness: list[float]
    metric: list[float]
    kl: list[float]
    n_total: int
    metric_clean: float
    metric_ablated: float
    ablation: str
    method: str
    by: str = "abs"
    target: float = TARGET
    seconds_per_circuit: float = 0.0
    nodes: dict = field(default_factory=dict)  # str(requested) -> the circuit's nodes

    def smallest(self, target: float | None = None) -> int | None:
        """Index of the smallest circuit whose faithfulness reaches ``target`` (None if none does)."""
        t = self.target if target is None else target
        hits = [i for i, f in enumerate(self.faithfulness) if f >= t]
        return min(hits, key=lambda i: self.edges[i]) if hits else None


def default_counts(n_edges: int, points: int = 12) -> list[int]:
    """Log-spaced edge counts from 10 to all edges."""
    lo, hi = math.log10(10), math.log10(n_edges)
    counts = sorted({int(round(10 ** (lo + (hi - lo) * i / (points - 1)))) for i in range(points)})
    return [c for c in counts if c <= n_edges]


def circuit_nodes(g: Graph, keep: Tensor) -> list[str]:
    """The nodes (sources and the logits) that a circuit's kept edges touch, in model order."""
    node = _receiver_node_index(g)
    used = torch.zeros(g.n_sources + 1, dtype=torch.bool)
    used[: g.n_sources] |= keep.any(1)
    used[node[keep.any(0)]] = True
    return [(g.source_names + ["logits"])[i] for i in used.nonzero().flatten().tolist()]


def faithfulness_curve(model: "Model", task: "Task", scores: EdgeScores, counts: Sequence[int] | None = None,
                       patcher: EdgePatcher | None = None, how: str = "top", by: str = "abs",
                       progress: Progress = no_progress, **build) -> FaithfulnessCurve:
    """Faithfulness of the circuit of each size in ``counts`` (default: log-spaced 10 .. all edges), chosen
    from ``scores`` by ``how`` (top: the top-n edges; grow: greedy growth from the logits), edges ranked
    ``by`` abs or signed (see the module docstring; ACDC's scores are sizes: abs only)."""
    patcher = patcher or EdgePatcher.build(model, task, scores.ablation, **build)
    if patcher.ablation != scores.ablation:
        raise UncoverError(f"the scores were computed under {scores.ablation!r} ablation and the patcher ablates "
                           f"with {patcher.ablation!r}; evaluate under the ablation you scored with")
    if how not in ("top", "grow"):
        raise UncoverError(f"how must be 'top' or 'grow', not {how!r}")
    if by == "signed" and scores.method == "acdc":
        raise UncoverError("ACDC scores are the tau an edge survives, not a signed effect: rank them by='abs'")
    g = patcher.graph
    counts = list(counts) if counts is not None else default_counts(g.n_edges)
    if how == "top":
        pick = lambda n: select(g, scores.scores, top_n=n, by=by)  # noqa: E731
    else:
        pick = lambda n: grow(g, scores.scores, n, by=by)  # noqa: E731
    keeps = [pick(n) for n in counts]

    start = time.perf_counter()
    logits = patcher.run([k.float() for k in keeps], progress=progress)
    seconds = (time.perf_counter() - start) / max(len(keeps), 1)
    return FaithfulnessCurve(
        counts, [int(k.sum()) for k in keeps], [patcher.faithfulness(lo) for lo in logits],
        [patcher.metric(lo) for lo in logits], [patcher.kl(lo) for lo in logits], g.n_edges,
        patcher.metric(patcher.clean_logits), patcher.metric(patcher.ablated_logits), patcher.ablation,
        scores.method, by, TARGET, seconds, {str(n): circuit_nodes(g, k) for n, k in zip(counts, keeps)},
    )


def roc_auc(g: Graph, scores: Tensor, truth: Tensor) -> float:
    """Area under the ROC curve of |score| as a detector of the ``truth`` edges (bool [S, R]) among the real
    edges: the chance that a true edge outscores a false one (ties count half; Mann-Whitney)."""
    g.check_scores(scores)
    a = scores.float().abs()[g.allowed]
    t = truth.bool()[g.allowed]
    pos, neg = a[t], a[~t]
    if len(pos) == 0 or len(neg) == 0:
        raise UncoverError("ROC AUC needs both true and false edges among the graph's edges")
    greater = (pos[:, None] > neg[None, :]).float().mean()
    ties = (pos[:, None] == neg[None, :]).float().mean()
    return float(greater + 0.5 * ties)


@dataclass
class CircuitEval(Result):
    """One circuit evaluated: keep (bool [S, R]), its size, faithfulness, task metric and KL (nats, model ||
    circuit) under ``ablation``, and its nodes."""

    keep: Tensor
    n_edges: int
    n_total: int
    faithfulness: float
    metric: float
    kl: float
    metric_clean: float
    metric_ablated: float
    ablation: str
    nodes: list[str] = field(default_factory=list)


def evaluate(model: "Model", task: "Task", keep: Tensor, ablation: str = "corrupt", patcher: EdgePatcher | None = None,
             **build) -> CircuitEval:
    """Run the circuit ``keep`` (bool [S, R]: the edges kept; every other edge ablated) on ``task``."""
    patcher = patcher or EdgePatcher.build(model, task, ablation, **build)
    g = patcher.graph
    g.check_scores(keep, "keep")
    keep = keep.bool() & g.allowed
    logits = patcher.run([keep.float()])[0]
    return CircuitEval(keep, int(keep.sum()), g.n_edges, patcher.faithfulness(logits), patcher.metric(logits),
                       patcher.kl(logits), patcher.metric(patcher.clean_logits), patcher.metric(patcher.ablated_logits),
                       patcher.ablation, circuit_nodes(g, keep))


@dataclass
class Completeness(Result):
    """Completeness and minimality of a circuit (Wang et al. 2022), with the task metric F.

    For node sets K of the circuit: F(C \\ K) (the circuit with K's outputs ablated too) against F(M \\ K) (the
    model with K ablated); ``gaps`` = |F(C \\ K) - F(M \\ K)| (small: the circuit is complete for that K). ``kinds``
    says how each K was chosen: random, class (a head class), greedy (grown to maximise the gap).
    ``minimality[node]`` = max over the K tried of |F(C \\ (K + node)) - F(C \\ K)| (large: the node matters).
    """

    nodes: list[str]
    subsets: list[list[str]]
    kinds: list[str]
    f_circuit: list[float]
    f_model: list[float]
    gaps: list[float]
    minimality: dict[str, float]
    metric_circuit: float
    metric_model: float


def _knockout(g: Graph, keep: Tensor, nodes: Sequence[str]) -> Tensor:
    """``keep`` with every edge out of ``nodes`` removed (their outputs ablated everywhere)."""
    out = keep.clone().float()
    for n in nodes:
        out[g.source_names.index(n)] = 0
    return out


def completeness(model: "Model", task: "Task", keep: Tensor, patcher: EdgePatcher | None = None, n_random: int = 4,
                 classes: dict[str, Sequence[str]] | None = None, greedy_steps: int = 2, greedy_candidates: int = 8,
                 seed: int = 0, ablation: str = "corrupt", **build) -> Completeness:
    """Completeness gaps for random, class-based and greedy K, and each node's minimality score (see
    ``Completeness``). keep: the circuit, bool [S, R]; classes: {class name: nodes}, e.g. the head classes."""
    import random

    patcher = patcher or EdgePatcher.build(model, task, ablation, **build)
    g = patcher.graph
    keep = keep.bool() & g.allowed
    nodes = [n for n in circuit_nodes(g, keep) if n not in ("embed", "logits")]
    if not nodes:
        raise UncoverError("the circuit has no head or MLP node: completeness needs nodes to knock out")
    rng = random.Random(seed)
    full = g.allowed.float()

    def f(masks: list[Tensor]) -> list[float]:
        return [patcher.metric(lo) for lo in patcher.run(masks)]

    subsets, kinds = [], []
    for _ in range(n_random):
        subsets.append(sorted(rng.sample(nodes, max(1, len(nodes) // 2)), key=nodes.index))
        kinds.append("random")
    for name, members in (classes or {}).items():
        inside = [n for n in members if n in nodes]
        if inside:
            subsets.append(inside)
            kinds.append(f"class: {name}")
    chosen: list[str] = []
    for _ in range(greedy_steps):  # grow K by the candidate that widens the gap most
        cands = rng.sample([n for n in nodes if n not in chosen], min(greedy_candidates, len(nodes) - len(chosen)))
        if not cands:
            break
        fc = f([_knockout(g, keep, chosen + [c]) for c in cands])
        fm = f([_knockout(g, full, chosen + [c]) for c in cands])
        best = max(range(len(cands)), key=lambda i: abs(fc[i] - fm[i]))
        chosen = chosen + [cands[best]]
        subsets.append(list(chosen))
        kinds.append("greedy")
    fc = f([_knockout(g, keep, K) for K in subsets])
    fm = f([_knockout(g, full, K) for K in subsets])
    base_ks = [[]] + subsets[:n_random]
    without = f([_knockout(g, keep, K) for K in base_ks])  # F(C \ K), shared by every node
    minimality = {}
    for v in nodes:
        ks = [i for i, K in enumerate(base_ks) if v not in K]
        with_v = f([_knockout(g, keep, base_ks[i] + [v]) for i in ks])
        minimality[v] = max(abs(a - without[i]) for a, i in zip(with_v, ks))
    return Completeness(nodes, subsets, kinds, fc, fm, [abs(a - b) for a, b in zip(fc, fm)], minimality,
                        f([keep.float()])[0], patcher.metric(patcher.clean_logits))
