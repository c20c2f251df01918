"""Names and specs every technique shares: ``act_name``, ``Site``, ``Positions`` and one layer check."""
from __future__ import annotations

import operator
from typing import Iterable

from uncover.errors import UncoverError


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
