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

At the attention call (structural adapters, for blocks whose q / k / v no module outputs: multi-head latent
attention, interleaved rotary embeddings): ``call_site`` hooks read and write the query, key and value handed
to the attention function, as [batch, pos, head, d_head]; edge edits registered with ``call_edits`` replace
some heads' query, key or value there (core/edges.py, ``call_input_site``), and ``capture`` re-runs an
attention module up to its attention call to get the q / k / v a changed input gives.
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


# attention module -> hooks on the tensors handed to its attention function: (kind, fns, point, force_write)
_CALL_HOOKS: "weakref.WeakKeyDictionary[nn.Module, list[tuple]]" = weakref.WeakKeyDictionary()
# attention module -> per-head input edits (kind, edit(query, key, value) -> (query, key, value))
_CALL_EDITS: "weakref.WeakKeyDictionary[nn.Module, list[tuple]]" = weakref.WeakKeyDictionary()


class _Captured(Exception):
    """Raised at the attention call of a re-run (``capture``): the rest of the forward is not needed."""


def _registered(registry: weakref.WeakKeyDictionary, module: nn.Module, entry: tuple) -> Callable[[], None]:
    """Add ``entry`` to ``registry[module]`` and route the module through uncover; returns undo."""
    undo_route = route(module)
    registry.setdefault(module, []).append(entry)

    def undo() -> None:
        entries = registry.get(module, [])
        entries[:] = [e for e in entries if e is not entry]
        if not entries:
            registry.pop(module, None)
        undo_route()

    return undo


def call_hooks(module: nn.Module, kind: str, fns: list[Fn], point: HookPoint, force_write: bool) -> Callable[[], None]:
    """While registered, ``fns`` see (and may replace) the ``kind`` (q, k or v) tensor [batch, pos, head, d_head]
    that ``module`` hands its attention function; returns undo."""
    return _registered(_CALL_HOOKS, module, (kind, list(fns), point, force_write))


def call_edits(module: nn.Module, kind: str, edit: Callable) -> Callable[[], None]:
    """While registered, ``edit(query, key, value) -> (query, key, value, changed heads | None)`` runs at
    ``module``'s attention call
    (tensors [batch, head, pos, d_head]); returns undo. k / v edits of a grouped-query layer expand key and value
    to one head per query head (``expand_kv``)."""
    return _registered(_CALL_EDITS, module, (kind, edit))


def expand_kv(module: nn.Module, key: torch.Tensor, value: torch.Tensor, n_heads: int):
    """Key and value with one head per query head (each query head's KV head), for a per-query-head edit."""
    if key.shape[1] == n_heads:
        return key, value
    n_rep = n_heads // key.shape[1]
    return key.repeat_interleave(n_rep, dim=1), value.repeat_interleave(n_rep, dim=1)


def capture(module: nn.Module, run: Callable[[], object]):
    """(query, key, value) [batch, head, pos, d_head] that ``module`` hands its attention function during
    ``run()`` (a direct call of its forward), which stops there; hooks on its sub-modules do not fire."""
    box: list = []
    saved = [(m, m._forward_hooks, m._forward_pre_hooks) for m in module.modules()]
    for m, _, _ in saved:
        m._forward_hooks, m._forward_pre_hooks = type(m._forward_hooks)(), type(m._forward_pre_hooks)()
    module.__dict__["_uncover_capture"] = box
    try:
        run()
    except _Captured:
        pass
    finally:
        del module.__dict__["_uncover_capture"]
        for m, fwd, pre in saved:
            m._forward_hooks, m._forward_pre_hooks = fwd, pre
    if not box:
        from uncover.errors import UncoverError

        raise UncoverError(f"{type(module).__name__} did not reach its attention function when re-run")
    return box[0]


def rerun_to(module: nn.Module, stop: nn.Module, replace: dict, run: Callable[[], object]) -> torch.Tensor:
    """The first input of ``stop`` (a sub-module of ``module``) during ``run()`` (a direct call of ``module``'s
    forward), which stops there; sub-modules in ``replace`` return the given output instead of their own, and
    no other hook on the sub-modules fires."""
    box: list = []
    saved = [(m, m._forward_hooks, m._forward_pre_hooks) for m in module.modules()]
    for m, _, _ in saved:
        m._forward_hooks, m._forward_pre_hooks = type(m._forward_hooks)(), type(m._forward_pre_hooks)()
    handles = [m.register_forward_hook(lambda mod, args, out, new=new: new) for m, new in replace.items()]

    def grab(mod, args):
        box.append(args[0])
        raise _Captured

    handles.append(stop.register_forward_pre_hook(grab))
    try:
        run()
    except _Captured:
        pass
    finally:
        for h in handles:
            h.remove()
        for m, fwd, pre in saved:
            m._forward_hooks, m._forward_pre_hooks = fwd, pre
    if not box:
        from uncover.errors import UncoverError

        raise UncoverError(f"{type(module).__name__} did not reach {type(stop).__name__} when re-run")
    return box[0]


def _at_call(module: nn.Module, query, key, value):
    """The call-level edits and hooks of ``module`` on (query, key, value): q edits (and k / v edits that need
    no extra heads), then the hooks, then grouped-query k / v edits (hook_k / hook_v show the KV heads)."""
    edits = _CALL_EDITS.get(module, [])
    n_heads = query.shape[1]
    late = [e for kind, e in edits if kind != "q" and key.shape[1] < n_heads]
    for kind, edit in edits:
        if kind == "q" or key.shape[1] == n_heads:
            query, key, value, _ = edit(query, key, value)
    for kind, fns, point, force_write in list(_CALL_HOOKS.get(module, [])):
        t = {"q": query, "k": key, "v": value}[kind].transpose(1, 2)
        new = _apply(fns, t, point)
        if new is not t or force_write:
            new = new.transpose(1, 2)
            query, key, value = (new if kind == "q" else query, new if kind == "k" else key,
                                 new if kind == "v" else value)
    shared = (key, value)
    changed: list[torch.Tensor] = []
    for edit in late:
        query, key, value, heads = edit(query, key, value)
        if heads is not None:
            changed.append(heads)
    spliced = (shared, torch.cat(changed).unique()) if changed else None
    return query, key, value, spliced


def _uncover_attention(module: nn.Module, query, key, value, attention_mask, **kwargs):
    box = module.__dict__.get("_uncover_capture")
    if box is not None:
        box.append((query, key, value))
        raise _Captured
    n_kv = key.shape[1]
    spliced = None
    if module in _CALL_EDITS or module in _CALL_HOOKS:
        query, key, value, spliced = _at_call(module, query, key, value)
        inner = getattr(module.config, "_uncover_inner", "eager")
        if spliced is not None and inner != "eager" and not _PATTERN_HOOKS.get(module):
            # grouped-query k / v edits of some query heads: every other head keeps the output of the model's
            # own kernel on the shared KV heads (a kernel on expanded heads may round differently)
            (k0, v0), heads = spliced
            out, weights = ALL_ATTENTION_FUNCTIONS[inner](module, query, k0, v0, attention_mask, **kwargs)
            groups = module.num_key_value_groups
            module.num_key_value_groups = 1
            try:
                mine, _ = ALL_ATTENTION_FUNCTIONS[inner](module, query, key, value, attention_mask, **kwargs)
            finally:
                module.num_key_value_groups = groups
            return out.index_copy(2, heads, mine.index_select(2, heads)), weights
    expanded = key.shape[1] != n_kv
    carry = getattr(module, "_uncover_carry", None)
    k_extra, v_extra = (carry.pop("k", None), carry.pop("v", None)) if carry else (None, None)
    groups = getattr(module, "num_key_value_groups", None)
    if k_extra is not None or v_extra is not None:
        key = _per_query_head(key, k_extra, query.shape[1])
        value = _per_query_head(value, v_extra, query.shape[1])
        module.num_key_value_groups = 1
    elif expanded and groups is not None:
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


# ---- attention written out by hand (no transformers attention interface: Bloom, MPT, GPT-Neo, XGLM) --------
# hook_pattern there is the first softmax the module computes in its forward: while a pattern hook is on such a
# module, torch.nn.functional.softmax is wrapped (only then, and it passes through outside those modules).
_INLINE: "weakref.WeakKeyDictionary[nn.Module, list[tuple[list[Fn], HookPoint]]]" = weakref.WeakKeyDictionary()
_RUNNING: list[dict] = []  # the hooked modules whose forward is running, innermost last
_SOFTMAX: dict = {}  # the original softmax while wrapped, and how many modules hold the wrap


def _inline_softmax(*args, **kwargs):
    out = _SOFTMAX["original"](*args, **kwargs)
    if not _RUNNING:
        return out
    frame = _RUNNING[-1]
    b = frame["batch"]
    if frame["done"] or out.dim() not in (3, 4) or out.shape[0] % b:
        return out
    frame["done"] = True
    t = out.view(b, -1, *out.shape[-2:])  # [batch, head, query, key] ([batch * head, q, k] in XGLM)
    new = t
    for fns, point in _INLINE.get(frame["module"], []):
        new = _apply(fns, new, point)
    return out if new is t else new.reshape(out.shape)


def inline_pattern_hooks(module: nn.Module, fns: list[Fn], point: HookPoint) -> Callable[[], None]:
    """While registered, ``fns`` see (and may replace) the pattern [batch, head, query, key] that ``module``'s
    own softmax computes; the module is routed through uncover so that code with an sdpa branch takes its
    softmax one. Returns undo."""
    entry = (list(fns), point)
    first = module not in _INLINE
    _INLINE.setdefault(module, []).append(entry)
    handles = []
    if first:
        def enter(m, args, kwargs):
            x = args[0] if args else kwargs["hidden_states"]
            _RUNNING.append({"module": m, "batch": x.shape[0], "done": False})

        def leave(m, args, output):
            if _RUNNING and _RUNNING[-1]["module"] is m:
                _RUNNING.pop()

        handles = [module.register_forward_pre_hook(enter, with_kwargs=True),
                   module.register_forward_hook(leave, always_call=True)]
        module.__dict__["_uncover_inline_handles"] = handles
    if not _SOFTMAX:
        _SOFTMAX["original"] = torch.nn.functional.softmax
        _SOFTMAX["holders"] = 0
        torch.nn.functional.softmax = _inline_softmax
    _SOFTMAX["holders"] += 1
    undo_route = route(module) if hasattr(module, "config") else (lambda: None)  # Falcon: its softmax branch

    def undo() -> None:
        entries = _INLINE.get(module, [])
        entries[:] = [e for e in entries if e is not entry]
        if not entries:
            _INLINE.pop(module, None)
            for h in module.__dict__.pop("_uncover_inline_handles", []):
                h.remove()
        _SOFTMAX["holders"] -= 1
        if _SOFTMAX["holders"] == 0:
            torch.nn.functional.softmax = _SOFTMAX.pop("original")
            _SOFTMAX.clear()
        undo_route()

    return undo
