"""What to remove: a structured pruning plan (query heads and MLP neurons per layer) and its masks.

Rules (documented choices):
- Every layer keeps at least one query head and one MLP neuron. Choosing by importance skips a layer's
  last unit (the next least important unit elsewhere is taken instead); an explicit plan that empties a
  layer is refused. A share larger than what the rule allows is refused with the largest possible share.
- Heads are query heads. Under grouped-query attention a KV head is removed only once every query head
  that reads it is removed (removing a query head never changes the other heads' keys and values).
- A removed head's output is exactly zero before the output projection (its bias, if any, stays), and a
  removed neuron's activation is zero before the down projection: the masks and the physically smaller
  model compute the same function.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import torch

from uncover.core.interventions import ablate
from uncover.core.results import Result
from uncover.errors import UncoverError

if TYPE_CHECKING:
    from uncover.core.model import Model

UNITS = ("heads", "neurons")


def check_share(share: float, what: str = "share") -> float:
    """``share`` as a float in (0, 1), or a clear error."""
    try:
        value = float(share)
    except (TypeError, ValueError):
        raise UncoverError(f"{what} must be a number in (0, 1), got {share!r}")
    if not 0.0 < value < 1.0:
        raise UncoverError(f"{what} must be strictly between 0 and 1 (a fraction of units to remove), got {share!r}")
    return value


def n_units(model: "Model", unit: str) -> tuple[int, int]:
    """(layers, units per layer) for ``unit`` in ("heads", "neurons")."""
    if unit not in UNITS:
        raise UncoverError(f"unit must be 'heads' or 'neurons', not {unit!r}")
    return model.cfg.n_layers, model.cfg.n_heads if unit == "heads" else model.cfg.d_mlp


@dataclass
class PruningPlan(Result):
    """Removed query heads and MLP neurons per layer (original indices, sorted)."""

    n_layers: int
    n_heads: int
    d_mlp: int
    heads: dict[int, list[int]] = field(default_factory=dict)
    neurons: dict[int, list[int]] = field(default_factory=dict)

    @classmethod
    def empty(cls, model: "Model") -> "PruningPlan":
        return cls(model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_mlp)

    def __post_init__(self) -> None:
        self.heads = {int(l): sorted(int(h) for h in hs) for l, hs in self.heads.items() if len(hs)}
        self.neurons = {int(l): sorted(int(n) for n in ns) for l, ns in self.neurons.items() if len(ns)}
        for unit, removed, width in (("heads", self.heads, self.n_heads), ("neurons", self.neurons, self.d_mlp)):
            for l, ids in removed.items():
                if not 0 <= l < self.n_layers:
                    raise UncoverError(f"{unit}: layer {l} out of range 0..{self.n_layers - 1}")
                bad = [i for i in ids if not 0 <= i < width]
                if bad or len(set(ids)) != len(ids):
                    raise UncoverError(f"{unit} of layer {l}: {ids} must be distinct indices in 0..{width - 1}")
                if len(ids) == width:
                    raise UncoverError(
                        f"the plan removes every {unit[:-1]} of layer {l}; uncover keeps at least one per layer "
                        f"(remove the layer's block instead, or keep one {unit[:-1]})")

    def removed(self, unit: str) -> dict[int, list[int]]:
        return self.heads if unit == "heads" else self.neurons

    def count(self, unit: str) -> int:
        return sum(len(v) for v in self.removed(unit).values())

    def share(self, unit: str) -> float:
        return self.count(unit) / (self.n_layers * (self.n_heads if unit == "heads" else self.d_mlp))

    def mask(self, unit: str) -> torch.Tensor:
        """[n_layers, units] float mask: 1 kept, 0 removed."""
        width = self.n_heads if unit == "heads" else self.d_mlp
        m = torch.ones(self.n_layers, width)
        for l, ids in self.removed(unit).items():
            m[l, ids] = 0.0
        return m

    def extended(self, unit: str, more: dict[int, list[int]]) -> "PruningPlan":
        """A new plan that also removes ``more`` units of ``unit``."""
        new = {l: list(v) for l, v in self.removed(unit).items()}
        for l, ids in more.items():
            new.setdefault(int(l), []).extend(int(i) for i in ids)
        heads, neurons = (new, self.neurons) if unit == "heads" else (self.heads, new)
        return PruningPlan(self.n_layers, self.n_heads, self.d_mlp, heads, neurons)

    def hooks(self) -> list[tuple[str, Callable]]:
        """Hooks that zero removed heads (``attn.hook_z``) and neurons (``mlp.hook_post``)."""
        out = [(f"blocks.{l}.attn.hook_z", ablate("zero", heads=hs)) for l, hs in sorted(self.heads.items())]
        for l, ns in sorted(self.neurons.items()):
            keep = torch.ones(self.d_mlp)
            keep[ns] = 0.0
            out.append((f"blocks.{l}.mlp.hook_post", lambda t, hook, k=keep: t * k.to(t.device, t.dtype)))
        return out


def select(scores: torch.Tensor, k: int, already: dict[int, list[int]] | None = None) -> dict[int, list[int]]:
    """The ``k`` lowest-scoring units of scores [n_layers, units] not yet removed, keeping one per layer.

    Ties break by position (layer-major). Raises when fewer than ``k`` units can go under the keep-one rule.
    """
    already = already or {}
    n_layers, width = scores.shape
    removed = torch.zeros(n_layers, width, dtype=torch.bool)
    for l, ids in already.items():
        removed[l, ids] = True
    left = (~removed).sum(1)
    order = torch.argsort(scores.flatten().float().nan_to_num(float("inf")), stable=True)
    chosen: dict[int, list[int]] = {}
    taken = 0
    for flat in order.tolist():
        if taken == k:
            break
        l, u = divmod(flat, width)
        if removed[l, u] or left[l] <= 1:
            continue
        chosen.setdefault(l, []).append(u)
        left[l] -= 1
        taken += 1
    if taken < k:
        possible = n_layers * width - n_layers
        raise UncoverError(
            f"cannot remove {k} more units: every layer keeps at least one, so at most {possible} of "
            f"{n_layers * width} ({possible / (n_layers * width):.0%}) can go; ask for a smaller share")
    return chosen
