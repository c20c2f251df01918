"""Ready-made hook functions: ablate (zero / mean / resample), patch, add a vector, block attention.

Each factory returns ``fn(tensor, hook) -> tensor`` for ``model.hooks([(name, fn)])``. ``heads`` index the
head axis of per-head names ([b, pos, head, d_head]; [b, head, q, k] for patterns); ``positions`` index the
position axis (the query axis for patterns). Interventions compose: list several on the same name.
"""
from __future__ import annotations

from typing import Sequence

import torch

from uncover.core.cache import ActivationCache
from uncover.core.hooks import Fn, HookPoint
from uncover.errors import UncoverError

Index = "int | Sequence[int] | torch.Tensor | None"


def _axes(t: torch.Tensor, hook: HookPoint) -> tuple[int, int | None]:
    """(position axis, head axis or None) of a standard activation."""
    if hook.name.endswith("hook_pattern"):
        return 2, 1
    return 1, (2 if t.ndim == 4 else None)


def _selector(t: torch.Tensor, hook: HookPoint, heads: Index, positions: Index) -> torch.Tensor | None:
    """A boolean mask broadcastable to t, True where the intervention applies (None: everywhere)."""
    if heads is None and positions is None:
        return None
    pos_axis, head_axis = _axes(t, hook)
    sel = torch.ones([1] * t.ndim, dtype=torch.bool, device=t.device)
    for axis, index, what in ((pos_axis, positions, "positions"), (head_axis, heads, "heads")):
        if index is None:
            continue
        if axis is None:
            raise UncoverError(f"'{hook.name}' has no head axis; heads= applies to per-head names (hook_z, hook_q, ...)")
        shape = [1] * t.ndim
        shape[axis] = t.shape[axis]
        m = torch.zeros(t.shape[axis], dtype=torch.bool, device=t.device)
        try:
            m[torch.as_tensor(index, device=t.device).long()] = True
        except IndexError:
            raise UncoverError(f"{what}={index} out of range for '{hook.name}' with {t.shape[axis]} along that axis")
        sel = sel & m.view(shape)
    return sel


def _replace(t: torch.Tensor, new: torch.Tensor, hook: HookPoint, heads: Index, positions: Index) -> torch.Tensor:
    sel = _selector(t, hook, heads, positions)
    new = new.to(t.dtype).expand_as(t)
    return new.clone() if sel is None else torch.where(sel, new, t)


def ablate(
    kind: str = "zero",
    heads: Index = None,
    positions: Index = None,
    values: torch.Tensor | None = None,
    seed: int = 0,
) -> Fn:
    """Replace an activation by zero, a mean, or activations resampled from other inputs.

    kind="mean": ``values`` is the mean (from mean_activations), broadcastable to the activation.
    kind="resample": ``values`` are activations of other inputs with the same trailing shape; each row of
    the batch gets a row of ``values`` drawn with ``seed`` (or row i when the batch sizes are equal).
    """
    if kind not in ("zero", "mean", "resample"):
        raise UncoverError(f"ablation kind must be 'zero', 'mean' or 'resample', not {kind!r}")
    if kind != "zero" and values is None:
        raise UncoverError(f"{kind} ablation needs values= (see uncover.core.interventions.mean_activations)")

    def fn(t: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        if kind == "zero":
            new = torch.zeros((), dtype=t.dtype, device=t.device)
        elif kind == "mean":
            new = values.to(t.device)
        else:
            v = values.to(t.device)
            if v.shape[1:] != t.shape[1:]:
                raise UncoverError(f"resample values for '{hook.name}' have shape {tuple(v.shape)}; need [n, *{tuple(t.shape[1:])}]")
            if v.shape[0] != t.shape[0]:
                g = torch.Generator().manual_seed(seed)
                v = v[torch.randint(v.shape[0], (t.shape[0],), generator=g).to(t.device)]
            new = v
        return _replace(t, new, hook, heads, positions)

    return fn


def patch(source: ActivationCache | torch.Tensor, heads: Index = None, positions: Index = None) -> Fn:
    """Replace an activation by the same name's activation from another run (a cache or a tensor)."""

    def fn(t: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        src = source[hook.name] if isinstance(source, ActivationCache) else source
        if src.shape != t.shape:
            raise UncoverError(
                f"cannot patch '{hook.name}': source has shape {tuple(src.shape)}, this run {tuple(t.shape)}; "
                "clean and corrupted prompts must have the same number of tokens"
            )
        return _replace(t, src.to(t.device), hook, heads, positions)

    return fn


def add_vector(vector: torch.Tensor, scale: float = 1.0, positions: Index = None) -> Fn:
    """Add ``scale * vector`` (broadcastable, e.g. [d_model]) at every (or the given) position."""

    def fn(t: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        v = vector.to(t.device, t.dtype)
        if v.shape[-1] != t.shape[-1]:
            raise UncoverError(f"vector of size {v.shape[-1]} cannot be added to '{hook.name}' of width {t.shape[-1]}")
        return _replace(t, t + scale * v, hook, None, positions)

    return fn


def block_attention(blocked: torch.Tensor, query: int = -1) -> Fn:
    """For ``hook_pattern``: the ``query`` position may not attend to the keys where ``blocked`` [batch, key]
    (or [key]) is True; its row is renormalised over the other keys, which equals setting the blocked
    attention logits to -inf (Geva et al. 2023's attention knockout)."""

    def fn(t: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        if not hook.name.endswith("hook_pattern"):
            raise UncoverError(f"block_attention applies to attention patterns (hook_pattern), not '{hook.name}'")
        keep = (~blocked.bool()).to(t.device, t.dtype)
        keep = keep[None, None, :] if keep.ndim == 1 else keep[:, None, :]
        out = t.clone()
        row = out[:, :, query, :] * keep
        out[:, :, query, :] = row / row.sum(-1, keepdim=True).clamp(min=1e-30)
        return out

    return fn


@torch.no_grad()
def mean_activations(
    model, tokens, names, attention_mask: torch.Tensor | None = None, per_position: bool = False
) -> dict[str, torch.Tensor]:
    """Mean of each named activation over a dataset, for mean ablation.

    per_position=False: mean over batch and (unpadded) positions -> the activation's shape without
    [batch, pos]. per_position=True: mean over the batch only -> [pos, ...].
    """
    _, cache = model.run_with_cache(tokens, names=names, attention_mask=attention_mask)
    out = {}
    for name, t in cache.items():
        pos_axis = 2 if name.endswith("hook_pattern") else 1
        if per_position:
            out[name] = t.mean(0)
            continue
        if attention_mask is None:
            out[name] = t.float().mean(dim=(0, pos_axis)).to(t.dtype)
        else:
            shape = [t.shape[0]] + [1] * (t.ndim - 1)
            shape[pos_axis] = t.shape[pos_axis]
            w = attention_mask.to(t.device, torch.float32).view(shape)
            out[name] = ((t.float() * w).sum(dim=(0, pos_axis)) / w.sum(dim=(0, pos_axis))).to(t.dtype)
    return out
