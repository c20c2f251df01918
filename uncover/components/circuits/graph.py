"""The computational graph circuits are found in: sources, receivers and the edges between them.

Sources (what writes into the residual stream), in model order: the input embedding (``embed``: the
residual entering layer 0, position embeddings included), then per layer every attention head's output
(``L{l}.H{h}``) and the MLP's output (``L{l}.MLP``). Receivers (what reads the residual): per layer every
head's query, key and value input separately (``L{l}.H{h}.q|k|v``; under grouped-query attention each
*query* head has its own k/v receiver), the MLP's input (``L{l}.MLP``), and the final residual the
unembedding reads (``logits``). An edge joins a source to every receiver that reads the residual after the
source wrote to it; the residual is a sum, so an edge is "this source's contribution as that receiver sees
it". In a parallel block (GPT-NeoX, GPT-J) the MLP reads the same residual as the attention, so it has no
edges from its own layer's heads.

Scores and masks over edges are dense ``[n_sources, n_receivers]`` tensors; ``graph.allowed`` marks the
real edges (GPT-2 small: 32,491; SmolLM2-135M: 123,211).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Iterator

import torch
from torch import Tensor

from uncover.errors import UncoverError

if TYPE_CHECKING:
    from uncover.core.model import Model

KINDS = ("q", "k", "v")


@dataclass(frozen=True)
class Graph:
    """The edge graph of a model with ``n_layers`` layers of ``n_heads`` (query) heads and one MLP each."""

    n_layers: int
    n_heads: int
    parallel: bool = False
    mlp: bool = True  # False: attention-only (toy models without MLPs)

    @classmethod
    def of(cls, model: "Model") -> "Graph":
        mlp = "blocks.0.hook_mlp_in" in model.hook_names()
        return cls(model.cfg.n_layers, model.cfg.n_heads, model.cfg.parallel, mlp)

    # ---- sizes and indices ----------------------------------------------------------------------
    @property
    def _src_stride(self) -> int:
        return self.n_heads + int(self.mlp)

    @property
    def _recv_stride(self) -> int:
        return 3 * self.n_heads + int(self.mlp)

    @property
    def n_sources(self) -> int:
        return 1 + self.n_layers * self._src_stride

    @property
    def n_receivers(self) -> int:
        return self.n_layers * self._recv_stride + 1

    def head_source(self, layer: int, head: int) -> int:
        return 1 + layer * self._src_stride + head

    def mlp_source(self, layer: int) -> int:
        self._need_mlp()
        return 1 + layer * self._src_stride + self.n_heads

    def head_receiver(self, layer: int, head: int, kind: str) -> int:
        return layer * self._recv_stride + KINDS.index(kind) * self.n_heads + head

    def mlp_receiver(self, layer: int) -> int:
        self._need_mlp()
        return layer * self._recv_stride + 3 * self.n_heads

    @property
    def logits_receiver(self) -> int:
        return self.n_layers * self._recv_stride

    def _need_mlp(self) -> None:
        if not self.mlp:
            raise UncoverError("this model has no MLPs: its graph has head and embedding nodes only")

    def sources_before(self, layer: int, mlp: bool = False) -> int:
        """How many sources (a prefix of the source order) a receiver of ``layer`` reads: the attention
        reads the embedding and earlier layers; a sequential MLP also its own layer's heads."""
        if mlp and not self.parallel:
            return self.head_source(layer, self.n_heads - 1) + 1
        return 1 + layer * self._src_stride

    # ---- names ----------------------------------------------------------------------------------
    @cached_property
    def source_names(self) -> list[str]:
        names = ["embed"]
        for l in range(self.n_layers):
            names += [f"L{l}.H{h}" for h in range(self.n_heads)] + ([f"L{l}.MLP"] if self.mlp else [])
        return names

    @cached_property
    def receiver_names(self) -> list[str]:
        names = []
        for l in range(self.n_layers):
            names += [f"L{l}.H{h}.{k}" for k in KINDS for h in range(self.n_heads)] + ([f"L{l}.MLP"] if self.mlp else [])
        return names + ["logits"]

    def source_node(self, s: int) -> str:
        """The node (``embed``, ``L{l}.H{h}``, ``L{l}.MLP``) source ``s`` is the output of."""
        return self.source_names[s]

    def receiver_node(self, r: int) -> str:
        """The node receiver ``r`` is an input of (a head's q/k/v inputs all belong to the head)."""
        name = self.receiver_names[r]
        return name.rsplit(".", 1)[0] if name.endswith((".q", ".k", ".v")) else name

    def edge_name(self, s: int, r: int) -> str:
        return f"{self.source_names[s]} -> {self.receiver_names[r]}"

    # ---- edges ----------------------------------------------------------------------------------
    @cached_property
    def allowed(self) -> Tensor:
        """Bool [n_sources, n_receivers]: True where the edge exists."""
        a = torch.zeros(self.n_sources, self.n_receivers, dtype=torch.bool)
        for l in range(self.n_layers):
            first = self.head_receiver(l, 0, "q")
            a[: self.sources_before(l), first: first + 3 * self.n_heads] = True
            if self.mlp:
                a[: self.sources_before(l, mlp=True), self.mlp_receiver(l)] = True
        a[:, self.logits_receiver] = True
        return a

    @property
    def n_edges(self) -> int:
        return int(self.allowed.sum())

    def edges(self, scores: Tensor) -> Iterator[tuple[int, int, float]]:
        """(source, receiver, score) of every real edge, largest |score| first."""
        flat = torch.where(self.allowed, scores.float().abs(), torch.tensor(-1.0)).flatten()
        order = flat.argsort(descending=True)[: self.n_edges]
        for i in order.tolist():
            s, r = divmod(i, self.n_receivers)
            yield s, r, float(scores[s, r])

    def check_scores(self, scores: Tensor, what: str = "scores") -> None:
        want = (self.n_sources, self.n_receivers)
        if tuple(scores.shape[-2:]) != want:
            raise UncoverError(f"{what} of shape {tuple(scores.shape)} do not fit this graph: it needs "
                               f"[..., {want[0]} sources, {want[1]} receivers] (Graph.of(model))")


def graph_bytes(graph: Graph, n_prompts: int, n_pos: int, d_model: int, element_size: int = 4) -> int:
    """Working memory of edge patching and attribution on this graph: two [prompts, pos, sources, d_model]
    tensors of source values (clean / corrupted) and one of differences, plus per-layer gradients."""
    per_source = n_prompts * n_pos * d_model * element_size
    return per_source * (3 * graph.n_sources + 2 * graph._recv_stride)
