"""The one result format and the one progress protocol every technique uses.

**Result.** A technique returns a dataclass that subclasses :class:`Result`. ``result.save(folder)`` writes
one folder: ``tensors.safetensors`` (every tensor or numpy array found in the fields, at any depth) and
``result.json`` (everything else, with the class's import path and the format version);
``Result.load(folder)`` (or ``SubClass.load(folder)``) rebuilds the right subclass. Fields may hold
tensors, numpy arrays, numbers, strings, None, lists, tuples, dicts (any JSON-able keys), torch dtypes,
paths, other dataclasses and nested Results. A class that keeps state outside its dataclass fields (an
``nn.Module``) overrides :meth:`Result.to_fields` / :meth:`Result.from_fields`.

Axis convention: tensors that have a layer axis put it first (``[layer, ...]``, then position/head as the
technique documents), so results of different techniques line up layer by layer.

**Progress** (defined in :mod:`uncover.core.progress`, which needs no torch; re-exported here). A
long-running function takes ``progress: Progress = no_progress`` and wraps what it loops over:
``for x in progress(items, "what it does", total=None)``. The callable returns the same items,
reporting each as it is consumed; :func:`no_progress` (the default) returns them unchanged.
:class:`RichProgress` is the terminal implementation the CLIs and the report use (one bar per call).
An iterable returned by a progress callable may accept a live status line: :func:`show_status` sets it
when the implementation supports one (RichProgress does) and does nothing otherwise.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from uncover.core.progress import Progress, RichProgress, no_progress, show_status  # noqa: F401 (re-exported)
from uncover.errors import UncoverError

FORMAT = "uncover.result"
FORMAT_VERSION = 1
TENSORS_FILE = "tensors.safetensors"
JSON_FILE = "result.json"

T = TypeVar("T")
R = TypeVar("R", bound="Result")


class Result:
    """Base class of technique results (use with ``@dataclass``); one folder format, see the module doc."""

    def to_fields(self) -> dict[str, Any]:
        """The values that rebuild this result through :meth:`from_fields` (default: the init fields)."""
        if not dataclasses.is_dataclass(self):
            raise TypeError(f"{type(self).__name__} is not a dataclass: override to_fields/from_fields")
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}

    @classmethod
    def from_fields(cls: type[R], fields: dict[str, Any]) -> R:
        """Rebuild a result from what :meth:`to_fields` returned (default: ``cls(**fields)``)."""
        return cls(**fields)

    def save(self, path: str | Path) -> Path:
        """Write this result into folder ``path`` (created if missing); returns the folder."""
        from safetensors.torch import save_file

        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, torch.Tensor] = {}
        doc = {"format": FORMAT, "version": FORMAT_VERSION, "class": _class_path(type(self)),
               "fields": _encode(self.to_fields(), "", tensors)}
        save_file(tensors, str(folder / TENSORS_FILE))
        (folder / JSON_FILE).write_text(json.dumps(doc, indent=1))
        return folder

    @classmethod
    def load(cls: type[R], path: str | Path) -> R:
        """The result saved in folder ``path``, as the subclass that saved it (checked against ``cls``)."""
        from safetensors.torch import load_file

        folder = Path(path)
        if not (folder / JSON_FILE).is_file() or not (folder / TENSORS_FILE).is_file():
            raise UncoverError(f"{folder} is not a saved uncover result: it needs {JSON_FILE} and "
                               f"{TENSORS_FILE} (write one with result.save(folder))")
        doc = json.loads((folder / JSON_FILE).read_text())
        if doc.get("format") != FORMAT or doc.get("version", 0) > FORMAT_VERSION:
            raise UncoverError(f"{folder / JSON_FILE} has format {doc.get('format')!r} version "
                               f"{doc.get('version')!r}; this uncover reads {FORMAT!r} up to version "
                               f"{FORMAT_VERSION} (upgrade uncover to read newer results)")
        klass = _import_class(doc["class"])
        if not (isinstance(klass, type) and issubclass(klass, cls)):
            raise UncoverError(f"{folder} holds a {doc['class']}, not a {cls.__name__}; load it with "
                               f"{getattr(klass, '__name__', doc['class'])}.load or uncover Result.load")
        tensors = load_file(str(folder / TENSORS_FILE))
        return klass.from_fields(_decode(doc["fields"], tensors))


def _class_path(klass: type) -> str:
    return f"{klass.__module__}:{klass.__qualname__}"


def _import_class(path: str) -> type:
    module_name, _, qualname = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise UncoverError(f"saved result names class {path!r}, which this uncover does not have ({e})") from e
    return obj


def _encode(value: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-able form of ``value``; tensors and arrays go to ``tensors`` under their path ``key``."""
    if isinstance(value, torch.Tensor):
        tensors[key] = value.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(value, np.ndarray):
        tensors[key] = torch.from_numpy(np.ascontiguousarray(value)).clone()
        return {"__ndarray__": key}
    if isinstance(value, Result):
        return {"__result__": _class_path(type(value)), "fields": _encode(value.to_fields(), key, tensors)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value) if f.init}
        return {"__dataclass__": _class_path(type(value)), "fields": _encode(fields, key, tensors)}
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: _encode(v, f"{key}.{k}" if key else k, tensors) for k, v in value.items()}
        return {"__items__": [[_encode(k, f"{key}.k{i}", tensors), _encode(v, f"{key}.{i}", tensors)]
                              for i, (k, v) in enumerate(value.items())]}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, f"{key}.{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{key}.{i}", tensors) for i, v in enumerate(value)]
    if isinstance(value, torch.dtype):
        return {"__dtype__": str(value).removeprefix("torch.")}
    if isinstance(value, Path):
        return {"__path__": str(value)}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise UncoverError(f"cannot save field {key!r} of type {type(value).__name__}: results hold tensors, "
                       "arrays, numbers, strings, lists, dicts and dataclasses (override to_fields)")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__ndarray__" in value:
        return tensors[value["__ndarray__"]].numpy()
    if "__result__" in value:
        return _import_class(value["__result__"]).from_fields(_decode(value["fields"], tensors))
    if "__dataclass__" in value:
        return _import_class(value["__dataclass__"])(**_decode(value["fields"], tensors))
    if "__items__" in value:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in value["__items__"]}
    if "__tuple__" in value:
        return tuple(_decode(v, tensors) for v in value["__tuple__"])
    if "__dtype__" in value:
        return getattr(torch, value["__dtype__"])
    if "__path__" in value:
        return Path(value["__path__"])
    return {k: _decode(v, tensors) for k, v in value.items()}
