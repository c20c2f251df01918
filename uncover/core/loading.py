"""name -> Model: bundled names, Hugging Face ids or local directories, .gguf files, model objects.

A GGUF file is dequantised once (slow: ~20-30 s for smollm2) and cached as safetensors under
``$UNCOVER_CACHE`` (default ``~/.cache/uncover``). The cache is written to a temporary folder and renamed
into place (atomic), and carries the SHA-256 of its weights, checked on every read; a corrupted cache is
rebuilt.

``device_map`` ("auto" or a dict module name -> device, as in transformers) and ``max_memory`` place a
model too big for one device across several (GPUs, CPU, disk) through accelerate; see ``place``.
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
from uncover.core.zoo import BUNDLED, cache_root
from uncover.errors import UncoverError, closest

log = logging.getLogger("uncover")
DEFAULT_MODEL = "smollm2-135m"
_MANIFEST = "uncover-cache.json"


def load(
    name_or_path: str | os.PathLike | nn.Module = DEFAULT_MODEL,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    tokenizer: Any = None,
    device_map: str | dict[str, Any] | None = None,
    max_memory: dict[Any, int | str] | None = None,
    offload_folder: str | os.PathLike | None = None,
) -> Model:
    """Load a model as an uncover ``Model``.

    name_or_path: a bundled name ("smollm2-135m", "gemma3-270m"), a Hugging Face hub id or local
    directory, a path to a .gguf file, or an instantiated transformers causal LM (pass its tokenizer).
    dtype defaults to float32 (what GGUF dequantises to); device defaults to CPU. A model object given
    with ``dtype``, ``device`` or ``device_map`` is copied before conversion, so the caller's module is left
    as it was.

    device_map: "auto" (fill devices in order within ``max_memory``, then CPU, then disk) or a dict
    module name -> device (0, "cuda:1", "cpu", "disk"), as transformers / accelerate take it. Layers on
    "disk" are stored under ``offload_folder`` (default: a fresh folder under the uncover cache) and loaded
    for their forward. Hooks see their module's device, patched values move to it, caches gather on
    ``model.device`` (the device of the embeddings).
    """
    if device_map is not None and device is not None:
        raise UncoverError("pass device (one device) or device_map (several), not both")
    if device_map is None and max_memory is not None:
        device_map = "auto"
    if device_map is not None:
        _check_placement(device_map, max_memory)
    # from a folder, transformers places the weights as it reads them (no full copy in CPU memory first)
    placement = None if device_map is None else {
        "device_map": device_map, "max_memory": max_memory,
        "offload_folder": str(offload_folder or _mkdir(cache_root() / "offload")), "dtype": dtype or torch.float32}
    if isinstance(name_or_path, nn.Module):
        hf, name = name_or_path, getattr(name_or_path.config, "name_or_path", "") or type(name_or_path).__name__
    else:
        key = str(name_or_path)
        if key in BUNDLED:
            gguf = BUNDLED[key].gguf_path(cache_root())
            hf, tokenizer, name = *_load_gguf(gguf, key, placement), key
        elif key.endswith(".gguf"):
            if not Path(key).is_file():
                raise UncoverError(f"GGUF file not found: {key}")
            hf, tokenizer, name = *_load_gguf(Path(key), Path(key).stem, placement), Path(key).stem
        elif Path(key).is_dir() or "/" in key:
            hf, tokenizer, name = *_load_pretrained(key, placement), key
        else:
            raise UncoverError(
                f"unknown model '{key}'. Bundled models: {', '.join(BUNDLED)}"
                + (f"; closest: {', '.join(closest(key, BUNDLED))}" if closest(key, BUNDLED) else "")
                + ". A Hugging Face id (org/name), a local directory or a .gguf path also work."
            )
    if isinstance(name_or_path, nn.Module) and (dtype is not None or device is not None or device_map is not None):
        hf = copy.deepcopy(hf)  # .to() / dispatch work in place: convert a copy, never the caller's model
    if dtype is not None and getattr(hf, "hf_device_map", None) is None:  # placed folders load in dtype
        hf = hf.to(dtype)
    if device is not None:
        hf = hf.to(device)
    if device_map is not None and getattr(hf, "hf_device_map", None) is None:
        hf = place(hf, device_map, max_memory, offload_folder)
    return Model(hf, tokenizer, name)


def available_devices() -> list[str]:
    """Devices this machine has: "cpu", "disk", and "cuda:i" / "mps" / "xpu:i" where present."""
    out = ["cpu", "disk"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append("mps")
    if hasattr(torch, "xpu") and torch.xpu.is_available():
        out += [f"xpu:{i}" for i in range(torch.xpu.device_count())]
    return out


def _device_label(d: Any) -> str:
    """0 -> "cuda:0", "cuda" -> "cuda:0", torch.device -> its string; "cpu" / "disk" / "meta" as they are."""
    if isinstance(d, bool):
        raise UncoverError(f"device {d!r} in device_map / max_memory is not a device")
    if isinstance(d, int):
        return f"cuda:{d}"
    d = str(d)
    if d in ("cpu", "disk", "meta", "mps"):
        return d
    try:
        dev = torch.device(d)
    except RuntimeError:
        raise UncoverError(f"'{d}' in device_map / max_memory is not a device; this machine has {available_devices()}")
    return f"{dev.type}:{0 if dev.index is None else dev.index}"


def _check_placement(device_map: str | dict[str, Any], max_memory: dict[Any, int | str] | None) -> None:
    """Every device named in device_map / max_memory exists on this machine, else a clear error."""
    if isinstance(device_map, str):
        if device_map not in ("auto", "balanced", "balanced_low_0", "sequential"):
            raise UncoverError(f"device_map must be 'auto', 'balanced', 'balanced_low_0', 'sequential' or a dict "
                               f"module name -> device, not {device_map!r}")
        named = []
    elif isinstance(device_map, dict):
        named = list(device_map.values())
    else:
        raise UncoverError(f"device_map must be 'auto' or a dict module name -> device, not {type(device_map).__name__}")
    named += list((max_memory or {}).keys())
    have = available_devices()
    missing = sorted({_device_label(d) for d in named} - set(have) - {"meta"})
    if missing:
        raise UncoverError(f"device_map / max_memory name {missing}, which this machine does not have; "
                           f"available: {have}")


def place(
    hf: nn.Module, device_map: str | dict[str, Any], max_memory: dict[Any, int | str] | None = None,
    offload_folder: str | os.PathLike | None = None,
) -> nn.Module:
    """Spread ``hf`` (in place) over devices with accelerate: "auto" infers a map within ``max_memory``;
    a dict is used as given. Returns the dispatched module (``hf.hf_device_map`` records the placement)."""
    from accelerate import dispatch_model, infer_auto_device_map

    _check_placement(device_map, max_memory)
    no_split = list(getattr(hf, "_no_split_modules", None) or [])
    if isinstance(device_map, str):
        dtype = next(hf.parameters()).dtype
        device_map = infer_auto_device_map(hf, max_memory=max_memory, no_split_module_classes=no_split, dtype=dtype)
    device_map = dict(device_map)
    offload = None
    if "disk" in device_map.values():
        offload = Path(offload_folder) if offload_folder else Path(
            tempfile.mkdtemp(prefix="offload-", dir=_mkdir(cache_root())))
        offload.mkdir(parents=True, exist_ok=True)
    skip = getattr(hf, "_skip_keys_device_placement", None)
    try:
        hf = dispatch_model(hf, device_map=device_map, offload_dir=offload, skip_keys=skip)
    except (ValueError, KeyError, RuntimeError) as e:
        names = [n for n, _ in hf.named_children()]
        raise UncoverError(f"accelerate could not place the model with device_map {device_map}: {e}. "
                           f"Map module names (e.g. {names} and their children) to devices {available_devices()}")
    hf.hf_device_map = device_map
    return hf


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _load_pretrained(path: str, placement: dict | None = None) -> tuple[nn.Module, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from uncover.core.pruned import pruned_class, pruned_layout

    layout = pruned_layout(path)  # a model saved by uncover's pruning: its family's class at its own sizes
    cls = AutoModelForCausalLM if layout is None else pruned_class(layout["base"])
    try:
        hf = cls.from_pretrained(path, **{"dtype": torch.float32, **(placement or {})})
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


def _load_gguf(gguf: Path, label: str, placement: dict | None = None) -> tuple[nn.Module, Any]:
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
    hf = AutoModelForCausalLM.from_pretrained(folder, **{"dtype": torch.float32, **(placement or {})})
    tok = AutoTokenizer.from_pretrained(folder)
    return hf, tok
