"""The one engine for many patched / ablated variants of a run per forward, and gradients at hooks.

A *variant* is a list of edits ``(hook name, fn)``. ``run_variants`` repeats the base batch (``n`` rows)
once per variant along the batch axis, and each edit's ``fn(rows, hook) -> rows | None`` sees only its
own variant's rows ``[n, ...]`` of that activation (``hook.ctx["rows"]`` is their slice of the batch).
Each forward

- starts at its earliest edited layer from the base run's cached ``hook_resid_pre`` (earlier layers are
  the base run's), so a variant at layer 20 does not pay for layers 0..19;
- stops at ``stop_at_layer`` when the readout is a residual (``Model.__call__``'s stop_at_layer);
- computes only the last ``logits_to_keep`` positions' logits;
- holds as many variants as ``batch_size`` rows and the ``max_bytes`` memory budget allow.

``attribution`` is the first-order estimate of a patch, (patched - activation) x d metric / d activation at
the base run: one forward and one backward (attribution patching, function-vector head effects).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

from uncover.core.budget import forward_bytes
from uncover.core.hooks import Fn, HookPoint
from uncover.core.results import Progress, no_progress
from uncover.errors import UncoverError

if TYPE_CHECKING:
    from uncover.core.model import Model

Edit = tuple[str, Fn]  # (hook name, fn(rows of this variant, hook) -> replacement rows | None)
Readout = Callable[[Tensor, dict], Any]  # (output rows [n, ...], recorded rows {name: [n, ...]}) -> value
_LAYER = re.compile(r"blocks\.(\d+)\.")


def layer_of(name: str, n_layers: int) -> int | None:
    """The layer a hook name belongs to; None before the first layer (embeddings), the last after it."""
    match = _LAYER.match(name)
    if match:
        return int(match.group(1))
    return None if "embed" in name else n_layers - 1


@dataclass
class BaseRun:
    """The unedited run the variants start from.

    output: logits [n, pos | logits_to_keep, d_vocab] (or the residual with stop_at_layer); cache: the
    requested names plus ``blocks.{l}.hook_resid_pre`` of every layer run; hooks: applied to this run and
    to every variant run (e.g. causal tracing's noise on the embeddings).
    """

    tokens: Tensor
    attention_mask: Tensor | None
    output: Tensor
    cache: Any
    hooks: list = field(default_factory=list)

    def resid_pre(self, layer: int) -> Tensor:
        return self.cache[f"blocks.{layer}.hook_resid_pre"]


@torch.no_grad()
def base_run(model: "Model", tokens: Tensor, attention_mask: Tensor | None = None, hooks: Sequence[Edit] = (),
             names: Sequence[str] = (), logits_to_keep: int = 0, stop_at_layer: int | None = None) -> BaseRun:
    """Run ``tokens`` once with ``hooks``, caching ``names`` and every layer's ``hook_resid_pre``."""
    last = model.cfg.n_layers if stop_at_layer is None else stop_at_layer
    resid = [f"blocks.{l}.hook_resid_pre" for l in range(last)]
    wanted = list(dict.fromkeys(list(names) + resid))
    out, cache = model.run_with_cache(tokens, names=wanted, attention_mask=attention_mask, fwd_hooks=list(hooks),
                                      logits_to_keep=logits_to_keep, stop_at_layer=stop_at_layer)
    return BaseRun(tokens, attention_mask, out, cache, list(hooks))


def rows_per_forward(model: "Model", n_pos: int, batch_size: int | None, max_bytes: int | None,
                     logits_to_keep: int = 0, stop_at_layer: int | None = None) -> int:
    """How many rows (prompts x variants) one forward may hold: ``batch_size``, and the rows whose
    estimated working memory fits ``max_bytes`` (activations of one layer, attention scores, logits; None:
    the memory budget's share for a forward, ``uncover.core.budget.forward_bytes``, if one is set)."""
    rows = batch_size if batch_size is not None else 1 << 30
    max_bytes = max_bytes if max_bytes is not None else forward_bytes(model)
    if max_bytes is not None:
        c = model.cfg
        size = next(model.hf.parameters()).element_size()
        keep = 0 if stop_at_layer is not None else (logits_to_keep or n_pos)
        per_row = size * (n_pos * (6 * c.d_model + 3 * c.d_mlp + 2 * c.n_heads * n_pos) + keep * c.d_vocab)
        rows = min(rows, max_bytes // max(per_row, 1))
    if rows < 1 or rows >= 1 << 30:
        if batch_size is None and max_bytes is None:
            raise UncoverError("pass batch_size (rows per forward) or max_bytes (a memory budget) to run variants")
        rows = max(rows, 1)
    return rows


def _dispatch(slots: list[tuple[int, list[Fn]]], n: int) -> Fn:
    """One hook that runs each variant's edit functions on that variant's rows only."""

    def fn(act: Tensor, hook: HookPoint) -> Tensor | None:
        out = None
        for slot, fns in slots:
            rows = slice(slot * n, (slot + 1) * n)
            hook.ctx["rows"] = rows
            part = act[rows]
            new = part
            for f in fns:
                changed = f(new, hook)
                if changed is not None:
                    new = changed
            if new is not part:
                if act.shape[0] == n:  # one variant holds every row: its rows are the whole batch
                    return new
                if out is None:
                    out = act.clone()
                out[rows] = new
        return out

    return fn


@torch.no_grad()
def run_variants(
    model: "Model",
    base: BaseRun,
    variants: Sequence[Sequence[Edit]],
    readout: Readout,
    hooks: Sequence[Edit] = (),
    record: Sequence[str] = (),
    logits_to_keep: int = 0,
    stop_at_layer: int | None = None,
    batch_size: int | None = 64,
    max_bytes: int | None = None,
    progress: Progress = no_progress,
    description: str = "variants",
) -> list:
    """``readout`` of each variant run, in order: ``base.tokens`` with that variant's edits applied.

    variants: each a list of ``(hook name, fn)`` edits (see the module docstring); an empty list is the
    base run again. hooks: applied to every row of every variant run (before the edits), on top of
    ``base.hooks``; they must leave the layers before a forward's first edited layer as in the base run.
    record: names whose (edited) activations the readout receives, per variant (a forward starts no later
    than their layer). readout(output rows,
    {name: rows}): output is the logits (last ``logits_to_keep`` positions if > 0) or, with
    ``stop_at_layer``, the residual entering that layer. batch_size, max_bytes: rows and estimated bytes
    per forward (see ``rows_per_forward``).
    """
    tokens, mask = base.tokens, base.attention_mask
    n, L = tokens.shape[0], model.cfg.n_layers
    edited = [[layer_of(name, L) for name, _ in v] for v in variants]
    if stop_at_layer is not None:
        late = sorted({l for ls in edited for l in ls if l is not None and l >= stop_at_layer})
        if late:
            raise UncoverError(f"variants edit layers {late}, at or after stop_at_layer={stop_at_layer}; "
                               "stop later or edit earlier layers")
    per_forward = max(1, rows_per_forward(model, tokens.shape[1], batch_size, max_bytes, logits_to_keep,
                                          stop_at_layer) // n)
    order = list(range(len(variants)))
    chunks = [order[i: i + per_forward] for i in range(0, len(order), per_forward)]
    out: list = []
    for chunk in progress(chunks, description):
        k = len(chunk)
        by_name: dict[str, list[tuple[int, list[Fn]]]] = {}
        for slot, v in enumerate(chunk):
            for name, fn in variants[v]:
                slots = by_name.setdefault(name, [])
                if slots and slots[-1][0] == slot:
                    slots[-1][1].append(fn)
                else:
                    slots.append((slot, [fn]))
        recorded: dict[str, Tensor] = {}

        def keep(t: Tensor, hook: HookPoint) -> None:
            recorded[hook.name] = t.clone()

        fwd = [*base.hooks, *hooks, *((name, _dispatch(s, n)) for name, s in by_name.items()),
               *((name, keep) for name in record)]
        layers = [l for v in chunk for l in edited[v]] + [layer_of(name, L) for name in record]
        kwargs: dict[str, Any] = {"logits_to_keep": logits_to_keep, "stop_at_layer": stop_at_layer}
        if layers and None not in layers:
            first = min(layers)
            kwargs.update(start_at_layer=first, resid_pre=base.resid_pre(first).repeat(k, 1, 1))
        big_mask = None if mask is None else mask.repeat(k, 1)
        result = model.run_with_hooks(tokens.repeat(k, 1), fwd_hooks=fwd, attention_mask=big_mask, **kwargs)
        for slot in range(k):
            rows = slice(slot * n, (slot + 1) * n)
            out.append(readout(result[rows], {name: t[rows] for name, t in recorded.items()}))
    return out


def attribution(
    model: "Model",
    tokens: Tensor,
    metric: Callable[[Tensor], Tensor],
    names: Sequence[str],
    patched: Mapping[str, Tensor] | Callable[[str, Tensor], Tensor],
    attention_mask: Tensor | None = None,
    **forward_kwargs: Any,
) -> tuple[float, dict[str, Tensor]]:
    """The first-order effect of patching each named activation: one forward and one backward.

    patched: the activation to patch in, per name (broadcastable to the activation), or a function
    ``(name, activation) -> patched activation``. Returns (metric of the run, {name: (patched -
    activation) * d metric / d activation} elementwise, float32, the activation's shape); sum the entries
    a patch changes to estimate its effect on the metric. forward_kwargs go to ``Model.__call__``.
    """
    names = list(names)
    m, acts, grads = model.grad_cache(tokens, metric, names, attention_mask=attention_mask, **forward_kwargs)
    effects = {}
    for name in names:
        act = acts[name]
        new = patched(name, act) if callable(patched) else patched[name]
        effects[name] = (new.to(act.device).float() - act.float()) * grads[name].float()
    return float(m), effects
