"""One probe forward at load: what each module of a causal LM reads and writes, in call order.

Structural adapters are built from this record instead of from module names: a block's attention output
is the tensor that, added to the residual, gives the next residual; hook_q is the module output that
equals the query handed to the attention function; and so on. The probe runs a short sequence once, in
eager attention, under no_grad; nothing is kept afterwards but module references and shapes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

PROBE = "uncover_probe"
_CALLS: list[tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]] = []


def _probe_attention(module: nn.Module, query, key, value, attention_mask, **kwargs):
    import sys

    _CALLS.append((module, query.detach(), key.detach(), value.detach()))
    eager = sys.modules[type(module).__module__].eager_attention_forward
    return eager(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(PROBE, _probe_attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(PROBE, eager_mask)


def first_tensor(x: Any) -> torch.Tensor | None:
    """The first tensor of a module's output (tuples, lists and ModelOutput-like objects)."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (tuple, list)) and x:
        return first_tensor(x[0])
    return None


@dataclass
class Call:
    order: int
    input: torch.Tensor | None
    output: torch.Tensor | None
    count: int = 1
    listed: bool = False  # the module returned a list (GPT-1's blocks), not a tensor or tuple
    mutated: bool = False  # the block changed the returned tensor in place later (Falcon: mlp_output += ...)
    ref: torch.Tensor | None = None
    # a bias vector the module returns beside its output for the caller to add (GPT-NeoX-Japanese's attention)
    bias: torch.Tensor | None = None


@dataclass
class Record:
    """calls: module -> its first call; attention: attention module -> (query, key, value) [b, h, pos, d]."""

    calls: dict[nn.Module, Call] = field(default_factory=dict)
    attention: dict[nn.Module, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    # module -> the first [pos, pos] softmax computed inside it (attention written out by hand: Bloom, MPT,
    # GPT-Neo, XGLM), as torch.nn.functional.softmax returned it ([1, H, q, k] or [H, q, k])
    softmax: dict[nn.Module, torch.Tensor] = field(default_factory=dict)
    pos: int = 0


def probe(hf: nn.Module, modules: list[nn.Module], vocab: int, pos: int) -> Record:
    """Run ``pos`` token ids through ``hf`` once and record the listed modules' first input and output."""
    rec = Record(pos=pos)
    counter = [0]
    handles = []

    running: list[nn.Module] = []
    softmax = torch.nn.functional.softmax

    def recording_softmax(*args, **kwargs):
        out = softmax(*args, **kwargs)
        if running and out.dim() in (3, 4) and out.shape[-2:] == (pos, pos):
            for m in running:
                rec.softmax.setdefault(m, out.detach().clone())
        return out

    def pre(module, args, kwargs):
        running.append(module)
        x = args[0] if args else kwargs.get("hidden_states", next(iter(kwargs.values()), None))
        if module in rec.calls:
            rec.calls[module].count += 1
        else:
            counter[0] += 1
            # clones: blocks may change a tensor in place after a module returned it (Falcon's mlp_output += ...)
            rec.calls[module] = Call(counter[0], x.detach().clone() if isinstance(x, torch.Tensor) else None, None)

    def post(module, args, kwargs, output):
        if running and running[-1] is module:
            running.pop()
        call = rec.calls[module]
        if call.count == 1 and call.output is None:
            out = first_tensor(output)
            call.output = None if out is None else out.detach().clone()
            call.ref = None if out is None else out.detach()
            call.listed = isinstance(output, list)
            last = output[-1] if isinstance(output, tuple) and len(output) > 1 else None
            if isinstance(last, torch.Tensor) and last.dim() == 1 and out is not None and last.shape[0] == out.shape[-1]:
                call.bias = last.detach().clone()

    for m in dict.fromkeys(modules):
        handles.append(m.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(m.register_forward_hook(post, with_kwargs=True))
    config = hf.config
    old = config._attn_implementation
    device = hf.get_input_embeddings().weight.device
    ids = (torch.arange(pos, device=device) * 7 + 3) % max(vocab - 1, 1)
    _CALLS.clear()
    try:
        config._attn_implementation = PROBE
        torch.nn.functional.softmax = recording_softmax
        with torch.no_grad():
            hf(input_ids=ids[None], use_cache=False)
    finally:
        torch.nn.functional.softmax = softmax
        config._attn_implementation = old
        for h in handles:
            h.remove()
    for call in rec.calls.values():
        call.mutated = call.ref is not None and not torch.equal(call.ref, call.output)
        call.ref = None
    for module, q, k, v in _CALLS:
        rec.attention.setdefault(module, (q, k, v))
    _CALLS.clear()
    return rec
