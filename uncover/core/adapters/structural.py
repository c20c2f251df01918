"""Adapters for any causal LM, built from what its modules do rather than from their names.

``discover(hf)`` runs one probe forward at load (uncover.core.adapters.probe) and reads off:

- the layer stack: the ModuleList of ``n_layers`` blocks that the forward calls in order;
- per block, the attention and MLP sub-modules, and the modules whose outputs are exactly what is added
  to the residual (after any post-norm, as in Gemma 2 / OLMo 2 sandwich norms): checked numerically,
  ``resid_pre + attn_out (+ mlp_out) == resid_post``; parallel blocks (GPT-J, Falcon, Phi, Cohere) are
  recognised by the MLP reading the same residual as attention;
- ``hook_resid_mid``: the first module whose input is ``resid_pre + attn_out`` (the pre-MLP norm, or the
  MLP itself when the block has no pre-norm there);
- ``hook_q/k/v``: the last module output inside attention that equals the query / key / value handed to the
  attention function (at position 0, where rotary embeddings are the identity). Separate projections,
  QK-norms (OLMo 2, Qwen3, Gemma 3) and fused projections in any of the layouts transformers uses
  ([q | k | v] as in GPT-2, Phi-3, MPT; per head [q k v] as in NeoX, Bloom; per KV group as in Falcon) are
  found the same way. Where no module outputs one (multi-head latent attention, DeepSeek V2/V3: the key
  concatenates two tensors; interleaved rotary embeddings), it is read where the attention function
  receives it (core/edges.py ``call_site``: after decompression and rotary), and the head inputs of such
  blocks re-run the attention module for a changed head (``call_input_site``);
- attention written out by hand (Bloom, MPT, GPT-Neo, XGLM: no transformers attention interface): the
  probe records the softmax computed inside the attention module (the pattern P); ``hook_v`` is the module
  output with ``z = P v``, ``hook_q`` / ``hook_k`` the slices before it of the same fused projection, or
  the separate projections with ``softmax(c q k^T + mask) = P``; ``hook_pattern`` is served at that softmax
  (core/attention.py ``inline_pattern_hooks``); where such a block shares KV heads in a fused projection
  with no room for more (Falcon), ``hook_k_input`` / ``hook_v_input`` re-run the attention with a changed
  head's KV slot replaced (core/edges.py ``rerun_kv_input_site``);
- residual scales: ``resid_post = resid_pre + c_a * attn_out + c_m * mlp_out`` with c from the config
  (``residual_multiplier``) or fitted to the probe and snapped to the block's own constant (MiniCPM's
  scale_depth / sqrt(n_layers)); ``hook_attn_out`` / ``hook_mlp_out`` are the scaled outputs; an attention
  that returns its output bias beside its output for the block to add (GPT-NeoX-Japanese) has
  ``hook_attn_out = out + bias``;
- ``hook_z``: the input of the attention's output projection;
- ``mlp.hook_pre`` / ``mlp.hook_post``: the pre-activation (gate projection when gated) and the input of the
  down projection; mixture-of-experts MLPs have neither but ``mlp.hook_router`` (the router logits,
  read-only, ``[batch, pos, n_experts]``) and ``hook_mlp_out`` is the block's MoE output.

Whatever cannot be found is left out and listed in ``adapter.missing``; blocks that cannot be decomposed
at all (state-space and hybrid models) get the residual-stream level (``ResidualAdapter``).
"""
from __future__ import annotations

import functools
import inspect
import re
from dataclasses import dataclass, field

import torch
from torch import nn

from uncover.core.adapters.base import Adapter, ModelConfig, _kv_site, _merge_heads, _split_heads
from uncover.core.adapters.probe import Record, probe
from uncover.core import edges
from uncover.core.hooks import HookPoint, HookSite, _apply, _first, attach
from uncover.errors import UncoverError

_ATTN = re.compile(r"attention|attn", re.I)
_MLP = re.compile(r"mlp|feedforward|feed_forward|ffn|moe|expert", re.I)
_MOE = re.compile(r"moe|expert|sparse", re.I)
_NORM = re.compile(r"norm", re.I)
_GATE = re.compile(r"gate|w1$|wi_0", re.I)


def _cfg(c, *names, default=None):
    for n in names:
        v = getattr(c, n, None)
        if v is not None:
            return v
    return default


def _close(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    if a is None or b is None or a.shape != b.shape:
        return False
    a, b = a.float(), b.float()
    return bool(torch.allclose(a, b, rtol=1e-4, atol=1e-5 * (1 + float(b.abs().max()))))


def _close_scaled(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape:
        return False
    a, b = a.float(), b.float()
    c = float((a * b).sum() / (a * a).sum().clamp(min=1e-30))
    return c != 0.0 and _close(a * c, b)


def _linear_weight(m: nn.Module) -> torch.Tensor:
    """The weight as [out, in] (transformers' Conv1D stores [in, out])."""
    return m.weight.T if type(m).__name__ == "Conv1D" else m.weight


# ---- hook-site layouts -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """Where a per-head tensor [.., X, d] lives in a module output.

    kind "flat": output [.., F] viewed as [.., G, F / G]; the target is columns [off, off + X/G * d) of each
    group (G = 1: one slice; G = X: per-head, NeoX style; G = n_kv_heads: Falcon's grouped layout).
    kind "bphd": output is already [.., pos, X, d]; "bhpd": [.., X, pos, d] (per-head norms).
    A separate projection reads its first X heads and keeps any carried extra heads on write (core/edges.py).
    """

    kind: str
    X: int
    d: int
    G: int = 1
    off: int = 0
    separate: bool = False  # the whole output is this tensor (a q, k or v projection of its own)

    def site(self, module: nn.Module) -> HookSite:
        X, d, G, off = self.X, self.d, self.G, self.off
        if self.kind == "bphd":
            return HookSite(module, "out")
        if self.kind == "bhpd":
            return HookSite(module, "out", lambda t: t.transpose(1, 2), lambda raw, t: t.transpose(1, 2))
        w = X // G * d
        if self.separate:
            return _kv_site(module, X, d)

        def read(raw: torch.Tensor) -> torch.Tensor:
            g = raw.view(*raw.shape[:-1], G, raw.shape[-1] // G)[..., off : off + w]
            return g.reshape(*raw.shape[:-1], X, d)

        def write(raw: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            new = raw.clone()
            new.view(*raw.shape[:-1], G, raw.shape[-1] // G)[..., off : off + w] = t.reshape(*t.shape[:-2], G, w)
            return new

        return HookSite(module, "out", read, write)

    def weight(self, module: nn.Module, d_model: int) -> torch.Tensor:
        """[X, d_model, d] rows of a linear module's weight, for kind "flat"."""
        if self.kind != "flat" or not hasattr(module, "weight") or module.weight.ndim != 2:
            raise UncoverError("this head's input is not a linear map of the residual (a per-head norm or a "
                               "low-rank path sits in between); use the hook activations instead of weights")
        w = _linear_weight(module)  # [F, d_model]
        F = w.shape[0]
        rows = w.view(self.G, F // self.G, d_model)[:, self.off : self.off + self.X // self.G * self.d]
        return rows.reshape(self.X, self.d, d_model).transpose(1, 2)


def _find_layout(out: torch.Tensor, target: torch.Tensor, pos: int, all_pos: bool, scaled: bool = False) -> Layout | None:
    """How ``target`` [1, X, pos, d] sits in the module output ``out`` (compared at position 0 unless all_pos).
    scaled: also accept ``target = c * out`` for one scalar c (OPT scales q by 1/sqrt(d_head) in the block)."""
    close = _close_scaled if scaled else _close
    X, d = target.shape[1], target.shape[3]
    want = target[0].transpose(0, 1)  # [pos, X, d]
    if not all_pos:
        want = want[:1]
    n = want.shape[0]
    if out.dim() == 4 and out.shape[0] == 1:
        if out.shape[1:3] == (pos, X) and out.shape[3] == d and close(out[0, :n], want):
            return Layout("bphd", X, d)
        if out.shape[1:3] == (X, pos) and out.shape[3] == d and close(out[0].transpose(0, 1)[:n], want):
            return Layout("bhpd", X, d)
        return None
    if out.dim() != 3 or out.shape[:2] != (1, pos):
        return None
    F = out.shape[-1]
    for G in dict.fromkeys((1, X, target.shape[1] and _kv_groups(X, F, d))):
        if not G or X % G or F % G:
            continue
        width, w = F // G, X // G * d
        rows = out[0, :n].reshape(n, G, width)
        goal = want.reshape(n, G, w)
        for off in range(0, width - w + 1):
            if close(rows[..., off : off + w], goal):
                return Layout("flat", X, d, G, off, separate=G == 1 and F == w)
    return None


def _kv_groups(X: int, F: int, d: int) -> int:
    """A guess at the number of KV groups of a grouped fused layout (F = G * (X/G + 2) * d)."""
    G = (F // d - X) // 2
    return G if G > 0 and X % G == 0 and G * (X // G + 2) * d == F else 0


# ---- the plan of one block ---------------------------------------------------------------------------
@dataclass
class BlockPlan:
    attn: nn.Module
    attn_out: nn.Module
    mlp: nn.Module
    mlp_out: nn.Module
    mid: nn.Module | None  # the module whose first input is resid_mid (None: parallel block)
    attn_norm: nn.Module | None
    mlp_norm: nn.Module | None = None  # a parallel block's pre-MLP norm of its own (reads resid_pre)
    qkv: dict[str, tuple[nn.Module, Layout]] = field(default_factory=dict)
    proj: dict[str, tuple[nn.Module, Layout]] = field(default_factory=dict)  # the linear projections
    o_proj: nn.Module | None = None
    pattern: bool = False
    inline: bool = False  # attention written out by hand: hook_pattern is served at its softmax
    mlp_pre: tuple[nn.Module, int | None] | None = None  # module, and the width of the gate slice if fused
    mlp_down: nn.Module | None = None
    router: nn.Module | None = None
    gated: bool = False
    reads_resid: bool = False  # the attention module's input is resid_pre itself (no pre-norm module)
    attn_scale: float = 1.0  # what the block multiplies attention's (MLP's) output by before adding it
    attn_bias: bool = False  # attn_out returns (out, ..., bias) and the block adds out + bias
    mlp_scale: float = 1.0


class Undecomposable(Exception):
    """A block uncover cannot split into attention + MLP; the message says why."""


def _children_in_order(layer: nn.Module, rec: Record) -> list[nn.Module]:
    kids = [m for m in layer.children() if m in rec.calls]
    return sorted(kids, key=lambda m: rec.calls[m].order)


def _named(layer: nn.Module) -> dict[nn.Module, str]:
    return {m: n for n, m in layer.named_children()}


def _chain_end(start: nn.Module, later: list[nn.Module], rec: Record) -> nn.Module:
    """Follow modules that consume exactly the previous module's output (post-norms, dropout)."""
    cur = start
    for m in later:
        c = rec.calls[m]
        if c.count == 1 and c.input is not None and _same(c.input, rec.calls[cur].output):
            cur = m
    return cur


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    return a is not None and b is not None and (a is b or (a.shape == b.shape and torch.equal(a, b)))


def _plan_block(layer: nn.Module, rec: Record, d_model: int, n_experts: int, residual_scale: float) -> BlockPlan:
    kids = _children_in_order(layer, rec)
    names = _named(layer)
    attn = next((m for m in kids if (_ATTN.search(names[m]) or _ATTN.search(type(m).__name__))
                 and not _NORM.search(type(m).__name__) and not _NORM.search(names[m])
                 and not isinstance(m, (nn.Dropout, nn.Identity))), None)  # ModernBERT's attn_norm: Identity
    if attn is None:
        raise Undecomposable("no attention module in the block")
    mlp = next((m for m in kids if m is not attn and (_MLP.search(names[m]) or _MLP.search(type(m).__name__))
                and not _NORM.search(type(m).__name__) and not _ATTN.search(names[m])), None)
    linears = [m for m in kids if isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D"]
    loose_mlp = mlp is None and len(linears) == 2  # OPT / XGLM / BioGPT: fc1, fc2 directly in the block
    if mlp is None and not loose_mlp:
        raise Undecomposable("no MLP module in the block")
    if any(rec.calls[m].count > 1 for m in (attn, mlp) if m is not None):
        raise Undecomposable("attention or MLP runs more than once per block")
    after_attn = [m for m in kids if rec.calls[m].order > rec.calls[attn].order]
    attn_out = _chain_end(attn, [m for m in after_attn if m is not mlp and m not in linears], rec)
    if loose_mlp:
        mlp_first, mlp_last = linears
        mlp_out = _chain_end(mlp_last, [m for m in kids if rec.calls[m].order > rec.calls[mlp_last].order], rec)
    else:
        mlp_first = mlp
        later = [m for m in kids if rec.calls[m].order > rec.calls[mlp].order and m is not attn]
        mlp_out = _chain_end(mlp, later, rec)
    pre, post = rec.calls[layer].input, rec.calls[layer].output
    # modules that add the residual themselves (Bloom, MPT): then their last projection is what is added
    pairs = [(x, y) for x in (attn_out, _last_linear(attn, rec)) for y in (mlp_out, _last_linear(mlp, rec))]
    for attn_out, mlp_out in pairs:
        if attn_out is None or mlp_out is None:
            continue
        a, m_ = _tokens(rec.calls[attn_out].output, pre), _tokens(rec.calls[mlp_out].output, pre)
        if pre is None or post is None or a is None or m_ is None or a.shape != pre.shape or m_.shape != pre.shape:
            continue
        bias = rec.calls[attn_out].bias
        if bias is not None and not _close(pre + residual_scale * (a + m_), post) and \
                _close(pre + residual_scale * (a + bias + m_), post):
            a = a + bias  # the block adds the bias the attention returned beside its output
        else:
            bias = None
        scales = (residual_scale, residual_scale)
        if not _close(pre + scales[0] * a + scales[1] * m_, post):
            scales = _fit_scales(layer, pre, a, m_, post)  # MiniCPM: residual + out * scale_depth / sqrt(n_layers)
        if scales is not None:
            break
    else:
        raise Undecomposable("resid_pre + attn_out + mlp_out differs from resid_post (the block adds "
                             "something else to the residual)")
    mid_value = pre + scales[0] * a
    mid = None
    between = [m for m in kids if rec.calls[attn_out].order < rec.calls[m].order <= rec.calls[mlp_first].order]
    for m in between:
        if _close(_tokens(rec.calls[m].input, pre), mid_value):
            mid = m
            break
    attn_in = rec.calls[attn].input
    parallel = mid is None and any(_same(rec.calls[m].input, attn_in) or _same(rec.calls[m].input, pre)
                                   for m in between)
    if mid is None and not parallel:
        raise Undecomposable("no module reads resid_mid, and the MLP does not read resid_pre either")
    own = [m for m in between if _same(rec.calls[m].input, pre) and _NORM.search(type(m).__name__)]
    norms_before = [m for m in kids if rec.calls[m].order < rec.calls[attn].order and _same(rec.calls[m].output, attn_in)]
    plan = BlockPlan(attn, attn_out, mlp_first, mlp_out, mid, norms_before[-1] if norms_before else None,
                     own[0] if parallel and own else None)
    plan.reads_resid = _same(attn_in, pre)
    plan.attn_scale, plan.mlp_scale = scales
    plan.attn_bias = bias is not None
    _plan_attention(plan, rec, d_model)
    if loose_mlp:
        plan.mlp_pre, plan.mlp_down = (linears[0], None), linears[1]
    else:
        _plan_mlp(plan, rec, n_experts)
    return plan


def _plan_attention(plan: BlockPlan, rec: Record, d_model: int) -> None:
    attn = plan.attn
    inside = sorted((m for m in attn.modules() if m is not attn and m in rec.calls), key=lambda m: rec.calls[m].order)
    qkv = rec.attention.get(attn)
    if qkv is not None:
        plan.pattern = True
        for key, target in zip("qkv", qkv):
            found = None
            for m in inside:
                out = rec.calls[m].output
                if out is None:
                    continue
                layout = _find_layout(out, target, rec.pos, all_pos=(key == "v"), scaled=(key != "v"))
                if layout is not None:
                    found = (m, layout)  # keep the last match: closest to the attention function
            if found is not None:
                plan.qkv[key] = found
                plan.proj[key] = found if _is_linear(found[0]) else _projection_of(found, inside, rec)
        plan.proj = {k: v for k, v in plan.proj.items() if v is not None}
    linears = [m for m in inside if getattr(m, "weight", None) is not None and m.weight.ndim == 2
               and rec.calls[m].output is not None and rec.calls[m].output.shape[-1] == d_model
               and not _NORM.search(type(m).__name__)]
    if linears:
        plan.o_proj = linears[-1]
    if qkv is None and attn in rec.softmax and plan.o_proj is not None:
        _plan_inline_attention(plan, inside, rec)


def _plan_inline_attention(plan: BlockPlan, inside: list[nn.Module], rec: Record) -> None:
    """q / k / v of attention written out by hand (no transformers attention interface: Bloom, MPT, GPT-Neo,
    XGLM), from the pattern P its softmax computed and z, the output projection's input:
    v is the module output with z = P v (at position 0, z = v: the first query sees only the first key);
    q and k are the slices before v of the same fused projection ([q | k | v] per group, as v sits), or, for
    separate projections, the two that give softmax(c q k^T + causal mask) = P for c in 1, 1 / sqrt(d)."""
    pos = rec.pos
    P = rec.softmax[plan.attn]
    P = P.reshape(1, -1, pos, pos).float()
    H = P.shape[1]
    z = rec.calls[plan.o_proj].input
    if z is None or z.dim() != 3 or z.shape[-1] % H or P.triu(1).any() or not _close(P.sum(-1), torch.ones(1, H, pos, device=P.device)):
        return
    plan.inline = True
    d = z.shape[-1] // H
    z = z.view(1, pos, H, d).transpose(1, 2).float()  # [1, H, pos, d]
    before = [m for m in inside if rec.calls[m].order < rec.calls[plan.o_proj].order and rec.calls[m].output is not None]
    found = None
    for n_kv in dict.fromkeys((H, 1)):
        target = z[:, :: H // n_kv]
        for m in before:
            layout = _find_layout(rec.calls[m].output, target, pos, all_pos=False)
            if layout is None or layout.kind != "flat":
                continue
            v = layout.site(m).read(rec.calls[m].output).transpose(1, 2).float().repeat_interleave(H // n_kv, 1)
            if _close(P @ v, z):
                found = (m, layout)
        if found:
            break
    if found is None:
        return
    m, lv = found
    plan.qkv["v"] = plan.proj["v"] = found
    wq, wk = H // lv.G * d, lv.X // lv.G * d
    width = rec.calls[m].output.shape[-1] // lv.G
    if not lv.separate:
        if lv.off == wq + wk and width == lv.off + lv.X // lv.G * d:
            plan.qkv["q"] = plan.proj["q"] = (m, Layout("flat", H, d, lv.G, 0))
            plan.qkv["k"] = plan.proj["k"] = (m, Layout("flat", lv.X, d, lv.G, wq))
        return
    x = rec.calls[m].input
    others = [o for o in before if o is not m and _is_linear(o) and _same(rec.calls[o].input, x)]
    mask = torch.ones(pos, pos, dtype=torch.bool, device=P.device).triu(1)
    for mq in others:
        for mk in others:
            oq, ok = rec.calls[mq].output, rec.calls[mk].output
            if mq is mk or oq.shape[-1] != H * d or ok.shape[-1] != lv.X * d:
                continue
            q = oq.view(1, pos, H, d).transpose(1, 2).float()
            k = ok.view(1, pos, lv.X, d).transpose(1, 2).float().repeat_interleave(H // lv.X, 1)
            for c in (1.0, d ** -0.5):
                if _close((c * q @ k.transpose(-1, -2)).masked_fill(mask, float("-inf")).softmax(-1), P):
                    plan.qkv["q"] = plan.proj["q"] = (mq, Layout("flat", H, d, separate=True))
                    plan.qkv["k"] = plan.proj["k"] = (mk, Layout("flat", lv.X, d, separate=True))
                    return


def _fit_scales(layer: nn.Module, pre, a, m, post) -> tuple[float, float] | None:
    """(c_a, c_m) with resid_post = resid_pre + c_a * attn_out + c_m * mlp_out, by least squares, snapped to a
    float attribute of the block when one matches (the exact constant the block multiplies by); None if none fits."""
    A = torch.stack([a.flatten(), m.flatten()], 1).double()
    y = (post - pre).flatten().double()
    try:
        c = torch.linalg.lstsq(A, y[:, None]).solution.flatten().tolist()
    except RuntimeError:
        return None
    known = [v for k, v in vars(layer).items() if isinstance(v, float) and not k.startswith("_")]
    c = [next((float(v) for v in known if abs(v - x) <= 1e-5 * abs(x)), x) for x in c]
    if min(abs(x) for x in c) < 1e-6 or not _close(pre + c[0] * a + c[1] * m, post):
        return None
    return c[0], c[1]


def _tokens(t: torch.Tensor | None, pre: torch.Tensor | None) -> torch.Tensor | None:
    """A tensor whose batch and position axes a block flattened into one (OPT's MLP), back as [1, pos, ...]."""
    if t is None or pre is None or t.dim() != 2 or pre.dim() != 3 or t.shape[0] != pre.shape[0] * pre.shape[1]:
        return t
    return t.view(*pre.shape[:2], t.shape[-1])


def _last_linear(module: nn.Module | None, rec: Record) -> nn.Module | None:
    if module is None:
        return None
    inside = [m for m in module.modules() if m is not module and _is_linear(m) and m in rec.calls]
    return max(inside, key=lambda m: rec.calls[m].order) if inside else None


def _is_linear(m: nn.Module) -> bool:
    return isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D"


def _projection_of(found: tuple[nn.Module, Layout], inside: list[nn.Module], rec: Record) -> tuple[nn.Module, Layout] | None:
    """The linear projection (and layout) whose output a q/k norm reads (per head, or all heads at once)."""
    norm, layout = found
    x, pos = rec.calls[norm].input, rec.pos
    if x is None or x.dim() not in (3, 4) or x.shape[0] != 1:
        return None
    if x.dim() == 4:
        target = x if x.shape[2] == pos else x.transpose(1, 2)  # -> [1, X, pos, d]
    elif x.shape[1] == pos and x.shape[2] == layout.X * layout.d:
        target = x.view(1, pos, layout.X, layout.d).transpose(1, 2)
    else:
        return None
    for m in reversed([m for m in inside if _is_linear(m) and rec.calls[m].order < rec.calls[norm].order]):
        out = rec.calls[m].output
        layout = None if out is None else _find_layout(out, target, pos, all_pos=True)
        if layout is not None:
            return m, layout
    return None


def _plan_mlp(plan: BlockPlan, rec: Record, n_experts: int) -> None:
    mlp = plan.mlp
    inside = sorted((m for m in mlp.modules() if m is not mlp and m in rec.calls), key=lambda m: rec.calls[m].order)
    if n_experts:  # a mixture of experts: its router scores every expert
        for m in inside:
            out = rec.calls[m].output
            if out is not None and out.shape[-1] == n_experts and rec.calls[m].count == 1:
                plan.router = m
                return
    linears = [m for m in inside if (isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D") and rec.calls[m].count == 1]
    if len(linears) < 2:
        return
    down = linears[-1]
    plan.gated = len(linears) >= 3
    d_mlp = rec.calls[down].input.shape[-1]
    names = {m: n for n, m in mlp.named_modules()}
    ups = linears[:-1]
    gate = next((m for m in ups if _GATE.search(names[m].split(".")[-1])), None)
    acts = [m for m in inside if not isinstance(m, (nn.Linear, nn.Dropout)) and rec.calls[m].input is not None
            and rec.calls[m].count == 1 and m not in ups]
    for act in acts:  # the activation module's input tells which projection is the pre-activation
        for up in ups:
            out = rec.calls[up].output
            if _same(rec.calls[act].input, out):
                gate = up
            elif out is not None and out.shape[-1] == 2 * d_mlp and _same(rec.calls[act].input, out[..., :d_mlp]):
                plan.mlp_pre, plan.mlp_down, plan.gated = (up, d_mlp), down, True
                return
    pre = gate or ups[0]
    if rec.calls[pre].output.shape[-1] == d_mlp:
        plan.mlp_pre, plan.mlp_down = (pre, None), down
    else:
        plan.mlp_down = down


# ---- layer stack ---------------------------------------------------------------------------------------
def find_layers(hf: nn.Module, n_layers: int | None) -> tuple[nn.Module, nn.ModuleList]:
    """(the module holding the stack, the ModuleList of blocks): the longest list of blocks in the body."""
    best = None
    for name, m in hf.named_modules():
        if isinstance(m, nn.ModuleList) and len(m) > 0 and (n_layers is None or len(m) == n_layers):
            if all(len(list(b.children())) > 0 for b in m):
                if best is None or len(m) > len(best[1]):
                    parent = hf.get_submodule(name.rsplit(".", 1)[0]) if "." in name else hf
                    best = (parent, m)
    if best is None:
        raise UncoverError(
            f"{type(hf).__name__}: no stack of {n_layers} layers found, so uncover cannot name its activations; "
            "use model.hf directly (it is a plain transformers model)"
        )
    return best


@dataclass
class Discovery:
    layers: nn.ModuleList
    body: nn.Module
    embed: nn.Module
    final_norm: nn.Module | None
    final_site: str  # "out" of the final norm, or "in" of the lm head
    record: Record
    plans: list[BlockPlan] | None
    reason: str  # why the blocks could not be decomposed ("" when they could)


def discover(hf: nn.Module) -> Discovery:
    """Probe ``hf`` once and work out its structure (see the module docstring)."""
    c = hf.config
    n_layers = _cfg(c, "num_hidden_layers", "n_layer", "num_layers", "n_layers")
    body, layers = find_layers(hf, n_layers)
    embed, head = hf.get_input_embeddings(), hf.get_output_embeddings()
    watch = [embed, layers[0], *body.children()] + [m for layer in layers for m in layer.modules()]
    if head is not None:
        watch.append(head)
    pos = 5 if _cfg(c, "num_attention_heads", "n_head", default=0) != 5 else 7
    rec = probe(hf, watch, vocab=embed.weight.shape[0], pos=pos)
    last = rec.calls.get(layers[-1])
    final_norm, final_site = None, "out"
    if last is not None and last.output is not None:
        for m in body.children():
            call = rec.calls.get(m)
            if call is not None and call.order > last.order and _same(call.input, last.output) and _NORM.search(type(m).__name__):
                final_norm = m
                break
    if head is not None and head in rec.calls and (final_norm is None or not _same(rec.calls[head].input, rec.calls[final_norm].output)):
        final_norm, final_site = head, "in"
    n_experts = _cfg(c, "num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts", default=0) or 0
    if isinstance(n_experts, (list, tuple)):
        n_experts = n_experts[0]
    scale = float(_cfg(c, "residual_multiplier", default=1.0) or 1.0)
    d_model = embed.weight.shape[1]
    plans, reason = None, ""
    try:
        if any(layer not in rec.calls for layer in layers):
            raise Undecomposable("not every layer ran in the forward")
        types = {type(layer) for layer in layers}
        plans = [_plan_block(layer, rec, d_model, n_experts, scale) for layer in layers]
        if len({p.mid is None for p in plans}) > 1:
            raise Undecomposable(f"blocks mix parallel and sequential attention + MLP ({len(types)} block types)")
    except Undecomposable as e:
        plans, reason = None, str(e)
    return Discovery(layers, body, embed, final_norm, final_site, rec, plans, reason)


# ---- adapters ----------------------------------------------------------------------------------------
class StructuralAdapter(Adapter):
    """A per-model adapter from ``discover``: the base Adapter's sites over the discovered modules."""

    name = "structural"
    model_types = ()

    def __init__(self, hf: nn.Module, found: Discovery):
        self.found = found
        self.plans = {layer: plan for layer, plan in zip(found.layers, found.plans)}
        c = hf.config
        self.model_type = getattr(c, "model_type", type(hf).__name__)
        first = found.plans[0]
        self.parallel = first.mid is None
        self.gated_mlp = first.gated
        norm = type(found.final_norm).__name__ if found.final_norm is not None else ""
        self.normalization = "rms" if "RMS" in norm.upper() else "ln" if norm else "none"
        self.residual_scale = float(_cfg(c, "residual_multiplier", default=1.0) or 1.0)
        self._cfg = self._config(hf)
        self.missing: list[str] = []  # filled by sites()

    # module paths the base Adapter uses
    def body(self, hf):
        return self.found.body

    def layers(self, hf):
        return self.found.layers

    def embed(self, hf):
        return self.found.embed

    def final_norm(self, hf):
        return self.found.final_norm

    def attn(self, layer):
        return self.plans[layer].attn

    def attn_norm(self, layer):
        return self.plans[layer].attn_norm

    def attn_out_module(self, layer):
        return self.plans[layer].attn_out

    def mlp_out_module(self, layer):
        return self.plans[layer].mlp_out

    def mlp_norm(self, layer):
        return self.mlp_in_norm(layer)

    def o_proj(self, layer):
        return self.plans[layer].o_proj

    def mlp_pre_module(self, layer):
        pre = self.plans[layer].mlp_pre
        return None if pre is None else pre[0]

    def mlp_down(self, layer):
        return self.plans[layer].mlp_down

    def router(self, layer):
        return self.plans[layer].router

    def mlp_in_norm(self, layer):
        """The module whose input is the residual the MLP reads: resid_mid's, or a parallel MLP's own norm."""
        plan = self.plans[layer]
        return plan.mid if plan.mid is not None else plan.mlp_norm

    def qkv_proj_sites(self, layer, cfg):
        """q / k / v where a per-query-head edit enters (core/edges.py): the linear projection, or, when a
        norm over all heads at once follows it (OLMo 2), that norm's output."""
        plan = self.plans[layer]
        return {k: layout.site(m) for k, (m, layout) in self._edit_points(plan).items()}

    @staticmethod
    def _edit_points(plan: BlockPlan) -> dict[str, tuple[nn.Module, Layout]]:
        points = {}
        for k, found in plan.proj.items():
            module, layout = plan.qkv[k]
            points[k] = (module, layout) if not _is_linear(module) and layout.separate else found
        return points

    def project_heads(self, layer, cfg, site, kind, normed, heads):
        plan = self.plans[layer]
        proj = plan.proj[kind][0]
        if site.module is proj:
            return super().project_heads(layer, cfg, site, kind, normed, heads)
        per = site.read(_first(site.module.forward(proj.forward(normed))))  # projection, then the all-heads norm
        src = heads if kind == "q" else heads // (cfg.n_heads // cfg.n_kv_heads)
        return per[:, :, torch.arange(len(heads), device=heads.device), src]

    def head_weights(self, layer, cfg, site, kind, heads):
        if site.module is self.plans[layer].proj[kind][0]:
            return super().head_weights(layer, cfg, site, kind, heads)
        return None  # an all-heads norm follows the projection

    def edge_sites(self, layer, l, cfg):
        """The edge-level names (core/edges.py) this block has what they need for: a head's input needs its
        linear projection, hook_result the output projection, hook_mlp_in the MLP's input residual."""
        plan, p, sites = self.plans[layer], f"blocks.{l}.", {}
        calls = self._call_kinds(plan, cfg)
        for k in "qkv":
            if k in calls:
                sites[p + f"hook_{k}_input"] = edges.call_input_site(plan.attn, plan.attn_norm, cfg, k)
            elif self._linear_input(plan, cfg, k):
                sites[p + f"hook_{k}_input"] = edges.head_input_site(self, layer, cfg, k)
            elif self._rerun_input(plan, cfg, k):
                sites[p + f"hook_{k}_input"] = edges.rerun_kv_input_site(self, layer, cfg, k, self._plan_kv_heads(plan))
        if self._per_head_z(plan, cfg):
            sites[p + "attn.hook_result"] = self.result_site(layer, cfg)
        norm = self.mlp_in_norm(layer)
        if norm is not None and self._flat(HookSite(norm, "in")):
            sites[p + "hook_mlp_in"] = _token_mlp_in(norm, layer)
        elif norm is not None:
            sites[p + "hook_mlp_in"] = edges.mlp_in_site(norm)
        elif plan.attn_norm is not None:
            sites[p + "hook_mlp_in"] = _shared_norm_mlp_in(plan.attn_norm, plan.mlp)
        return sites

    def explain(self, name: str) -> str:
        """Why a standard name is missing for this model (appended to the unknown-name error)."""
        short = re.sub(r"^blocks\.\d+\.", "", name)
        if not any(m.split(" ")[0] == short for m in self.missing):
            return ""
        return (f" {self.model_type} is supported at the partial level: uncover found no module tensor that "
                f"is {short} (missing: {', '.join(self.missing)}); the residual stream, hook_attn_out and "
                "hook_mlp_out are available.")

    def _flat(self, site: HookSite) -> bool:
        """Whether the block flattens batch and positions at this site (probe: [pos, X] under a [1, pos, d] input)."""
        call = self.found.record.calls.get(site.module)
        t = None if call is None else (call.input if site.kind == "in" else call.output)
        return t is not None and t.dim() == 2 and t.shape[0] == self.found.record.pos

    def _per_head_z(self, plan: BlockPlan, cfg: ModelConfig) -> bool:
        """The output projection reads n_heads * d_head values: z and per-head results are defined."""
        o = plan.o_proj
        return o is not None and self.found.record.calls[o].input.shape[-1] == cfg.n_heads * self._d_head(plan, cfg)

    def kv_heads(self, l: int) -> int:
        """Block l's number of KV heads: what its hook_k / hook_v carry. cfg.n_kv_heads is the first block's;
        a few models change it per layer (MiMo-V2-Flash's sliding layers have twice as many)."""
        return self._plan_kv_heads(self.plans[self.found.layers[l]])

    def _plan_kv_heads(self, plan: BlockPlan) -> int:
        if "k" in plan.qkv:
            return plan.qkv["k"][1].X
        qkv = self.found.record.attention.get(plan.attn)
        return int(qkv[1].shape[1]) if qkv is not None else self._cfg.n_kv_heads

    def _d_head(self, plan: BlockPlan, cfg: ModelConfig) -> int:
        """This block's value head size (Gemma 4's global layers have larger heads than its sliding ones)."""
        qkv = self.found.record.attention.get(plan.attn)
        if qkv is None and "v" in plan.qkv:
            return plan.qkv["v"][1].d
        return int(qkv[2].shape[-1]) if qkv is not None else cfg.d_head

    def result_site(self, layer, cfg):
        o = self.o_proj(layer)
        return edges.result_site(o, "in", o, lambda: self.W_O(layer, cfg), self._d_head(self.plans[layer], cfg),
                                 lambda: getattr(o, "bias", None))

    @staticmethod
    def _carries(plan: BlockPlan) -> bool:
        """Whether a grouped-query block can carry per-query-head keys / values (core/edges.py): k and v each
        the whole output of their edit point, and no fixed KV-head count that reshapes them."""
        if not all(k in plan.proj and k in plan.qkv for k in "kv"):
            return False
        points = StructuralAdapter._edit_points(plan)
        separate = all(points[k][1].separate for k in "kv")
        return separate and not _fixed_kv_heads(type(plan.attn))

    def config(self, hf) -> ModelConfig:
        return self._cfg

    def _config(self, hf) -> ModelConfig:
        c, rec, plan = hf.config, self.found.record, self.found.plans[0]
        q, k, v = rec.attention.get(plan.attn, (None, None, None))
        n_heads = q.shape[1] if q is not None else _cfg(c, "num_attention_heads", "n_head", default=0)
        n_kv = k.shape[1] if k is not None else _cfg(c, "num_key_value_heads", default=n_heads)
        d_model = self.found.embed.weight.shape[1]
        d_head = v.shape[-1] if v is not None else (_cfg(c, "head_dim") or d_model // max(n_heads, 1))
        if q is None and all(x in plan.qkv for x in "qkv"):  # attention written out by hand: from its layouts
            n_heads, n_kv, d_head = plan.qkv["q"][1].X, plan.qkv["k"][1].X, plan.qkv["v"][1].d
        d_mlp = rec.calls[plan.mlp_down].input.shape[-1] if plan.mlp_down is not None else (
            _cfg(c, "moe_intermediate_size", "intermediate_size", "ffn_dim", "n_inner", default=0) or 0)
        head = hf.get_output_embeddings()
        return ModelConfig(
            n_layers=len(self.found.layers), n_heads=int(n_heads), n_kv_heads=int(n_kv), d_model=d_model,
            d_head=int(d_head), d_mlp=int(d_mlp),
            d_vocab=head.weight.shape[0] if head is not None else self.found.embed.weight.shape[0],
            n_ctx=int(_cfg(c, "max_position_embeddings", "n_positions", "max_sequence_length", "seq_length",
                           default=2**31 - 1)),
            act_fn=str(_cfg(c, "hidden_act", "hidden_activation", "activation_function", "activation", default="unknown")),
            normalization=self.normalization, gated_mlp=bool(self.gated_mlp), parallel=self.parallel,
            architecture=self.model_type,
        )

    # hook sites: the base Adapter's, minus what this model does not have, plus the router
    def qkv_sites(self, layer, cfg):
        plan = self.plans[layer]
        sites = {k: layout.site(m) for k, (m, layout) in plan.qkv.items()}
        gqa = self._plan_kv_heads(plan) < cfg.n_heads
        for k in self._call_kinds(plan, cfg):  # read where the edits of call_input_site land (or nowhere else)
            if k not in sites or k == "q" or not gqa:
                sites[k] = edges.call_site(plan.attn, k)
        return sites

    def _linear_input(self, plan: BlockPlan, cfg: ModelConfig, k: str) -> bool:
        """Whether hook_{k}_input can go through a linear projection of its own (core/edges.head_input_site)."""
        if k not in plan.proj or k not in plan.qkv or (plan.attn_norm is None and not plan.reads_resid):
            return False
        calls = self.found.record.calls
        if not _same(calls[plan.proj[k][0]].input, calls[plan.attn].input):
            return False  # a low-rank path sits between (DeepSeek V2's q_a_proj -> norm -> q_b_proj)
        module, layout = plan.qkv[k]
        if not _is_linear(module) and layout.separate and not _NORM.search(type(module).__name__):
            return False  # what follows the projection mixes positions (Inkling's short convolution on v)
        n_kv = self._plan_kv_heads(plan)
        if k != "q" and n_kv != cfg.n_kv_heads:
            return False  # the linear path maps query heads to KV heads by cfg.n_kv_heads
        return k == "q" or n_kv == cfg.n_heads or self._carries(plan)

    def _rerun_input(self, plan: BlockPlan, cfg: ModelConfig, k: str) -> bool:
        """k / v inputs of a grouped-query block written out by hand whose projection cannot carry extra heads
        (Falcon's multi-query fused projection): served by re-runs (core/edges.rerun_kv_input_site)."""
        if k == "q" or not plan.inline or k not in plan.proj or plan.o_proj is None or not self._per_head_z(plan, cfg):
            return False
        calls, (module, layout) = self.found.record.calls, plan.qkv[k]
        return _is_linear(module) and plan.proj[k][0] is module and layout.kind == "flat" and \
            _same(calls[module].input, calls[plan.attn].input) and (plan.attn_norm is not None or plan.reads_resid)

    def _call_kinds(self, plan: BlockPlan, cfg: ModelConfig) -> list[str]:
        """q / k / v whose head inputs are served at the attention call (core/edges.call_input_site): those
        without a linear path, in blocks that call the transformers attention interface."""
        if not plan.pattern or (plan.attn_norm is None and not plan.reads_resid):
            return []
        return [k for k in "qkv" if not self._linear_input(plan, cfg, k)]

    def mlp_pre_site(self, layer, cfg):
        pre = self.plans[layer].mlp_pre
        if pre is None:
            return HookSite(None, "out")
        module, width = pre
        if width is None:
            return HookSite(module, "out")
        return HookSite(module, "out", lambda t: t[..., :width], lambda raw, t: torch.cat([t, raw[..., width:]], dim=-1))

    def sites(self, hf, cfg):
        sites = {}
        rec = self.found.record
        for name, site in super().sites(hf, cfg).items():
            if site.module is None:
                continue
            layer = self.found.layers[int(name.split(".")[1])] if name.startswith("blocks.") else None
            if name.endswith("hook_pattern") and self.plans[layer].inline:
                site = edges.inline_pattern_site(self.plans[layer].attn)
            elif name.endswith("hook_pattern") and not self.plans[layer].pattern:
                continue
            if name.endswith("attn.hook_z") and not self._per_head_z(self.plans[layer], cfg):
                continue  # not per-head attention in this block (a linear-attention layer of a hybrid)
            if name.endswith("attn.hook_z") and self._d_head(self.plans[layer], cfg) != cfg.d_head:
                d = self._d_head(self.plans[layer], cfg)
                site = HookSite(site.module, "in", lambda t, d=d: _split_heads(t, d), lambda raw, t: _merge_heads(t))
            if layer is not None and name.endswith(("hook_attn_out", "hook_mlp_out")) and \
                    (self.plans[layer].attn_scale if name.endswith("hook_attn_out") else self.plans[layer].mlp_scale) != 1.0:
                plan = self.plans[layer]
                s = plan.attn_scale if name.endswith("hook_attn_out") else plan.mlp_scale
                site = HookSite(site.module, site.kind, lambda t, s=s: t * s, lambda raw, t, s=s: t / s)
            if layer is not None and name.endswith("hook_attn_out") and self.plans[layer].attn_bias:
                site = _returned_bias_site(site.module)
            if name == "ln_final.hook_normalized" and self.found.final_site == "in":
                site = HookSite(site.module, "in")
            sites[name] = site
        for l, layer in enumerate(self.found.layers):
            router = self.plans[layer].router
            if router is not None:
                sites[f"blocks.{l}.mlp.hook_router"] = HookSite(router, "out", write=_read_only)
        _unlist(sites, rec)
        for name, site in sites.items():
            if name.startswith("blocks.") and site.kind in ("in", "out") and self._flat(site):
                sites[name] = _token_site(site, self.found.layers[int(name.split(".")[1])])
        self.missing = self._missing(sites, cfg)
        return sites

    def _missing(self, sites: dict, cfg: ModelConfig) -> list[str]:
        """Standard names this model does not have, with the blocks they are missing from."""
        per_block = ["hook_resid_pre", "hook_resid_post", "hook_attn_out", "hook_mlp_out", "attn.hook_q",
                     "attn.hook_k", "attn.hook_v", "attn.hook_z", "attn.hook_pattern", "attn.hook_result",
                     "hook_q_input", "hook_k_input", "hook_v_input", "hook_mlp_in"]
        per_block += [] if cfg.parallel else ["hook_resid_mid"]
        where: dict[str, list[int]] = {}
        for l, layer in enumerate(self.found.layers):
            mlp = ["mlp.hook_router"] if self.plans[layer].router is not None else ["mlp.hook_pre", "mlp.hook_post"]
            for name in per_block + mlp:
                if f"blocks.{l}.{name}" not in sites:
                    where.setdefault(name, []).append(l)
        n = len(self.found.layers)
        out = [name if len(ls) == n else f"{name} (blocks {', '.join(map(str, ls))})" for name, ls in where.items()]
        return out + [name for name in ("hook_embed", "ln_final.hook_normalized") if name not in sites]

    # weights
    def _qkv_weight(self, layer, key, cfg):
        plan = self.plans[layer]
        if key not in plan.qkv:
            raise UncoverError(f"{self.model_type} has no hook_{key}, so no W_{key.upper()}: {self.missing}")
        module, layout = plan.qkv[key]
        return layout.weight(module, cfg.d_model)

    def W_Q(self, layer, cfg):
        return self._qkv_weight(layer, "q", cfg)

    def W_K(self, layer, cfg):
        return self._qkv_weight(layer, "k", cfg)

    def W_V(self, layer, cfg):
        return self._qkv_weight(layer, "v", cfg)

    def W_O(self, layer, cfg):
        w = _linear_weight(self.plans[layer].o_proj)  # [d_model, n_heads * d_head]
        return w.view(cfg.d_model, cfg.n_heads, -1).permute(1, 2, 0)

    def W_in(self, layer, cfg):
        module, width = self.plans[layer].mlp_pre
        w = _linear_weight(module)
        return (w if width is None else w[:width]).T

    def W_out(self, layer, cfg):
        return _linear_weight(self.plans[layer].mlp_down).T

    def norm_weight(self, norm):
        w = getattr(norm, "weight", None)
        return w if w is not None else torch.ones(())


@functools.lru_cache(maxsize=None)
def _fixed_kv_heads(cls: type) -> bool:
    """Whether the attention's forward reshapes k / v by a stored KV-head count (then extra heads cannot ride)."""
    try:
        source = inspect.getsource(cls.forward)
    except (OSError, TypeError):
        return True
    return re.search(r"self\.\w*(key_value_heads|kv_heads)\b", source) is not None


def _unlist(sites: dict[str, HookSite], rec: Record) -> None:
    """Wrap, in place, the output sites of modules that returned a list at the probe, and copy on read the
    outputs the block later changes in place (so a cached activation keeps the value the hook saw)."""
    for name, site in sites.items():
        call = rec.calls.get(site.module)
        if site.kind != "out" or site.attach_fn is not None or call is None:
            continue
        if call.listed:
            sites[name] = site = _list_site(site)
        if call.mutated:
            sites[name] = HookSite(site.module, "out", lambda raw, r=site.read: r(raw).clone(), site.write,
                                   compensate=site.compensate)


def _list_site(site: HookSite) -> HookSite:
    """``site`` on a module that returns a list [tensor, ...] (GPT-1's blocks): read and write its first item."""

    def read(raw):
        return site.read(raw[0] if isinstance(raw, list) else raw)

    def write(raw, t):
        return [site.write(raw[0], t)] + raw[1:] if isinstance(raw, list) else site.write(raw, t)

    return HookSite(site.module, site.kind, read, write, compensate=site.compensate)


def _token_site(site: HookSite, layer: nn.Module) -> HookSite:
    """``site`` in a block that flattens [batch, pos] into one axis there: read as [batch, pos, ...]."""
    shape: dict[str, torch.Size] = {}

    def grab(module, args, kwargs):
        x = args[0] if args else kwargs["hidden_states"]
        shape["bp"] = x.shape[:-1]

    def unflat(raw: torch.Tensor) -> torch.Tensor:
        return raw.view(*shape["bp"], raw.shape[-1]) if raw.dim() == 2 else raw

    inner = HookSite(site.module, site.kind, lambda raw: site.read(unflat(raw)),
                     lambda raw, t: site.write(unflat(raw), t).reshape(raw.shape), compensate=site.compensate)

    def attach_fn(point: HookPoint, fns: list, force_write: bool) -> list:
        return [layer.register_forward_pre_hook(grab, with_kwargs=True)] + attach(inner, point, fns, force_write)

    return HookSite(site.module, site.kind, inner.read, inner.write, compensate=site.compensate, attach_fn=attach_fn)


def _token_mlp_in(norm: nn.Module, layer: nn.Module) -> HookSite:
    """hook_mlp_in where the MLP's norm reads flattened [batch * pos, d_model] (OPT): see core/edges.py."""
    shape: dict[str, torch.Size] = {}

    def attach_fn(point: HookPoint, fns: list, force_write: bool) -> list:
        def grab(module, args, kwargs):
            x = args[0] if args else kwargs["hidden_states"]
            shape["bp"] = x.shape[:-1]

        def hook(module, args, output):
            x = args[0]
            t = x.view(*shape["bp"], x.shape[-1])
            new = _apply(fns, t, point)
            if new is t and not force_write:
                return None
            return module.forward(new.reshape(x.shape))

        return [layer.register_forward_pre_hook(grab, with_kwargs=True), norm.register_forward_hook(hook, prepend=True)]

    return HookSite(norm, "edge", on_request=True, attach_fn=attach_fn)


def _shared_norm_mlp_in(norm: nn.Module, mlp: nn.Module) -> HookSite:
    """hook_mlp_in of a parallel block whose attention and MLP share one norm (Phi, GPT-J, Cohere): the
    residual the MLP reads [batch, pos, d_model]. A change re-runs the norm for the MLP only."""

    def attach_fn(point: HookPoint, fns: list, force_write: bool) -> list:
        seen: dict[str, torch.Tensor] = {}

        def grab(module, args, output):
            seen["x"] = args[0]

        def feed(module, args, kwargs):
            x = seen.pop("x")
            t = x.view_as(x)
            new = _apply(fns, t, point)
            if new is t and not force_write:
                return None
            normed = _first(norm.forward(new))
            return ((normed,) + tuple(args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": normed})

        return [norm.register_forward_hook(grab), mlp.register_forward_pre_hook(feed, with_kwargs=True)]

    return HookSite(mlp, "edge", on_request=True, attach_fn=attach_fn)


def _returned_bias_site(module: nn.Module) -> HookSite:
    """hook_attn_out of an attention that returns (out, weights, bias) for its block to add (GPT-NeoX-Japanese's
    last layer): read out + bias, as the block computes it; a write hands the block the new value and no bias."""

    def attach_fn(point: HookPoint, fns: list, force_write: bool) -> list:
        def hook(m, args, output):
            out, bias = output[0], output[-1]
            t = out + bias
            new = _apply(fns, t, point)
            if new is t and not force_write:
                return None
            return (new,) + tuple(output[1:-1]) + (None,)

        return [module.register_forward_hook(hook)]

    return HookSite(module, "out", attach_fn=attach_fn)


def _read_only(raw: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    raise UncoverError("mlp.hook_router is read-only: the router picks its experts inside the same module. "
                       "To change routing, write the MLP's input (hook_resid_mid) or hook_mlp_out instead.")


RESIDUAL_NAMES = ("hook_embed", "blocks.{l}.hook_resid_pre", "blocks.{l}.hook_resid_post", "ln_final.hook_normalized")


class ResidualAdapter(Adapter):
    """The residual-stream level: hook_embed, blocks.{l}.hook_resid_pre|post and ln_final.hook_normalized.

    For causal LMs with a recognisable layer stack whose blocks uncover cannot split into attention and MLP
    (Mamba, RWKV, hybrids such as Jamba or Zamba). Lenses, probes, steering and residual patching work.
    """

    name = "residual"
    model_types = ()
    gated_mlp = False

    def __init__(self, hf: nn.Module, found: Discovery):
        self.found = found
        c = hf.config
        self.model_type = getattr(c, "model_type", type(hf).__name__)
        self.reason = found.reason
        norm = type(found.final_norm).__name__ if found.final_norm is not None else ""
        self.normalization = "rms" if "RMS" in norm.upper() else "ln" if norm else "none"
        head = hf.get_output_embeddings()
        d_model = found.embed.weight.shape[1]
        n_heads = int(_cfg(c, "num_attention_heads", "n_head", default=0) or 0)
        self._cfg = ModelConfig(
            n_layers=len(found.layers), n_heads=n_heads, n_kv_heads=int(_cfg(c, "num_key_value_heads", default=n_heads) or 0),
            d_model=d_model, d_head=d_model // n_heads if n_heads else 0, d_mlp=0,
            d_vocab=head.weight.shape[0] if head is not None else found.embed.weight.shape[0],
            n_ctx=int(_cfg(c, "max_position_embeddings", "n_positions", default=2**31 - 1)),
            act_fn=str(_cfg(c, "hidden_act", "activation_function", default="unknown")),
            normalization=self.normalization, gated_mlp=False, parallel=False, architecture=self.model_type,
        )
        self.missing = ["every attention and MLP name"]

    def body(self, hf):
        return self.found.body

    def layers(self, hf):
        return self.found.layers

    def embed(self, hf):
        return self.found.embed

    def final_norm(self, hf):
        return self.found.final_norm

    def config(self, hf) -> ModelConfig:
        return self._cfg

    def sites(self, hf, cfg):
        sites = {"hook_embed": HookSite(self.found.embed, "out")}
        for l, layer in enumerate(self.found.layers):
            sites[f"blocks.{l}.hook_resid_pre"] = HookSite(layer, "in")
            sites[f"blocks.{l}.hook_resid_post"] = HookSite(layer, "out")
        if self.found.final_norm is not None:
            sites["ln_final.hook_normalized"] = HookSite(self.found.final_norm, self.found.final_site)
        _unlist(sites, self.found.record)
        return sites

    def explain(self, name: str) -> str:
        return (f" {self.model_type} is supported at the residual-stream level only ({self.reason}): its names "
                f"are {', '.join(RESIDUAL_NAMES)}.")

    def _no(self, what: str):
        raise UncoverError(f"{self.model_type} is supported at the residual-stream level only ({self.reason}); "
                           f"it has no {what}. Available: {', '.join(RESIDUAL_NAMES)}.")

    def W_Q(self, layer, cfg):
        self._no("per-head weights")

    W_K = W_V = W_O = W_Q

    def W_in(self, layer, cfg):
        self._no("MLP weights")

    W_out = W_in


def structural_adapter(hf: nn.Module) -> Adapter:
    """The structural adapter for ``hf`` (full or partial), or the residual-stream level."""
    found = discover(hf)
    if found.plans is None:
        return ResidualAdapter(hf, found)
    return StructuralAdapter(hf, found)
