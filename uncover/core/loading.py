"""name -> Model: bundled names, Hugging Face ids or local directories, .gguf files, model objects.

A GGUF file is dequantised once (slow: ~20-30 s for smollm2) and cached as safetensors under
``$UNCOVER_CACHE`` (default ``~/.cache/uncover``). The cache is written to a temporary folder and renamed
into place (atomic), and carries the SHA-256 of its weights, checked on every read; a corrupted cache is
rebuilt.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from uncover.core.model import Model
from uncover.core.zoo import BUNDLED
from uncover.errors import UncoverError, closest

log = logging.getLogger("uncover")
DEFAULT_MODEL = "smollm2-135m"
_MANIFEST = "uncover-cache.json"


def cache_root() -> Path:
    return Path(os.environ.get("UNCOVER_CACHE", Path.home() / ".cache" / "uncover"))


def load(
    name_or_path: str | os.PathLike | nn.Module = DEFAULT_MODEL,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    tokenizer: Any = None,
) -> Model:
    """Load a model as an uncover ``Model``.

    name_or_path: a bundled name ("smollm2-135m", "gemma3-270m"), a Hugging Face hub id or local
    directory, a path to a .gguf file, or an instantiated transformers causal LM (pass its tokenizer).
    dtype defaults to float32 (what GGUF dequantises to); device defaults to CPU. A model object given
    with ``dtype`` or ``device`` is copied before conversion, so the caller's module is left as it was.
    """
    if isinstance(name_or_path, nn.Module):
        hf, name = name_or_path, getattr(name_or_path.config, "name_or_path", "") or type(name_or_path).__name__
    else:
        key = str(name_or_path)
        if key in BUNDLED:
            gguf = BUNDLED[key].gguf_path(cache_root())
            hf, tokenizer, name = *_load_gguf(gguf, key), key
        elif key.endswith(".gguf"):
            if not Path(key).is_file():
                raise UncoverError(f"GGUF file not found: {key}")
            hf, tokenizer, name = *_load_gguf(Path(key), Path(key).stem), Path(key).stem
        elif Path(key).is_dir() or "/" in key:
            hf, tokenizer, name = *_load_pretrained(key), key
        else:
            raise UncoverError(
                f"unknown model '{key}'. Bundled models: {', '.join(BUNDLED)}"
                + (f"; closest: {', '.join(closest(key, BUNDLED))}" if closest(key, BUNDLED) else "")
                + ". A Hugging Face id (org/name), a local directory or a .gguf path also work."
            )
    if isinstance(name_or_path, nn.Module) and (dtype is not None or device is not None):
        hf = copy.deepcopy(hf)  # .to() works in place: convert a copy, never the caller's model
    if dtype is not None:
        hf = hf.to(dtype)
    if device is not None:
        hf = hf.to(device)
    return Model(hf, tokenizer, name)


def _load_pretrained(path: str) -> tuple[nn.Module, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from uncover.core.pruned import pruned_class, pruned_layout

    layout = pruned_layout(path)  # a model saved by uncover's pruning: its family's class at its own sizes
    cls = AutoModelForCausalLM if layout is None else pruned_class(layout["base"])
    try:
        hf = cls.from_pretrained(path, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(path)
    except OSError as e:
        raise UncoverError(f"could not load '{path}' ({e}). Is it a local model directory or a reachable hub id?")
    return hf, tok


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            h.update(block)
    return h.hexdigest()


def _gguf_key(gguf: Path) -> str:
    """Identifies a GGUF file cheaply: its size and a hash of its first and last MiB."""
    import transformers

    h = hashlib.sha256(f"{gguf.stat().st_size}|{transformers.__version__}".encode())
    with open(gguf, "rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, gguf.stat().st_size - (1 << 20)))
        h.update(f.read())
    return h.hexdigest()[:16]


def dequantised_dir(gguf: Path) -> Path:
    return cache_root() / "dequantised" / f"{gguf.stem}-{_gguf_key(gguf)}"


def _cache_ok(folder: Path) -> bool:
    try:
        manifest = json.loads((folder / _MANIFEST).read_text())
        return all(_sha256(folder / f) == digest for f, digest in manifest["sha256"].items())
    except (OSError, ValueError, KeyError):
        return False


def _load_gguf(gguf: Path, label: str) -> tuple[nn.Module, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = dequantised_dir(gguf)
    if folder.exists() and not _cache_ok(folder):
        log.warning("uncover: cached weights in %s are corrupted; rebuilding them from %s", folder, gguf.name)
        shutil.rmtree(folder, ignore_errors=True)
    if not folder.exists():
        log.info("uncover: dequantising %s once (cached in %s)", gguf.name, folder)
        hf = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        hf.config.quantization_config = None  # the saved copy is plain safetensors, not GGUF
        if hasattr(hf, "hf_quantizer"):
            hf.hf_quantizer = None
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
        try:
            hf.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            weights = sorted(p.name for p in tmp.glob("*.safetensors"))
            (tmp / _MANIFEST).write_text(
                json.dumps({"source": str(gguf), "sha256": {w: _sha256(tmp / w) for w in weights}})
            )
            os.replace(tmp, folder)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not _cache_ok(folder):  # another process may have won the race; otherwise re-raise
                raise
        return hf, tok
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(folder)
    return hf, tok
