"""Names and specs every technique shares: ``act_name``, ``Site``, ``Positions`` and one layer check.

``act_name("resid_pre", 3) == "blocks.3.hook_resid_pre"`` (TransformerLens's ``get_act_name``). A ``Site``
(a short site name, the layers and optionally the heads) and ``Positions`` (all, last, a list of ints, or
one list per prompt) describe where an intervention applies as data: ``to_dict`` / ``from_dict`` save and
replay them (pyvene-style).
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch

from uncover.errors import UncoverError, closest

# short site name -> hook name pattern ("{}" is the layer)
SITES: dict[str, str] = {
    "embed": "hook_embed",
    "pos_embed": "hook_pos_embed",
    "resid_pre": "blocks.{}.hook_resid_pre",
    "resid_mid": "blocks.{}.hook_resid_mid",
    "resid_post": "blocks.{}.hook_resid_post",
    "attn_out": "blocks.{}.hook_attn_out",
    "mlp_out": "blocks.{}.hook_mlp_out",
    "q_input": "blocks.{}.hook_q_input",
    "k_input": "blocks.{}.hook_k_input",
    "v_input": "blocks.{}.hook_v_input",
    "mlp_in": "blocks.{}.hook_mlp_in",
    "q": "blocks.{}.attn.hook_q",
    "k": "blocks.{}.attn.hook_k",
    "v": "blocks.{}.attn.hook_v",
    "z": "blocks.{}.attn.hook_z",
    "pattern": "blocks.{}.attn.hook_pattern",
    "result": "blocks.{}.attn.hook_result",
    "pre": "blocks.{}.mlp.hook_pre",
    "post": "blocks.{}.mlp.hook_post",
    "normalized": "ln_final.hook_normalized",
}
ALIASES = {"attn": "pattern", "mlp_pre": "pre", "mlp_post": "post", "ln_final": "normalized"}
# per-head sites: (head axis, position axis) of their activation
HEAD_AXES = {"q": (2, 1), "k": (2, 1), "v": (2, 1), "z": (2, 1), "result": (2, 1), "q_input": (2, 1),
             "k_input": (2, 1), "v_input": (2, 1), "pattern": (1, 2)}


def short_name(site: str) -> str:
    """The short site name of ``site`` ("z", "attn.hook_z", "hook_resid_pre", "blocks.3.hook_z" ...)."""
    s = site.split(".")[-1].removeprefix("hook_") if "." in site or site.startswith("hook_") else site
    s = ALIASES.get(s, s)
    if s not in SITES:
        raise UncoverError(f"unknown site {site!r}; closest site names: {closest(site, list(SITES) + list(ALIASES))}. "
                           f"Sites: {', '.join(SITES)}")
    return s


def act_name(site: str, layer: int | None = None) -> str:
    """The standard hook name of ``site`` at ``layer``: act_name("z", 2) -> "blocks.2.attn.hook_z".

    site: a short name ("resid_pre", "attn_out", "q", "pattern", "result", "q_input", "mlp_in", "pre" ...,
    TransformerLens aliases "attn", "mlp_pre", "mlp_post", "ln_final"), a suffix ("hook_resid_post",
    "attn.hook_z"), or a full name (returned unchanged when layer is None or matches).
    """
    if site.startswith("blocks.") or site in ("hook_embed", "hook_pos_embed", "ln_final.hook_normalized"):
        if layer is not None and site.startswith("blocks.") and site.split(".")[1] != str(layer):
            raise UncoverError(f"{site!r} is a full hook name of another layer than {layer}; pass the short name")
        short_name(site)  # checks it is a known site
        return site
    pattern = SITES[short_name(site)]
    if "{}" not in pattern:
        return pattern
    if layer is None:
        raise UncoverError(f"site {site!r} needs a layer: act_name({site!r}, layer)")
    if _index(layer) is None or _index(layer) < 0:
        raise UncoverError(f"layer must be a non-negative int, not {layer!r}")
    return pattern.format(_index(layer))


def _index(layer) -> int | None:
    if isinstance(layer, bool):
        return None
    try:
        return operator.index(layer)
    except TypeError:
        return None


def check_layer(layer: int, n_layers: int, what: str = "layer", allow_end: bool = False) -> int:
    """``layer`` as an int if it is a layer index (``0..n_layers - 1``, or ``n_layers`` too with allow_end)."""
    last = n_layers if allow_end else n_layers - 1
    index = _index(layer)
    if index is None or not 0 <= index <= last:
        raise UncoverError(f"{what} {layer!r} out of range: the model has layers 0..{n_layers - 1}"
                           + (f" (and {n_layers} for the end of the last layer)" if allow_end else "")
                           + f"; pass an int in 0..{last}")
    return index


def check_layers(layers: Iterable[int], n_layers: int, what: str = "layers", allow_end: bool = False) -> list[int]:
    """Every entry checked by ``check_layer``; the bad ones named together in one error."""
    layers = list(layers)
    last = n_layers if allow_end else n_layers - 1
    bad = [l for l in layers if _index(l) is None or not 0 <= _index(l) <= last]
    if bad:
        raise UncoverError(f"{what} {bad} out of range: the model has layers 0..{n_layers - 1}"
                           + (f" (and {n_layers} for the end of the last layer)" if allow_end else "")
                           + f"; pass ints in 0..{last}")
    return [_index(l) for l in layers]


def _ints(xs: Any, what: str) -> tuple[int, ...]:
    if isinstance(xs, torch.Tensor):
        xs = xs.tolist()
    if _index(xs) is not None:
        return (_index(xs),)
    out = tuple(_index(x) for x in xs)
    if any(x is None for x in out):
        raise UncoverError(f"{what} must be ints, got {xs!r}")
    return out


@dataclass(frozen=True)
class Site:
    """Where an intervention applies: a short site name, its layers (None: every layer) and heads
    (None: every head; per-head sites only). Serialisable with ``to_dict`` / ``from_dict``."""

    name: str
    layers: tuple[int, ...] | None = None
    heads: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", short_name(self.name))
        if self.layers is not None:
            object.__setattr__(self, "layers", _ints(self.layers, "Site layers"))
        if self.heads is not None:
            if self.name not in HEAD_AXES:
                raise UncoverError(f"site {self.name!r} has no head axis; heads= needs one of {', '.join(HEAD_AXES)}")
            object.__setattr__(self, "heads", _ints(self.heads, "Site heads"))

    @classmethod
    def coerce(cls, site: "Site | str | dict") -> "Site":
        """A Site from a Site, a short / suffix / full hook name, or a dict from ``to_dict``."""
        if isinstance(site, Site):
            return site
        if isinstance(site, dict):
            return cls.from_dict(site)
        if isinstance(site, str) and site.startswith("blocks."):
            return cls(site, layers=(int(site.split(".")[1]),))
        if isinstance(site, str):
            return cls(site)
        raise UncoverError(f"a site is a name like 'resid_pre' or 'z', or a uncover Site; got {site!r}")

    def layer_list(self, n_layers: int) -> list[int]:
        """The layers, checked against the model's depth."""
        return list(range(n_layers)) if self.layers is None else check_layers(self.layers, n_layers)

    def hook_names(self, n_layers: int) -> list[str]:
        """The standard hook name at each layer."""
        if "{}" not in SITES[self.name]:
            return [SITES[self.name]]
        return [act_name(self.name, l) for l in self.layer_list(n_layers)]

    @property
    def head_axis(self) -> int | None:
        return HEAD_AXES.get(self.name, (None, 1))[0]

    @property
    def pos_axis(self) -> int:
        return HEAD_AXES.get(self.name, (None, 1))[1]

    def to_dict(self) -> dict:
        return {"name": self.name, "layers": None if self.layers is None else list(self.layers),
                "heads": None if self.heads is None else list(self.heads)}

    @classmethod
    def from_dict(cls, d: dict) -> "Site":
        return cls(d["name"], d.get("layers"), d.get("heads"))


@dataclass(frozen=True)
class Positions:
    """Which token positions: ``all``, the ``last``, a list of ints (negative count from the end) shared by
    every prompt, or one list per prompt. Serialisable with ``to_dict`` / ``from_dict``."""

    kind: str = "all"  # "all" | "last" | "list" | "per_prompt"
    index: tuple = ()

    def __post_init__(self) -> None:
        if self.kind not in ("all", "last", "list", "per_prompt"):
            raise UncoverError(f"Positions kind must be 'all', 'last', 'list' or 'per_prompt', not {self.kind!r}")
        if self.kind == "list":
            object.__setattr__(self, "index", _ints(self.index, "positions"))
        if self.kind == "per_prompt":
            object.__setattr__(self, "index", tuple(_ints(p, "positions") for p in self.index))

    @classmethod
    def all(cls) -> "Positions":
        return cls("all")

    @classmethod
    def last(cls) -> "Positions":
        return cls("last")

    @classmethod
    def at(cls, *positions: int) -> "Positions":
        return cls("list", positions)

    @classmethod
    def per_prompt(cls, positions: Sequence[Sequence[int]]) -> "Positions":
        return cls("per_prompt", tuple(positions))

    @classmethod
    def coerce(cls, positions: "Positions | str | int | Sequence | None") -> "Positions":
        """None / "all", "last", an int, a list of ints, a list of lists (per prompt), or a dict."""
        if isinstance(positions, Positions):
            return positions
        if positions is None or positions == "all":
            return cls.all()
        if positions == "last":
            return cls.last()
        if isinstance(positions, dict):
            return cls.from_dict(positions)
        if isinstance(positions, str):
            raise UncoverError(f"positions must be 'all', 'last', ints or one list per prompt, not {positions!r}")
        if _index(positions) is not None:
            return cls.at(_index(positions))
        positions = positions.tolist() if isinstance(positions, torch.Tensor) else list(positions)
        if positions and all(isinstance(p, (list, tuple)) for p in positions):
            return cls.per_prompt(positions)
        return cls("list", tuple(positions))

    def resolve(self, n_pos: int, n_prompts: int = 1) -> list[list[int]]:
        """One list of non-negative positions per prompt (checked against ``n_pos``)."""
        if self.kind == "all":
            rows = [list(range(n_pos))] * n_prompts
        elif self.kind == "last":
            rows = [[n_pos - 1]] * n_prompts
        elif self.kind == "list":
            rows = [list(self.index)] * n_prompts
        else:
            if len(self.index) != n_prompts:
                raise UncoverError(f"per-prompt positions give {len(self.index)} lists for {n_prompts} prompts; "
                                   "pass one list per prompt")
            rows = [list(p) for p in self.index]
        bad = sorted({p for row in rows for p in row if not -n_pos <= p < n_pos})
        if bad:
            raise UncoverError(f"positions {bad} out of range for {n_pos} tokens; use 0..{n_pos - 1} or negatives "
                               "counting from the end")
        return [[p % n_pos for p in row] for row in rows]

    def to_dict(self) -> dict:
        index = [list(p) for p in self.index] if self.kind == "per_prompt" else list(self.index)
        return {"kind": self.kind, "index": index}

    @classmethod
    def from_dict(cls, d: dict) -> "Positions":
        return cls(d["kind"], tuple(d.get("index", ())))
