"""Second moment of MLP keys, C = E[k k^T], from a text corpus; computed once per model and layer.

The key k is the input of the MLP's output projection (``blocks.{l}.mlp.hook_post``, [d_mlp]).
ROME and MEMIT use C to spread an edit over key directions the model rarely uses. C comes from natural
English text by default (``SOURCE``: Shakespeare's works, offline; Meng et al. used Wikipedia), since the
edited prompts are English: on gemma3-270m, keys from CPython's documentation (the corpus default) leave
u = C^-1 k* overlapping other subjects' keys about 4x more (90th percentile of |u.k / u.k*| at layer 3:
0.67 vs 0.16) and ROME's neighbourhood score at 23% instead of 70%. Results are cached
under ``$UNCOVER_CACHE/editing/<model>/`` with the number of tokens used; a cached estimate from at
least as many tokens is reused.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch

from uncover.core.results import Progress, Result, no_progress
from uncover.errors import UncoverError

if TYPE_CHECKING:
    from uncover.core.model import Model


SOURCE = "shakespeare"  # the corpus C is estimated on (a name in uncover.data.corpus.SOURCES)


@dataclass
class KeyCovariance(Result):
    """mom2: E[k k^T] over corpus tokens, [d_mlp, d_mlp] float64; n_tokens: how many keys it averages."""

    layer: int
    mom2: torch.Tensor
    n_tokens: int
    source: str


def cache_dir(model: "Model") -> Path:
    from uncover.core.loading import cache_root

    return cache_root() / "editing" / re.sub(r"[^A-Za-z0-9._-]+", "_", str(model.name))


@torch.no_grad()
def compute_key_covariance(
    model: "Model",
    layers: Sequence[int],
    n_tokens: int = 20_000,
    seq_len: int = 128,
    batch_size: int = 8,
    seed: int = 0,
    source: str | None = SOURCE,
    progress: Progress = no_progress,
) -> dict[int, KeyCovariance]:
    """E[k k^T] of MLP keys at each layer over about ``n_tokens`` corpus tokens (no caching).

    Rows come from ``uncover.data.corpus.corpus_tokens`` (``source``: None = the corpus module's default).
    The forward stops after the last requested layer.
    """
    from uncover.data.corpus import corpus_tokens

    layers = sorted(set(int(l) for l in layers))
    bad = [l for l in layers if not 0 <= l < model.cfg.n_layers]
    if bad:
        raise UncoverError(f"layers {bad} out of range: {model.name} has layers 0..{model.cfg.n_layers - 1}")
    n_seqs = max(1, -(-n_tokens // seq_len))
    tokens = corpus_tokens(model, n_seqs, seq_len, seed=seed, source=source)
    d_mlp = model.cfg.d_mlp
    sums = {l: torch.zeros(d_mlp, d_mlp, dtype=torch.float64) for l in layers}
    seen = 0

    def grab(x: torch.Tensor, hook) -> None:
        k = x.reshape(-1, d_mlp).double().cpu()
        sums[hook.layer].add_(k.T @ k)

    hooks = [(f"blocks.{l}.mlp.hook_post", grab) for l in layers]
    with model.hooks(hooks):
        for start in progress(range(0, n_seqs, batch_size), "key covariance"):
            batch = tokens[start:start + batch_size].to(model.device)
            model(batch, stop_at_layer=layers[-1] + 1)  # no layer after the last requested one runs
            seen += batch.numel()
    label = "offline corpus" if source is None else str(source)
    return {l: KeyCovariance(l, sums[l] / seen, seen, label) for l in layers}


def key_covariance(
    model: "Model",
    layers: int | Sequence[int],
    n_tokens: int = 20_000,
    cache: bool = True,
    source: str | None = SOURCE,
    progress: Progress = no_progress,
    **kwargs,
) -> dict[int, KeyCovariance]:
    """Key second moments per layer, from the disk cache when one with >= ``n_tokens`` tokens exists.

    source: corpus for ``corpus_tokens`` (default ``SOURCE``; None: the corpus default); part of the cache key.
    kwargs go to ``compute_key_covariance`` (seq_len, batch_size, seed).
    """
    layers = [layers] if isinstance(layers, int) else list(layers)
    if n_tokens < 1:
        raise UncoverError(f"n_tokens must be positive, got {n_tokens}")
    folder = cache_dir(model)
    tag = "default" if source is None else hashlib.sha256(str(source).encode()).hexdigest()[:12]
    found: dict[int, KeyCovariance] = {}
    if cache:
        for l in layers:
            best = _cached(folder, tag, l, n_tokens)
            if best is not None:
                found[l] = KeyCovariance.load(best)
    missing = [l for l in layers if l not in found]
    if missing:
        fresh = compute_key_covariance(model, missing, n_tokens, source=source, progress=progress, **kwargs)
        if cache:
            folder.mkdir(parents=True, exist_ok=True)
            for l, cov in fresh.items():
                final = folder / f"cov-{tag}-L{l}-n{cov.n_tokens}"
                tmp = cov.save(folder / f".tmp-{os.getpid()}-{tag}-L{l}")
                if final.exists():  # another process cached the same one meanwhile
                    shutil.rmtree(tmp)
                else:
                    tmp.replace(final)
        found.update(fresh)
    return {l: found[l] for l in layers}


def _cached(folder: Path, tag: str, layer: int, n_tokens: int) -> Path | None:
    """The cached result folder for ``layer`` with the fewest tokens that still has >= n_tokens."""
    best: tuple[int, Path] | None = None
    for path in folder.glob(f"cov-{tag}-L{layer}-n*"):
        if not path.is_dir() or not path.name.split("-n")[-1].isdigit():
            continue  # not a result folder (e.g. a file from an older uncover)
        n = int(path.name.split("-n")[-1])
        if n >= n_tokens and (best is None or n < best[0]):
            best = (n, path)
    return None if best is None else best[1]
