"""Collect one activation per text (at a chosen token position) from many layers at once."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch

from uncover.core.results import Progress, no_progress
from uncover.errors import UncoverError

if TYPE_CHECKING:
    from uncover.core.model import Model

Position = "str | int"


def _pick(t: torch.Tensor, mask: torch.Tensor, position: "str | int") -> torch.Tensor:
    """[b, pos, ...] -> [b, ...] at ``position``: "last", "mean" (over real tokens) or an index into
    the unpadded text (negative counts from the end; prompts are left-padded)."""
    if position == "mean":
        w = mask.to(t.dtype).view(*mask.shape, *[1] * (t.ndim - 2))
        return (t * w).sum(1) / w.sum(1)
    if position == "last":
        position = -1
    if not isinstance(position, int):
        raise UncoverError(f"position must be 'last', 'mean' or an int token index, not {position!r}")
    lengths = mask.sum(1)
    seq = mask.shape[1]
    index = seq - lengths + position if position >= 0 else torch.full_like(lengths, seq + position)
    if bool((index < seq - lengths).any()) or bool((index >= seq).any()):
        raise UncoverError(f"position {position} is outside some texts (shortest has {int(lengths.min())} tokens)")
    return t[torch.arange(t.shape[0], device=t.device), index.to(t.device)]


@torch.no_grad()
def collect_activations(
    model: "Model",
    texts: Sequence[str],
    layers: Sequence[int] | None = None,
    site: str = "hook_resid_post",
    position: "str | int" = "last",
    batch_size: int = 32,
    progress: Progress = no_progress,
) -> torch.Tensor:
    """Activations of ``blocks.{l}.{site}`` at one token per text: [len(layers), len(texts), *rest].

    rest is [d_model] for residual sites, [head, d_head] for per-head sites such as ``attn.hook_z``.
    layers: default every layer. position: "last", "mean" or a token index (see ``_pick``).
    Float32 on the CPU.
    """
    if not texts:
        raise UncoverError("no texts given: pass at least one string")
    layers = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    names = [f"blocks.{l}.{site}" for l in layers]
    batches = range(0, len(texts), batch_size)
    batches = progress(batches, f"activations at {len(layers)} layers")
    out: list[torch.Tensor] = []
    for start in batches:
        tokens, mask = model.to_tokens(list(texts[start:start + batch_size]), return_mask=True)
        _, cache = model.run_with_cache(tokens, names=names, attention_mask=mask)
        out.append(torch.stack([_pick(cache[n], mask, position).float().cpu() for n in names]))
    return torch.cat(out, dim=1)
