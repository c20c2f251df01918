"""Fake CUDA on a CPU-only build: tensors that say ``cuda:0`` and raise on any cpu/cuda mix.

``torch._subclasses.fake_tensor.FakeTensorMode`` propagates devices and shapes without computing, and
raises ``FakeTensorDeviceMismatchError`` when an op mixes a cuda tensor with a (non-scalar) cpu one, as
a real GPU run would. Two gaps of a CPU build are bridged here, inside the ``fake_cuda()`` block only:

* Python indexing (``t[...]`` / ``t[...] = v``) opens a CUDA device guard, which a CPU build lacks; a
  ``TorchFunctionMode`` rewrites it into the aten ops it stands for (select, slice, unsqueeze, index,
  index_put_), which fake tensors support.
* ``t.to("cuda")`` of a cpu tensor (a host-to-device copy, which would initialise CUDA) gives a fresh
  fake cuda tensor (and ``t.cpu()`` of a cuda one a fake cpu tensor) of the same shape and dtype (no autograd link: move data, not parameters; fake a
  module's parameters with ``to_fake_cuda``).
* Other Python bindings that open a device guard (``t.contiguous()``) are retried as their aten op.
* ``module.to("cuda")`` fakes the module's parameters and buffers in place (``to_fake_cuda``).
* Autograd: the engine needs a CUDA device guard for a cuda leaf (it aborts the process), so no fake
  tensor ever requires grad. ``requires_grad_`` is a no-op, ``loss.backward()`` gives every parameter
  (float) faked by ``to_fake_cuda`` a zero ``.grad`` (so optimiser steps and post-backward code run) and
  ``torch.autograd.grad`` returns zeros. Backward passes themselves are not covered, except custom
  ``autograd.Function`` backwards called directly (``call_function``).
* Reading a value (``float(t)``, ``t.item()``, ``bool(t)``, ``t.tolist()``) needs data a fake tensor does
  not have: it gives a placeholder (1 / ``truth``, True by default; ``tolist`` a list of ones), so code runs on, down the
  branch a true value takes; ``len()`` of a data-dependent size (``nonzero``) is 1 likewise. Results are meaningless; only devices, dtypes and shapes are checked.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch.overrides import TorchFunctionMode
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode, unset_fake_temporarily
from torch.fx.experimental.symbolic_shapes import ShapeEnv


def _index_ops(t: torch.Tensor, key: Any) -> torch.Tensor:
    """``t[key]`` through aten ops (basic and advanced indexing, None, Ellipsis)."""
    key = key if isinstance(key, tuple) else (key,)
    n_real = sum(1 for k in key if k is not None and k is not Ellipsis and not
                 (isinstance(k, torch.Tensor) and k.dtype == torch.bool))
    n_real += sum(k.ndim for k in key if isinstance(k, torch.Tensor) and k.dtype == torch.bool)
    if any(k is Ellipsis for k in key):
        at = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:at] + (slice(None),) * (t.ndim - n_real) + key[at + 1:]
    out, dim, advanced = t, 0, []
    for k in key:
        if k is None:
            out = torch.ops.aten.unsqueeze.default(out, dim)
            advanced.append(None)
            dim += 1
        elif isinstance(k, bool):
            raise NotImplementedError("bool scalar index")
        elif isinstance(k, int):
            out = torch.ops.aten.select.int(out, dim, k)
        elif isinstance(k, slice):
            start, stop, step = k.start, k.stop, k.step or 1
            out = torch.ops.aten.slice.Tensor(out, dim, start, stop, step)
            advanced.append(None)
            dim += 1
        else:
            k = torch.as_tensor(k, device=out.device) if not isinstance(k, torch.Tensor) else k
            advanced.append(k)
            dim += k.ndim if k.dtype == torch.bool else 1
    if any(a is not None for a in advanced):
        out = torch.ops.aten.index.Tensor(out, advanced)
    return out


def _setitem_ops(t: torch.Tensor, key: Any, value: Any) -> None:
    """``t[key] = value`` through aten ops."""
    parts = key if isinstance(key, tuple) else (key,)
    if any(isinstance(k, (torch.Tensor, list)) for k in parts):
        basic = tuple(slice(None) if isinstance(k, (torch.Tensor, list)) else k for k in parts)
        if any(not isinstance(k, slice) or k != slice(None) for k in basic):
            raise NotImplementedError("mixed basic and advanced assignment")
        indices = [torch.as_tensor(k, device=t.device) if isinstance(k, list) else k for k in parts]
        value = value if isinstance(value, torch.Tensor) else torch.tensor(value, dtype=t.dtype, device=t.device)
        torch.ops.aten.index_put_.default(t, indices, value.to(t.dtype) if value.device == t.device else value)
        return
    view = _index_ops(t, key)
    if isinstance(value, torch.Tensor):
        torch.ops.aten.copy_.default(view, value)
    else:
        torch.ops.aten.fill_.Scalar(view, value)


_ALIASES = {"__invert__": "bitwise_not", "__and__": "bitwise_and", "__or__": "bitwise_or",
            "__xor__": "bitwise_xor", "__iand__": "bitwise_and_", "__ior__": "bitwise_or_"}


class _Bridge(TorchFunctionMode):
    def __init__(self, truth: bool = True):
        super().__init__()
        self.truth = truth
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.Tensor.to, torch.Tensor.cuda, torch.Tensor.cpu):
            t = args[0]
            if func is torch.Tensor.cuda:
                device, dtype = torch.device("cuda", 0), None
            elif func is torch.Tensor.cpu:
                device, dtype = torch.device("cpu"), None
            else:
                device, dtype, _, _ = torch._C._nn._parse_to(*args[1:], **kwargs)
            if device is not None and device.type == "cuda" and t.device.type != "cuda":
                return torch.empty(t.shape, dtype=dtype or t.dtype, device="cuda")
            if device is not None and device.type == "cpu" and t.device.type == "cuda":
                return torch.empty(t.shape, dtype=dtype or t.dtype, device="cpu")   # device-to-host copy
            if t.device.type == "cuda" and (device is None or device.type == "cuda"):
                return t if dtype in (None, t.dtype) else torch.ops.aten._to_copy.default(t, dtype=dtype)
        if func is torch.Tensor.__len__ and isinstance(args[0], FakeTensor):
            n = args[0].shape[0]
            return n if isinstance(n, int) else 1   # a data-dependent size (after nonzero / a mask)
        if func is torch.Tensor.requires_grad_:
            return args[0]
        if func is torch.Tensor.__getitem__:
            return _index_ops(*args)
        if func is torch.Tensor.__setitem__:
            return _setitem_ops(*args)
        if func in (torch.Tensor.item, torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__index__):
            t = args[0]
            if isinstance(t, FakeTensor):
                return self.truth if t.dtype == torch.bool else (1.0 if t.is_floating_point() else 1)
        if func is torch.Tensor.__bool__ and isinstance(args[0], FakeTensor):
            return self.truth
        if func is torch.Tensor.tolist and isinstance(args[0], FakeTensor):
            t = args[0]
            return torch.ones(t.shape, dtype=torch.long).tolist() if t.ndim else 1
        try:
            return func(*args, **kwargs)
        except RuntimeError as e:  # a Python binding that opens a CUDA device guard: call the aten op
            name = getattr(func, "__name__", "")
            name = _ALIASES.get(name, name.strip("_") if name.startswith("__") else name)
            op = getattr(torch.ops.aten, name, None)
            if "not linked with support for cuda" not in str(e) or op is None:
                raise
            return op(*args, **kwargs)


def fake(t: torch.Tensor, device: str = "cuda") -> torch.Tensor:
    """A fake copy of ``t`` on ``device`` (call outside the mode or inside ``fake_cuda``)."""
    with unset_fake_temporarily(), torch._C.DisableTorchFunction():
        meta = t.detach().to("meta")
        return FakeTensor(_MODE[-1], meta, torch.device(device, 0) if device == "cuda" else torch.device(device))


def to_fake_cuda(module: torch.nn.Module) -> torch.nn.Module:
    """Replace every parameter and buffer of ``module`` (in place) by a fake cuda tensor (inside ``fake_cuda``)."""
    for m in module.modules():
        for n, p in list(m._parameters.items()):
            if p is not None and not (isinstance(p, FakeTensor) and p.device.type == "cuda"):
                with unset_fake_temporarily(), torch._C.DisableTorchFunction():
                    # never requires_grad: autograd on a cuda leaf needs a CUDA device guard (see above)
                    m._parameters[n] = torch.nn.Parameter(fake(p), requires_grad=False)
                if p.is_floating_point():  # a Parameter made under the mode has lost its requires_grad
                    _TRAINABLE.append(m._parameters[n])
        for n, b in list(m._buffers.items()):
            if b is not None and not (isinstance(b, FakeTensor) and b.device.type == "cuda"):
                m._buffers[n] = fake(b)
    return module


_MODE: list[FakeTensorMode] = []
_SAVED_TO = torch.nn.Module.to
_TRAINABLE: list[torch.Tensor] = []  # faked float parameters: backward() gives them a .grad


def _backward(self: torch.Tensor, *args: Any, **kwargs: Any) -> None:
    for p in _TRAINABLE:
        p.grad = torch.zeros_like(p)


def _module_to(self: torch.nn.Module, *args: Any, **kwargs: Any) -> torch.nn.Module:
    device, dtype, _, _ = torch._C._nn._parse_to(*args, **kwargs)
    if device is not None and device.type == "cuda":
        if dtype is not None:
            raise NotImplementedError("fake Module.to(cuda, dtype): convert the dtype first")
        return to_fake_cuda(self)
    return _SAVED_TO(self, *args, **kwargs)


def _grad(outputs: Any, inputs: Any, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, ...]:
    inputs = [inputs] if isinstance(inputs, torch.Tensor) else list(inputs)
    return tuple(torch.zeros_like(t) for t in inputs)


@contextlib.contextmanager
def fake_cuda(truth: bool = True) -> Iterator[FakeTensorMode]:
    """Within the block, tensors created on "cuda" are fake; mixing them with cpu tensors raises.
    truth: what ``bool(t)`` of a fake tensor gives (False to pass validation checks such as ``if bad.any()``)."""
    # real tensors count as cpu ones; a shape env lets data-dependent sizes (nonzero, masks) stay symbolic
    mode = FakeTensorMode(allow_non_fake_inputs=True, shape_env=ShapeEnv())
    _MODE.append(mode)
    saved = torch.Tensor.backward, torch.autograd.grad
    torch.Tensor.backward, torch.autograd.grad, torch.nn.Module.to = _backward, _grad, _module_to
    try:
        with mode, _Bridge(truth):
            yield mode
    finally:
        torch.Tensor.backward, torch.autograd.grad = saved
        torch.nn.Module.to = _SAVED_TO
        _MODE.pop()
        _TRAINABLE.clear()


class _Ctx:
    """A stand-in for autograd's ctx, to call an ``autograd.Function``'s forward and backward directly."""

    def __init__(self, needs: tuple[bool, ...]):
        self.needs_input_grad = needs
        self.saved_tensors: tuple = ()

    def save_for_backward(self, *tensors: torch.Tensor) -> None:
        self.saved_tensors = tensors


def call_function(fn: type, *inputs: Any) -> tuple[torch.Tensor, tuple]:
    """Run ``fn.forward`` then ``fn.backward`` (with a ones gradient) -> (output, input gradients)."""
    ctx = _Ctx(tuple(isinstance(x, torch.Tensor) and x.is_floating_point() for x in inputs))
    out = fn.forward(ctx, *inputs)
    return out, fn.backward(ctx, torch.ones_like(out))
