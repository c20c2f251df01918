"""Causal scrubbing (Chan et al. 2022): test a hypothesis about a circuit by resampling every input it
says does not matter, and measure how much of the model's metric survives.

A :class:`Hypothesis` claims some nodes of the edge graph (``embed``, ``L{l}.H{h}``, ``L{l}.MLP``; the
``logits`` always), the edges between them that carry the computation (node to node: a claimed edge
into a head feeds its query, key and value inputs), and for each claimed node a *feature* of the input
(input index -> hashable class) on which that node's inputs must agree.

The scrubbed run is Chan et al.'s treeified evaluation, recursive to full depth. The logits are
evaluated on each input x. A claimed node v evaluated on inputs x_v reads its claimed parents on one
input drawn uniformly from x_v's class under v's feature (under ``whole_input``: x_v itself), where
those parents are in turn evaluated by the same rule, so every chain of resampling nodes from the
logits down has its own inputs; and it reads every parent the hypothesis does not claim on a random
input (resample ablation: claiming nothing is exactly the model run on random inputs).

Level of treeification: the tree's node is the model node's *input* (one interpretation node per model
node): the claimed parents of one node share its one resampled input, rather than each parent drawing
its own (Chan et al.'s finest tree, whose cost grows with the number of paths). Nodes evaluated on the
same inputs run in one forward and share its random input (for their unclaimed parents), so "the model as it is, except that a few
nodes' inputs need only agree on a feature" costs one forward plus one per such node and sample.
Each forward is an :class:`EdgePatcher` run: the random input's sources are the ablation values, and the
resampled parents' values from other forwards are added to their receivers (``EdgePatcher.hooks(added=)``).

Draws come from one ``torch.Generator`` seeded with ``seed``: first the fully resampled model's random
inputs (one set per sample, so hypotheses scrubbed with one seed share the baseline), then each tree depth
first: a forward's random input, then for each node it evaluates, in model order, whose feature is not
``whole_input`` and that has claimed parents: its class draw and the forward of its parents on it.
``n_samples`` trees are drawn and their metrics averaged.

Recovered fraction: (scrubbed - random) / (model - random), where random is the model run on inputs
drawn uniformly (the fully resampled model): 1 when the hypothesis explains all the metric it claims to.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Hashable, Mapping, Sequence

import torch
from torch import Tensor

from uncover.components.circuits.evaluate import _receiver_node_index
from uncover.components.circuits.graph import Graph
from uncover.components.circuits.patching import (EdgePatcher, check_decomposition, head_contributions,
                                                  source_hooks, sources_from_cache)
from uncover.core.results import Result
from uncover.data.tasks import Task
from uncover.errors import UncoverError

if TYPE_CHECKING:
    from uncover.core.model import Model

Feature = Callable[[int], Hashable]  # input index -> the class of inputs a node treats as equal


def whole_input(i: int) -> int:
    """The feature "agree on the whole input": a node's inputs stay on its own input."""
    return i


def token_at(tokens: Tensor, *positions: int) -> Feature:
    """The feature "the token at ``position``" of ``tokens`` [n, pos] (several positions: the tuple of them)."""
    def feature(i: int) -> int | tuple[int, ...]:
        got = tuple(int(tokens[i, p]) for p in positions)
        return got[0] if len(got) == 1 else got
    where = ", ".join(map(str, positions))
    feature.__name__ = f"token at position {where}" if len(positions) == 1 else f"tokens at positions {where}"
    return feature


@dataclass(frozen=True)
class Hypothesis:
    """nodes: the claimed model nodes; edges: claimed (parent, child) node pairs, child a claimed node or
    ``logits`` (None: every graph edge between claimed nodes and into the logits); features: node ->
    feature its inputs must agree on (nodes left out, ``logits`` included, get ``whole_input``; the
    embedding reads nothing, so a feature for it has no effect)."""

    nodes: Sequence[str]
    edges: Sequence[tuple[str, str]] | None = None
    features: Mapping[str, Feature] = field(default_factory=dict)


@dataclass
class ScrubResult(Result):
    """A hypothesis scrubbed on a dataset: the metric of the model, of the scrubbed model and of the fully
    resampled model (means over ``n_samples`` draws; per draw in ``*_samples``), ``recovered`` = (scrubbed
    - random) / (model - random); ``runs``: the forwards each draw ran; the hypothesis in words."""

    metric_model: float
    metric_scrubbed: float
    metric_random: float
    recovered: float
    scrubbed_samples: list[float]
    random_samples: list[float]
    metric_name: str
    nodes: list[str]
    edges: list[list[str]]
    features: dict[str, str]
    seed: int
    n_samples: int
    runs: list[int]


class _Classes:
    """The equivalence classes of one feature over the dataset's n inputs, for drawing within a class."""

    def __init__(self, labels: list[Hashable]):
        ids: dict[Hashable, int] = {}
        self.label = torch.tensor([ids.setdefault(x, len(ids)) for x in labels])
        self.order = self.label.argsort(stable=True)
        self.count = torch.bincount(self.label)
        self.start = self.count.cumsum(0) - self.count

    def draw(self, idx: Tensor, gen: torch.Generator) -> Tensor:
        """For each input index in ``idx`` [n], one input drawn uniformly from its class [n]."""
        c = self.label[idx]
        k = (torch.rand(len(idx), generator=gen) * self.count[c]).long().clamp_max(self.count[c] - 1)
        return self.order[self.start[c] + k]


class _Scrubber:
    """The scrubbed tree of one hypothesis on one dataset (see the module docstring)."""

    def __init__(self, model: "Model", task: Task, hyp: Hypothesis, max_runs: int):
        self.model, self.task, self.max_runs = model, task, max_runs
        g = self.graph = Graph.of(model)
        names = source_hooks(g)
        with torch.no_grad():
            out, cache = model.run_with_cache(task.clean, names=names + [f"blocks.{l}.hook_attn_out"
                                                                         for l in range(g.n_layers)],
                                              logits_to_keep=1)
            check_decomposition(model, cache)
            self.sources = sources_from_cache(model, g, cache)  # [S, n, p, d]: every input's plain sources
        self.logits = out[:, -1]
        self.logit_node = g.n_sources
        self.nodes, self.claimed, self.classes = _parse(g, hyp, len(task))
        node = _receiver_node_index(g)
        self.receivers = [(node == v).nonzero().flatten() for v in range(g.n_sources + 1)]

    def sample(self, gen: torch.Generator) -> tuple[Tensor, int]:
        """Last-position logits [n, d_vocab] of one scrubbed draw, and the forwards it took."""
        self.gen, self.memo = gen, {}
        root = self.logit_node
        return self.evaluate((root,), torch.arange(len(self.task)))[root], len(self.memo)

    def evaluate(self, targets: tuple[int, ...], idx: Tensor) -> dict[int, Tensor]:
        """The scrubbed outputs of nodes ``targets`` on inputs ``idx`` [n]: {node: [n, p, d]} ({logits:
        [n, d_vocab]}), from one forward (none for the embedding alone)."""
        out = {0: self.sources[0, idx]} if 0 in targets else {}
        rest = tuple(v for v in targets if v != 0)
        if rest:
            key = (rest, tuple(idx.tolist()))
            if key not in self.memo:
                if len(self.memo) >= self.max_runs:
                    raise UncoverError(f"the scrubbed tree of this hypothesis needs more than {self.max_runs} "
                                       "forwards per sample (one per input a resampling node is evaluated on); claim "
                                       "fewer nodes with features, use coarser features or raise max_runs")
                self.memo[key] = self.run(rest, idx)
            out.update(self.memo[key])
        return out

    def needed(self, targets: tuple[int, ...]) -> list[int]:
        """``targets`` and the claimed nodes they read on their own inputs (through whole_input nodes)."""
        out, todo = set(targets), list(targets)
        while todo:
            v = todo.pop()
            if v and self.classes[v] is None:
                new = set(self.claimed[:, v].nonzero().flatten().tolist()) - out
                out |= new
                todo += list(new)
        return sorted(out - {0})

    @torch.no_grad()
    def run(self, targets: tuple[int, ...], idx: Tensor) -> dict[int, Tensor]:
        """One forward on inputs ``idx``: each claimed node the targets need reads its claimed parents from this
        run (whole_input) or from one forward on inputs drawn within its class (added to its receivers), and
        every other parent from this forward's random input."""
        g, model = self.graph, self.model
        values = self.sources[:, torch.randint(len(self.task), (len(idx),), generator=self.gen)]
        keep = torch.ones(g.n_sources, g.n_receivers)
        added: dict[int, Tensor] = {}
        for v in self.needed(targets):
            recv, parents = self.receivers[v], tuple(self.claimed[:, v].nonzero().flatten().tolist())
            keep[:, recv] = 0
            if parents and self.classes[v] is None:
                keep[torch.tensor(parents)[:, None], recv[None, :]] = 1
            elif parents:
                got = self.evaluate(parents, self.classes[v].draw(idx, self.gen))
                for s in parents:
                    moved = got[s] - values[s]
                    for r in recv[g.allowed[s, recv]].tolist():
                        added[r] = added[r] + moved if r in added else moved
        patcher = EdgePatcher(model, self.task.subset(idx.tolist()), g, "resample", values, self.sources[:, idx],
                              self.logits[idx])
        got: dict[int, Tensor] = {}
        hooks = patcher.hooks(keep, added)
        for v in targets:
            if v != self.logit_node:
                hooks.append(self.recorder(v, got))
        if self.logit_node in targets:
            got[self.logit_node] = model.run_with_hooks(patcher.task.clean, hooks, logits_to_keep=1)[:, -1]
        else:
            last = max(int(g.source_names[v][1:].split(".")[0]) for v in targets)
            model.run_with_hooks(patcher.task.clean, hooks, stop_at_layer=last + 1)
        return got

    def recorder(self, v: int, got: dict[int, Tensor]) -> tuple[str, Callable]:
        """A hook that stores node v's output (a head's contribution, or the MLP's) in ``got[v]``."""
        name, model = self.graph.source_names[v], self.model
        layer = int(name[1:].split(".")[0])
        if name.endswith("MLP"):
            return f"blocks.{layer}.hook_mlp_out", lambda t, hook: got.__setitem__(v, t)
        head = int(name.split(".H")[1])
        return (f"blocks.{layer}.attn.hook_result",
                lambda t, hook: got.__setitem__(v, head_contributions(model, layer, t)[:, :, head]))


def _parse(g: Graph, hyp: Hypothesis, n: int) -> tuple[list[int], Tensor, dict[int, _Classes | None]]:
    """The claimed nodes (indices into the sources and the logits, in order), the claimed edges as bool
    [n_sources, n_sources + 1] (parent, child; the last child is the logits) and each claimed child's classes
    (None for whole_input: nothing drawn)."""
    nodes = g.source_names + ["logits"]
    index = {name: i for i, name in enumerate(nodes)}

    def find(name: str) -> int:
        if name not in index:
            last = g.n_layers - 1
            mlps = f", L0.MLP .. L{last}.MLP" if g.mlp else ""
            raise UncoverError(f"unknown node {name!r}; the nodes of this model are embed, L0.H0 .. "
                               f"L{last}.H{g.n_heads - 1}{mlps} and logits")
        return index[name]
    claimed_nodes = {find(x) for x in hyp.nodes} | {len(g.source_names)}
    for name in hyp.features:
        if find(name) not in claimed_nodes:
            raise UncoverError(f"the hypothesis gives {name!r} a feature but does not claim it; add it to nodes")
    node = _receiver_node_index(g)  # a parent reaches a child when some receiver of the child reads it
    reads = torch.stack([g.allowed[:, node == c].any(1) for c in range(len(nodes))], dim=1)  # [S, S + 1]
    on = torch.tensor([i in claimed_nodes for i in range(len(nodes))])
    claimed = reads & on[: g.n_sources, None] & on[None, :] if hyp.edges is None else torch.zeros_like(reads)
    for parent, child in hyp.edges or []:
        s, c = find(parent), find(child)
        if s not in claimed_nodes or c not in claimed_nodes:
            raise UncoverError(f"the edge {parent} -> {child} joins a node the hypothesis does not claim; add "
                               f"{parent if s not in claimed_nodes else child} to nodes")
        if s == len(g.source_names) or not reads[s, c]:
            raise UncoverError(f"{parent} -> {child} is not an edge of this model: a node reads only nodes "
                               "that write to the residual before it")
        claimed[s, c] = True
    classes = {}
    for c in sorted(claimed_nodes - {0}):
        feature = hyp.features.get(nodes[c], whole_input)
        classes[c] = None if feature is whole_input else _Classes([feature(i) for i in range(n)])
        if classes[c] is not None and int(classes[c].count.max()) == 1:
            raise UncoverError(f"the feature of {nodes[c]} puts each of the {n} inputs in a class of its own, so "
                               "there is nothing to resample; choose a feature inputs share (or whole_input to "
                               "say the node sees its own input)")
    return sorted(claimed_nodes), claimed, classes


def _dataset_task(tokens: Tensor) -> Task:
    """Tokens [n, p + 1] as the prompts [n, p] whose last-position loss predicts the final token."""
    if tokens.dim() != 2 or tokens.shape[1] < 2:
        raise UncoverError(f"a dataset is tokens [n, pos] with pos >= 2 (the last token is the target), got "
                           f"shape {tuple(tokens.shape)}")
    return Task("tokens", tokens[:, :-1], tokens[:, :-1], tokens[:, -1], tokens[:, -1])


def scrub(model: "Model", task_or_dataset: Task | Tensor, hypothesis: Hypothesis, n_samples: int = 4,
          seed: int = 0, max_runs: int = 2000) -> ScrubResult:
    """Causal scrubbing of ``hypothesis`` (see the module docstring). task_or_dataset: a Task (its clean
    prompts are the dataset, its metric is scored with each prompt's own answers) or tokens [n, p + 1]
    (metric: the mean loss, nats, of predicting the last token from the rest). Feature indices index the
    prompts. Prompts must share one length without padding: inputs are resampled position by position."""
    task = task_or_dataset if isinstance(task_or_dataset, Task) else _dataset_task(task_or_dataset)
    if task.attention_mask is not None and not bool(task.attention_mask.all()):
        raise UncoverError("causal scrubbing resamples whole prompts position by position: give prompts of one "
                           "length without padding")
    if len(task) < 2 or n_samples < 1:
        raise UncoverError(f"causal scrubbing needs at least 2 prompts and 1 sample (got {len(task)} prompts, "
                           f"n_samples={n_samples})")
    if isinstance(task_or_dataset, Task):
        metric, metric_name = (lambda lo: float(task.metric(lo[:, None]))), task.metric_unit
    else:
        metric = lambda lo: float(torch.nn.functional.cross_entropy(lo.float(), task.answers))  # noqa: E731
        metric_name = "loss (nats)"
    scrubber = _Scrubber(model, task, hypothesis, max_runs)
    gen = torch.Generator().manual_seed(seed)
    n = len(task)
    random = [metric(scrubber.logits[torch.randint(n, (n,), generator=gen)]) for _ in range(n_samples)]
    scrubbed, runs = [], []
    for _ in range(n_samples):
        logits, n_runs = scrubber.sample(gen)
        scrubbed.append(metric(logits))
        runs.append(n_runs)
    full, s, r = metric(scrubber.logits), sum(scrubbed) / n_samples, sum(random) / n_samples
    if abs(full - r) < 1e-9:
        raise UncoverError("the model scores the same on its inputs as on resampled ones: the recovered fraction "
                           "is undefined; choose a task whose metric depends on the input")
    names = scrubber.graph.source_names + ["logits"]
    edges = [[names[p], names[c]] for p, c in scrubber.claimed.nonzero().tolist()]
    features = {names[c]: getattr(hypothesis.features.get(names[c], whole_input), "__name__", "feature")
                for c in scrubber.classes}
    return ScrubResult(full, s, r, (s - r) / (full - r), scrubbed, random, metric_name,
                       [names[c] for c in scrubber.nodes], edges, features, seed, n_samples, runs)
