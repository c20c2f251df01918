"""The one door to a network: load a model, name its activations, read and change them."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from uncover.core.cache import ActivationCache
    from uncover.core.hooks import HookPoint
    from uncover.core.loading import load
    from uncover.core.model import Model

# Imported on first use, so light submodules (zoo, progress) load without torch and transformers.
_NAMES = {
    "ActivationCache": "uncover.core.cache",
    "HookPoint": "uncover.core.hooks",
    "load": "uncover.core.loading",
    "Model": "uncover.core.model",
}


def __getattr__(name: str):
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'uncover.core' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_NAMES))


__all__ = ["ActivationCache", "HookPoint", "Model", "load"]
