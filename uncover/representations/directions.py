"""Reading vectors: one concept direction per layer, from contrast pairs or labelled activations.

Methods (Zou 2023 RepE; Rimsky 2024 CAA; Marks & Tegmark 2023):
* ``mean_diff``: the mean of paired differences ``mean(pos - neg)``.
* ``pca``: the first principal component of the paired differences, each difference given a random
  sign first (so the component does not just follow the mean).
* ``logistic``: the weight vector of a logistic probe separating positive from negative examples.

Every method gives a unit direction ``u`` whose sign is fixed from the labels (positives project
higher) and scales it by the mean paired gap along it, ``mean((pos - neg) . u)``, so coefficients mean
the same for every method and ``mean_diff`` is exactly ``mean(pos - neg)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import torch

from uncover.core.results import Result
from uncover.data.contrast import ContrastPair
from uncover.errors import UncoverError
from uncover.representations.activations import collect_activations
from uncover.representations.probes import LogisticProbe

if TYPE_CHECKING:
    from uncover.core.model import Model

METHODS = ("mean_diff", "pca", "logistic")


@dataclass
class Direction(Result):
    """vectors [len(layers), d_model]: the direction at each of ``layers`` (residual stream units)."""

    vectors: torch.Tensor
    layers: list[int]
    method: str = "mean_diff"
    concept: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def at(self, layer: int) -> torch.Tensor:
        """The vector [d_model] at ``layer``."""
        if layer not in self.layers:
            raise UncoverError(f"this direction has layers {self.layers}; layer {layer} is not one of them")
        return self.vectors[self.layers.index(layer)]

    def only(self, layers: Sequence[int]) -> "Direction":
        """The same direction restricted to ``layers``."""
        return Direction(torch.stack([self.at(l) for l in layers]), list(layers), self.method, self.concept, self.meta)

    def normalized(self) -> "Direction":
        """Unit-norm vectors at every layer."""
        return Direction(self.vectors / self.vectors.norm(dim=-1, keepdim=True), self.layers, self.method,
                         self.concept, self.meta)

    def project(self, acts: torch.Tensor) -> torch.Tensor:
        """Scalar projections of ``acts [len(layers), n, d_model]`` on the unit directions -> [len(layers), n]."""
        return torch.einsum("lnd,ld->ln", acts.float(), self.normalized().vectors)

    def _combine(self, other: "Direction", sign: float) -> "Direction":
        if self.layers != other.layers:
            raise UncoverError(f"directions have different layers ({self.layers} vs {other.layers}); "
                               "use .only(layers) to match them first")
        return Direction(self.vectors + sign * other.vectors, self.layers, "arithmetic",
                         f"{self.concept}{'+' if sign > 0 else '-'}{other.concept}")

    def __add__(self, other: "Direction") -> "Direction":
        return self._combine(other, 1.0)

    def __sub__(self, other: "Direction") -> "Direction":
        return self._combine(other, -1.0)

    def __mul__(self, scale: float) -> "Direction":
        return Direction(self.vectors * scale, self.layers, self.method, self.concept, self.meta)

    __rmul__ = __mul__

    def __neg__(self) -> "Direction":
        return self * -1.0



def _unit_direction(pos: torch.Tensor, neg: torch.Tensor, method: str, seed: int) -> torch.Tensor:
    """Unit vector [d] for one layer from paired activations pos, neg [n, d] (sign not yet fixed)."""
    diffs = (pos - neg).double()
    if method == "mean_diff":
        u = diffs.mean(0)
    elif method == "pca":
        g = torch.Generator().manual_seed(seed)
        signs = torch.randint(0, 2, (len(diffs), 1), generator=g).double() * 2 - 1
        flipped = diffs * signs
        centred = flipped - flipped.mean(0)
        u = torch.linalg.svd(centred, full_matrices=False).Vh[0]
    elif method == "logistic":
        X = torch.cat([pos, neg]).float()
        y = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))]).long()
        u = LogisticProbe().fit(X, y).weight.double()
    else:
        raise UncoverError(f"unknown direction method {method!r}; choose from {METHODS}")
    return u / u.norm().clamp_min(1e-12)


def reading_vectors(pos_acts: torch.Tensor, neg_acts: torch.Tensor, method: str = "mean_diff",
                    layers: Sequence[int] | None = None, concept: str = "", seed: int = 0) -> Direction:
    """A direction per layer from paired activations ``pos_acts, neg_acts [n_layers, n, d_model]``.

    The sign is fixed so positives project higher; the length is the mean paired gap along it.
    """
    if pos_acts.shape != neg_acts.shape or pos_acts.ndim != 3:
        raise UncoverError(f"pos_acts and neg_acts must both be [n_layers, n_pairs, d_model]; got "
                           f"{tuple(pos_acts.shape)} and {tuple(neg_acts.shape)}")
    if pos_acts.shape[1] < 2:
        raise UncoverError("need at least 2 pairs to estimate a direction")
    layers = list(range(pos_acts.shape[0])) if layers is None else list(layers)
    vectors = []
    for i in range(len(layers)):
        u = _unit_direction(pos_acts[i], neg_acts[i], method, seed)
        gap = float(((pos_acts[i] - neg_acts[i]).double() @ u).mean())
        if gap < 0:
            u, gap = -u, -gap
        vectors.append((u * gap).float())
    return Direction(torch.stack(vectors), layers, method, concept, {"n_pairs": int(pos_acts.shape[1])})


def concept_direction(model: "Model", pairs: Sequence[ContrastPair], layers: Sequence[int] | None = None,
                      method: str = "mean_diff", position: "str | int" = "last", concept: str = "",
                      seed: int = 0) -> Direction:
    """Run the model on contrast pairs and return their reading vectors at ``layers`` (resid_post)."""
    if len(pairs) < 2:
        raise UncoverError("need at least 2 contrast pairs to estimate a direction")
    layers = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    pos = collect_activations(model, [p.positive for p in pairs], layers, position=position)
    neg = collect_activations(model, [p.negative for p in pairs], layers, position=position)
    return reading_vectors(pos, neg, method, layers, concept, seed)
