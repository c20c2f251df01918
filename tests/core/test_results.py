"""The one result folder format and the one progress protocol."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from uncover.core.results import (JSON_FILE, TENSORS_FILE, Progress, Result, RichProgress, no_progress,
                                  show_status)
from uncover.errors import UncoverError


@dataclass
class Inner:
    a: int
    b: tuple


@dataclass
class Child(Result):
    scores: torch.Tensor
    name: str = "x"


@dataclass
class Toy(Result):
    values: torch.Tensor
    meta: dict = field(default_factory=dict)
    array: np.ndarray | None = None
    child: Child | None = None
    inner: Inner | None = None


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, Result) or (hasattr(a, "__dataclass_fields__")):
        return type(a) is type(b) and _equal(vars(a), vars(b))
    return a == b


def test_round_trip_tensors_nested_metadata_and_subresults(tmp_path: Path):
    g = torch.Generator().manual_seed(0)
    r = Toy(values=torch.randn(3, 4, 5, generator=g), array=np.arange(6, dtype=np.int32).reshape(2, 3),
            meta={"layers": [0, 2, 5], "nested": {"ok": True, "x": 1.5, "none": None, "t": torch.ones(2)},
                  "by_layer": {0: "a", 3: "b"}, "tup": (1, "two"), "dtype": torch.bfloat16,
                  "where": Path("a/b")},
            child=Child(scores=torch.arange(4, dtype=torch.bfloat16)), inner=Inner(a=1, b=(2, 3)))
    folder = r.save(tmp_path / "r")
    assert sorted(p.name for p in folder.iterdir()) == sorted([JSON_FILE, TENSORS_FILE])
    doc = json.loads((folder / JSON_FILE).read_text())
    assert doc["class"].endswith(":Toy") and doc["version"] == 1
    back = Result.load(folder)
    assert type(back) is Toy and _equal(back, r)
    assert _equal(Toy.load(folder), r)


def test_load_checks_class_and_folder(tmp_path: Path):
    Child(scores=torch.zeros(2)).save(tmp_path / "c")
    with pytest.raises(UncoverError, match="not a Toy"):
        Toy.load(tmp_path / "c")
    with pytest.raises(UncoverError, match="not a saved uncover result"):
        Result.load(tmp_path / "missing")


def test_unsaveable_field_says_what_to_do(tmp_path: Path):
    with pytest.raises(UncoverError, match="override to_fields"):
        Toy(values=torch.zeros(1), meta={"f": object()}).save(tmp_path / "bad")


def test_saving_does_not_change_the_result(tmp_path: Path):
    t = torch.randn(2, 3).t()  # non-contiguous view
    r = Toy(values=t, meta={"k": [1, 2]})
    r.save(tmp_path / "r")
    assert r.values is t and r.meta == {"k": [1, 2]}


def test_progress_protocol_default_and_rich():
    items = [1, 2, 3]
    assert no_progress(items, "x") is items
    assert isinstance(no_progress, Progress)
    show_status(items, "ignored")  # no-op on plain iterables
    with RichProgress(transient=True) as progress:
        assert isinstance(progress, Progress)
        tracked = progress(iter(items), "counting", total=3)
        seen = []
        for x in tracked:
            show_status(tracked, f"at {x}")
            seen.append(x)
        assert seen == items and not progress.bars.tasks
    alone = RichProgress(transient=True)  # usable without a with-block: shown while iterating
    assert list(alone(range(3), "alone")) == [0, 1, 2] and alone.users == 0
