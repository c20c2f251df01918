"""Hook sites: where a standard hook name lives on a Hugging Face module, and how to read/write it.

A ``HookSite`` says which module to hook, whether the activation is the module's output ("out") or its first
input ("in"), and two small functions: ``read(raw) -> standard tensor`` and ``write(raw, tensor) -> raw``.
Sites that are not one module tensor (the edge-level names of core/edges.py) bring their own ``attach_fn``.
Everything above this file (cache, interventions, gradients) only sees standard tensors.
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn


def _first(raw: Any) -> torch.Tensor:
    return raw[0] if isinstance(raw, tuple) else raw


def _replace_first(raw: Any, t: torch.Tensor) -> Any:
    return (t,) + tuple(raw[1:]) if isinstance(raw, tuple) else t


@dataclass
class HookSite:
    module: nn.Module
    kind: str  # "out": module output; "in": the module's first input
    read: Callable[[torch.Tensor], torch.Tensor] = lambda t: t
    write: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = lambda raw, t: t
    # For sites that are not a real tensor of the forward (resid_mid of a pre-norm block): when written,
    # the change (new - old) is also added to this module's output, so everything downstream sees it.
    compensate: nn.Module | None = None
    # hook_pattern is served by uncover's attention function, not by a module hook.
    pattern_layer: int | None = None
    # Computed only when asked for by name: left out of run_with_cache(names=None) (patterns, edge names).
    on_request: bool = False
    # attach_fn(point, fns, force_write) -> handles: a site that registers its own hooks (core/edges.py).
    attach_fn: Callable[["HookPoint", list, bool], list] | None = None


@dataclass
class HookPoint:
    """What a hook function receives besides the tensor."""

    name: str
    layer: int | None
    ctx: dict = field(default_factory=dict)  # scratch space that lives for one hooks() block


Fn = Callable[[torch.Tensor, HookPoint], "torch.Tensor | None"]


def module_device(module: nn.Module) -> torch.device | None:
    """Where ``module`` computes: accelerate's execution device when it is dispatched (device maps), else
    the device of its first materialised parameter; None for a module without parameters."""
    hook = getattr(module, "_hf_hook", None)
    for h in getattr(hook, "hooks", None) or ([hook] if hook is not None else []):
        d = getattr(h, "execution_device", None)
        if d is not None:
            return torch.device("cuda", d) if isinstance(d, int) else torch.device(d)
    for p in module.parameters():
        if p.device.type != "meta":
            return p.device
    return None


@contextmanager
def onloaded(module: nn.Module) -> Iterator[nn.Module]:
    """While active, the weights of ``module`` (and its children) that accelerate offloaded to CPU / disk
    are loaded on its execution device, so code outside its forward can read them; a no-op otherwise.
    Tensors computed from the weights inside stay valid afterwards."""
    try:
        from accelerate.utils import align_module_device, has_offloaded_params
    except ImportError:  # pragma: no cover - accelerate is a dependency
        yield module
        return
    with ExitStack() as stack:
        for m in module.modules():
            if has_offloaded_params(m):
                stack.enter_context(align_module_device(m))
        yield module


def _apply(fns: list[Fn], t: torch.Tensor, point: HookPoint) -> torch.Tensor:
    """Run hook functions in order; each may return a replacement of the same shape, which is moved to
    the activation's device (a patched value cached on another device of a split model)."""
    from uncover.errors import UncoverError

    for fn in fns:
        out = fn(t, point)
        if out is not None:
            if not isinstance(out, torch.Tensor) or out.shape != t.shape:
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise UncoverError(
                    f"hook function on '{point.name}' returned {shape}, expected shape {tuple(t.shape)}; "
                    "return a tensor of the same shape, or None to leave the activation unchanged"
                )
            t = out if out.device == t.device else out.to(t.device)
    return t


def attach(site: HookSite, point: HookPoint, fns: list[Fn], force_write: bool = False) -> list[Any]:
    """Register torch hooks that run ``fns`` at ``site``; returns the handles to remove.

    force_write: write the read tensor back even when unchanged, so it lies on the autograd path
    (needed for gradients at sites that are views of a module's output).
    """
    if site.attach_fn is not None:
        return site.attach_fn(point, fns, force_write)

    pending: list[torch.Tensor] = []  # resid_mid-style writes waiting to be added downstream
    handles = []
    if site.compensate is not None:
        # Registered up front: torch skips hooks added to a module while it is already running.
        def compensate(module, args, output):
            if not pending:
                return None
            delta = pending.pop()
            return _replace_first(output, _first(output) + delta)

        handles.append(site.compensate.register_forward_hook(compensate, prepend=True))

    def run(raw_t: torch.Tensor) -> torch.Tensor | None:
        t = site.read(raw_t)
        new = _apply(fns, t, point)
        if new is t and not (force_write and t is not raw_t):
            return None
        if site.compensate is not None and new is not t:
            pending.append(new - t)
        return site.write(raw_t, new)

    if site.kind == "out":

        def hook(module, args, output):
            new = run(_first(output))
            return None if new is None else _replace_first(output, new)

        handles.append(site.module.register_forward_hook(hook))
    else:

        def pre_hook(module, args, kwargs):
            # the input may still sit on the previous module's device (accelerate moves it inside the
            # forward): the hook sees it on this module's device
            home = module_device(module)
            if home is not None:
                if args and args[0].device != home:
                    args = (args[0].to(home),) + tuple(args[1:])
                elif not args and kwargs["hidden_states"].device != home:
                    kwargs = {**kwargs, "hidden_states": kwargs["hidden_states"].to(home)}
            if args:
                new = run(args[0])
                return (args, kwargs) if new is None else ((new,) + tuple(args[1:]), kwargs)
            new = run(kwargs["hidden_states"])
            return (args, kwargs) if new is None else (args, {**kwargs, "hidden_states": new})

        handles.append(site.module.register_forward_pre_hook(pre_hook, with_kwargs=True))
    return handles
