"""uncover: how large language models work, measured.

    import uncover as uc
    model = uc.load("smollm2-135m")
    logits, cache = model.run_with_cache("The Eiffel Tower is in", names="blocks.*.hook_resid_post")
"""
from __future__ import annotations

import importlib

from uncover.core import ActivationCache, HookPoint, Model, load
from uncover.core import interventions
from uncover.errors import UncoverError

__version__ = "0.1.0"

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
    if name in _LAZY:
        return importlib.import_module(_LAZY[name])
    raise AttributeError(f"module 'uncover' has no attribute {name!r}")


__all__ = ["ActivationCache", "HookPoint", "Model", "UncoverError", "interventions", "load", "__version__"]
