"""uncover: how large language models work, measured.

    import uncover as uc
    model = uc.load("smollm2-135m")
    logits, cache = model.run_with_cache("The Eiffel Tower is in", names="blocks.*.hook_resid_post")
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from uncover.errors import UncoverError

if TYPE_CHECKING:
    from uncover.core import ActivationCache, HookPoint, Model, interventions, load

__version__ = "0.1.0"

# The core names, imported on first use (they bring torch and transformers), so `import uncover` and the
# command line's --help stay fast: uc.load, uc.Model, uc.interventions, ...
_CORE = {
    "ActivationCache": "uncover.core.cache",
    "HookPoint": "uncover.core.hooks",
    "Model": "uncover.core.model",
    "load": "uncover.core.loading",
    "memory_budget": "uncover.core.budget",
    "set_memory_budget": "uncover.core.budget",
}

# Technique modules, imported on first use: uc.heads.scores(...), uc.patching.activation_patching(...)
_LAZY = {
    "heads": "uncover.components.heads",
    "patching": "uncover.components.patching",
    "lens": "uncover.components.lens",
    "recall": "uncover.components.recall",
    "circuits": "uncover.components.circuits",
    "neurons": "uncover.components.neurons",
    "sae": "uncover.features.sae",
    "superposition": "uncover.features.superposition",
    "probes": "uncover.representations.probes",
    "steering": "uncover.representations.steering",
    "reft": "uncover.representations.reft",
    "directions": "uncover.representations.directions",
    "function_vectors": "uncover.representations.function_vectors",
    "iti": "uncover.representations.iti",
    "activations": "uncover.representations.activations",
    "editing": "uncover.applications.editing",
    "pruning": "uncover.applications.pruning",
    "alignment": "uncover.applications.alignment",
    "dynamics": "uncover.dynamics",
}


def __getattr__(name: str):
    if name in _CORE:
        value = getattr(importlib.import_module(_CORE[name]), name)
    elif name == "interventions":
        value = importlib.import_module("uncover.core.interventions")
    elif name in _LAZY:
        return importlib.import_module(_LAZY[name])
    else:
        raise AttributeError(f"module 'uncover' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_CORE) | {"interventions"})


__all__ = ["ActivationCache", "HookPoint", "Model", "UncoverError", "interventions", "load", "__version__"]
