"""uncover's attention implementation for transformers: attention patterns, and per-query-head keys/values.

Patterns on request: while a pattern hook is active the model switches to this implementation, which runs
the architecture's own eager attention (so numerics match HF's eager path), hands the pattern
[batch, head, query, key] to the hook functions registered on that layer, and, if a hook replaced the
pattern, recomputes the output from the new pattern. Every other forward keeps the fast implementation.

Per-query-head K/V (grouped-query attention with ``hook_k_input`` / ``hook_v_input`` edits, core/edges.py):
the k/v projections then carry, after the layer's KV heads, one extra head per changed query head (rotary
embeddings and k-norms act per head, so they treat the extra heads like the others). ``route(attn)`` points
only that attention module at this function (the model's mask and every other layer are untouched); here
each query head reads its KV head, except the changed ones, which read their own extra head. Without a
pattern hook the layer's usual implementation (e.g. sdpa) then does the attention, so an unchanged forward
is bitwise the plain one.
"""
from __future__ import annotations

import sys
import weakref
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from uncover.core.hooks import Fn, HookPoint, _apply

IMPLEMENTATION = "uncover"
# attention module -> the pattern hook functions active on it (one entry per hooks() block of any Model
# wrapper); kept here rather than as attributes of the caller's modules
_PATTERN_HOOKS: "weakref.WeakKeyDictionary[nn.Module, list[tuple[list[Fn], HookPoint]]]" = weakref.WeakKeyDictionary()


@contextmanager
def pattern_hooks(module: nn.Module, fns: list[Fn], point: HookPoint) -> Iterator[None]:
    """While active, ``fns`` see (and may replace) ``module``'s attention pattern [batch, head, query, key]."""
    entry = (list(fns), point)
    _PATTERN_HOOKS.setdefault(module, []).append(entry)
    try:
        yield
    finally:
        entries = _PATTERN_HOOKS.get(module, [])
        entries[:] = [e for e in entries if e is not entry]
        if not entries:
            _PATTERN_HOOKS.pop(module, None)


def _per_query_head(t: torch.Tensor, extra: torch.Tensor | None, n_heads: int) -> torch.Tensor:
    """[batch, kv_heads (+ len(extra)), pos, d_head] -> [batch, n_heads, pos, d_head]: each query head's KV
    head, except query heads ``extra`` [n], which take the n carried heads in that order."""
    n_kv = t.shape[1] - (0 if extra is None else len(extra))
    full = t[:, :n_kv].repeat_interleave(n_heads // n_kv, dim=1)
    return full if extra is None else full.index_copy(1, extra, t[:, n_kv:])


def _uncover_attention(module: nn.Module, query, key, value, attention_mask, **kwargs):
    carry = getattr(module, "_uncover_carry", None)
    k_extra, v_extra = (carry.pop("k", None), carry.pop("v", None)) if carry else (None, None)
    groups = getattr(module, "num_key_value_groups", None)
    if k_extra is not None or v_extra is not None:
        key = _per_query_head(key, k_extra, query.shape[1])
        value = _per_query_head(value, v_extra, query.shape[1])
        module.num_key_value_groups = 1
    try:
        fns = _PATTERN_HOOKS.get(module)
        inner = getattr(module.config, "_uncover_inner", "eager")
        if not fns and inner != "eager":
            return ALL_ATTENTION_FUNCTIONS[inner](module, query, key, value, attention_mask, **kwargs)
        eager = sys.modules[type(module).__module__].eager_attention_forward
        out, weights = eager(module, query, key, value, attention_mask, **kwargs)
        if fns:
            new = weights
            for entry_fns, point in fns:
                new = _apply(entry_fns, new, point)
            if new is not weights:
                n_rep = query.shape[1] // value.shape[1]  # grouped-query attention: share KV heads
                v = value.repeat_interleave(n_rep, dim=1) if n_rep > 1 else value
                out = torch.matmul(new.to(v.dtype), v).transpose(1, 2).contiguous()
                weights = new
        return out, weights
    finally:
        if groups is not None:
            module.num_key_value_groups = groups


AttentionInterface.register(IMPLEMENTATION, _uncover_attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(IMPLEMENTATION, eager_mask)


@contextmanager
def pattern_implementation(hf: nn.Module) -> Iterator[None]:
    """Switch ``hf`` to the uncover attention implementation for the duration of the block."""
    config = hf.config
    old = config._attn_implementation
    config._attn_implementation = IMPLEMENTATION
    try:
        yield
    finally:
        config._attn_implementation = old


class _RoutedConfig:
    """An attention module's config while it is routed through uncover: the model's config in every field
    except the implementation; ``_uncover_inner`` is the one the model would use (eager in pattern mode)."""

    _attn_implementation = IMPLEMENTATION

    def __init__(self, base) -> None:
        self.__dict__["_base"] = base

    def __getattr__(self, name: str):
        return getattr(self.__dict__["_base"], name)

    @property
    def _uncover_inner(self) -> str:
        impl = self._base._attn_implementation
        return "eager" if impl in (None, "eager", IMPLEMENTATION) else impl


def route(attn: nn.Module) -> Callable[[], None]:
    """Serve this one attention module with uncover's function (its mask stays the model's); returns undo.
    Nested routes of the same module count up, and the last undo puts the model's config back."""
    if isinstance(attn.config, _RoutedConfig):
        attn.__dict__["_uncover_routes"] += 1
    else:
        attn.__dict__["_uncover_routes"] = 1
        attn.config = _RoutedConfig(attn.config)
        attn._uncover_carry = {}

    def undo() -> None:
        attn.__dict__["_uncover_routes"] -= 1
        if attn.__dict__["_uncover_routes"] == 0:
            attn.config = attn.config._base
            del attn._uncover_carry

    return undo
