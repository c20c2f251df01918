"""Edge-level hook points, for circuits: each head's input and output, and each MLP's input, on request.

- ``blocks.{l}.hook_q_input | hook_k_input | hook_v_input`` [batch, pos, head, d_model]: the residual each
  query head reads (before the block's pre-attention norm), one copy per *query* head for k and v as well.
  Read-only it is a broadcast view of the block's input (no copy per head: return a new tensor to change it;
  torch refuses in-place writes to it). A head whose copy changed gets its q (or k, v) from its own copy:
  the pre-attention norm, then that head's slice of the projection (then any per-head q/k norm and the
  rotary embedding, as in the model). The other heads keep the model's own tensors, so only that head's
  q / k / v changes. Under grouped-query attention, writing a query head's k (v) input gives that query
  head its own key (value), computed from its copy with its KV head's weights; the other query heads of the
  group keep the shared one (core/attention.py carries the extra heads). ``hook_k`` / ``hook_v`` still show
  the KV heads. Such edits need a forward without a KV cache (not ``generate``).
- ``blocks.{l}.attn.hook_result`` [batch, pos, head, d_model]: head h's output after the output projection,
  ``hook_z[..., h, :] @ W_O[h]``. The sum over heads plus the projection's bias (added once, not per head)
  is the attention output before any post-attention norm: ``hook_attn_out`` itself for most models; for
  Gemma 2/3, whose post-attention norm sits between, ``hook_attn_out = post_norm(sum + bias)``. When a hook
  changed it, the attention output becomes the sum of the new results (+ bias).
- ``blocks.{l}.hook_mlp_in`` [batch, pos, d_model]: the residual the MLP reads, before its pre-norm.
  Writing it changes what the MLP sees and nothing else (the residual stream that bypasses the MLP, and
  ``hook_resid_mid``, keep their values).

They cost nothing unless asked for, and with nothing changed the model's own tensors flow on, so the logits
stay bitwise equal. With ``force_write`` (gradients) every head is computed from its own copy, so gradients
at these names are per head (float sums then differ by rounding only).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

from uncover.core.attention import call_edits, call_hooks, capture, expand_kv, inline_pattern_hooks, rerun_to, route
from uncover.core.hooks import HookPoint, HookSite, _apply, _first, _replace_first, onloaded
from uncover.errors import UncoverError

if TYPE_CHECKING:
    from uncover.core.adapters.base import Adapter, ModelConfig


class _Undo:
    """A handle whose remove() runs an undo function once (like torch's hook handles)."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn = fn

    def remove(self) -> None:
        if self.fn is not None:
            self.fn()
            self.fn = None


class _Chain:
    """The hook functions that every active hooks() block put on one edge site of one module, run as one
    chain (outer blocks first, as on any module) behind a single set of torch hooks."""

    def __init__(self) -> None:
        self.groups: list[tuple[HookPoint, list, bool]] = []
        self.handles: list = []

    def run(self, t: torch.Tensor) -> torch.Tensor:
        for point, fns, _ in self.groups:
            t = _apply(fns, t, point)
        return t

    @property
    def force_write(self) -> bool:
        return any(force for _, _, force in self.groups)


def _chained(module: nn.Module, key: str, install: Callable[[_Chain], list], point: HookPoint, fns: list,
             force_write: bool) -> list:
    """Join (or start) the chain ``key`` on ``module``; ``install(chain)`` registers its torch hooks once."""
    chains = module.__dict__.setdefault("_uncover_chains", {})
    if key not in chains:
        chains[key] = _Chain()
        chains[key].handles = install(chains[key])
    chain, group = chains[key], (point, fns, force_write)
    chain.groups.append(group)

    def undo() -> None:
        chain.groups.pop(next(i for i, g in enumerate(chain.groups) if g is group))
        if not chain.groups:
            for handle in reversed(chain.handles):
                handle.remove()
            del chains[key]
            if not chains:
                del module.__dict__["_uncover_chains"]

    return [_Undo(undo)]


RmsParams = Callable[[], tuple[torch.Tensor, float]]  # an RMS norm's (weight, eps), read when needed


def _norm_vjp(x: torch.Tensor, grad: torch.Tensor, norm: nn.Module, rms: RmsParams | None) -> torch.Tensor:
    """Each head's gradient [b, p, H, d] at its copy of the residual ``x`` [b, p, d], from that head's gradient
    ``grad`` [b, p, H, d] at ``norm``'s output: the norm's vector-Jacobian product at ``x`` (its parameters get
    none, as in ``grad_cache``). ``rms()``, (weight, eps) of an RMS norm ``weight * x / sqrt(mean(x^2) + eps)``,
    gives it in closed form (a few elementwise passes over head-major memory, returned as a [b, p, H, d]
    view); otherwise one backward of the norm over the copies."""
    if rms is None:
        with torch.enable_grad():
            copies = x.unsqueeze(2).expand(*grad.shape[:3], x.shape[-1]).contiguous().requires_grad_(True)
            return torch.autograd.grad(norm.forward(copies), copies, grad)[0]
    weight, eps = rms()
    xf, g = x.float(), grad.float().permute(2, 0, 1, 3).contiguous()  # [H, b, p, d]
    w = weight.detach().float().to(x.device)
    r = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)  # [b, p, 1]
    # d/dx of w * x * r: w * r * g - x * r^3 / d * <w * g, x>, per head
    dot = (g * (w * xf)).sum(-1, keepdim=True)  # [H, b, p, 1]
    per_head = (g * (w * r)).addcmul_(xf, dot * (r.pow(3) / x.shape[-1]), value=-1)
    return per_head.to(grad.dtype).permute(1, 2, 0, 3)


class _SharedNorm(torch.autograd.Function):
    """``norm`` of identical per-head copies [b, p, H, d] of one residual, computed once; the backward gives
    each copy its own gradient (``_norm_vjp``)."""

    @staticmethod
    def forward(ctx, copies: torch.Tensor, norm: nn.Module, rms: RmsParams | None) -> torch.Tensor:
        x = copies[:, :, 0].detach()
        ctx.save_for_backward(x)
        ctx.norm, ctx.rms = norm, rms
        y = norm.forward(x)
        return y.unsqueeze(2).expand(*copies.shape[:3], y.shape[-1]).contiguous()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        return _norm_vjp(x, grad, ctx.norm, ctx.rms), None, None


class _SharedProjection(torch.autograd.Function):
    """q, k or v [b, p, H, d_head] of every query head from identical per-head copies [b, p, H, d] of one
    residual, where each head's is a plain linear map of its normed copy: the values are the model's own
    ``own`` (nothing is recomputed); the backward gives each copy its own gradient, through its head's
    weight rows ``weight`` [H, d_head, d] and the norm (``_norm_vjp``; ``norm`` None: no norm)."""

    @staticmethod
    def forward(ctx, copies: torch.Tensor, own: torch.Tensor, weight: torch.Tensor, norm: nn.Module | None,
                rms: RmsParams | None) -> torch.Tensor:
        ctx.save_for_backward(copies[:, :, 0].detach(), weight)
        ctx.norm, ctx.rms = norm, rms
        return own.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        b, p, n, e = grad.shape
        # one product per head into head-major memory [n, b, p, d] (a [b, p, n, d] view)
        normed = torch.bmm(grad.permute(2, 0, 1, 3).reshape(n, b * p, e), weight.to(grad.dtype))
        normed = normed.view(n, b, p, -1).permute(1, 2, 0, 3)
        return (normed if ctx.norm is None else _norm_vjp(x, normed, ctx.norm, ctx.rms)), None, None, None, None


def _heads_to_write(chain, new: torch.Tensor, view: torch.Tensor) -> torch.Tensor | None:
    """The head indices a per-head input hook must write: every head when forced, else the changed
    ones; None when there is nothing to write. new / view: [batch, pos, heads, d]."""
    if chain.force_write:
        return torch.arange(view.shape[2], device=view.device)
    if new is view:
        return None
    heads = _changed_heads(new, view)
    return heads if len(heads) else None


def _changed_heads(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """Indices of the heads (axis 2 of [batch, pos, head, d]) where ``new`` differs from ``old`` anywhere
    (head by head: an exact comparison that stops at the first difference, no [batch, pos, head, d] mask)."""
    if new.dtype != old.dtype:
        return (new != old).any(dim=3).any(dim=1).any(dim=0).nonzero().flatten()
    changed = [h for h in range(new.shape[2]) if not torch.equal(new[:, :, h], old[:, :, h])]
    return torch.tensor(changed, dtype=torch.long, device=new.device)


def head_input_site(adapter: "Adapter", layer: nn.Module, cfg: "ModelConfig", kind: str) -> HookSite:
    """``blocks.{l}.hook_{kind}_input`` for kind in q, k, v (see the module docstring)."""
    attn = adapter.attn(layer)
    norm = adapter.attn_norm(layer)
    proj = adapter.qkv_proj_sites(layer, cfg)[kind]
    n_heads = cfg.n_heads
    carry = kind != "q" and cfg.n_kv_heads < n_heads
    is_rms = norm is not None and cfg.normalization == "rms"
    rms = (lambda: (adapter.norm_weight(norm), adapter.norm_eps(norm))) if is_rms else None  # read at each backward

    def install(chain: _Chain) -> list:
        seen: dict[str, Any] = {}
        set_attrs: dict[str, Any] = {}

        def capture_norm_input(module, args, output):
            seen["x"] = args[0]

        def capture_attn_input(module, args, kwargs):
            if norm is None:
                seen["x"] = args[0] if args else kwargs["hidden_states"]
            seen["cached"] = kwargs.get("cache", kwargs.get("past_key_values")) is not None

        def restore(*_: Any) -> None:
            for name, value in set_attrs.items():
                setattr(attn, name, value)
            set_attrs.clear()
            if carry and hasattr(attn, "_uncover_carry"):
                attn._uncover_carry.pop(kind, None)

        def on_projection(module, args, output):
            raw = _first(output)
            current = proj.read(raw)
            x = seen.pop("x")[:, -current.shape[1] :]  # all positions, or the last (a toy's last_only queries)
            b, p, d = x.shape
            view = x.unsqueeze(2).expand(b, p, n_heads, d)
            new = chain.run(view)
            heads = _heads_to_write(chain, new, view)
            if heads is None:
                return None
            every = len(heads) == n_heads  # every head reads its own copy (no gather, no splice into the model's)
            weight = adapter.head_weights(layer, cfg, proj, kind, heads) if new is view else None
            if weight is not None:  # force_write, nothing changed: the model's values, per-head gradients
                src = heads if kind == "q" else heads // (n_heads // cfg.n_kv_heads)
                mine = _SharedProjection.apply(view, current.detach().index_select(2, src), weight, norm, rms)
            else:
                chosen = new if every else new[:, :, heads]
                if norm is None:
                    normed = chosen
                elif new is view:  # force_write, nothing changed: one norm, per-head gradients (_SharedNorm)
                    normed = _SharedNorm.apply(view, norm, rms)
                else:
                    normed = norm.forward(chosen)
                mine = adapter.project_heads(layer, cfg, proj, kind, normed, heads)  # [b, p, n, d_head]
            mine = mine.to(current.dtype)
            if every:  # the model's own q / k / v is read by no head: it gets no gradient
                current = current.detach()
            if not carry:
                return _replace_first(output, proj.write(raw, mine if every else current.index_copy(2, heads, mine)))
            if seen.get("cached"):
                raise UncoverError(
                    f"'hook_{kind}_input' of layer {chain.groups[0][0].layer} changed a key/value input of a "
                    "grouped-query layer during a forward with a KV cache (generate); such edits give a query head "
                    "its own key/value, which the cache cannot hold: run the model without a cache "
                    "(model(...), run_with_hooks) instead"
                )
            for name, value in adapter.carry_attrs(attn, cfg, kind, len(heads)).items():
                set_attrs.setdefault(name, getattr(attn, name))
                setattr(attn, name, value)
            attn._uncover_carry[kind] = heads
            return _replace_first(output, proj.write(raw, torch.cat([current, mine], dim=2)))

        handles: list = []
        if carry:
            handles.append(_Undo(route(attn)))
        if norm is not None:
            handles.append(norm.register_forward_hook(capture_norm_input))
        handles.append(attn.register_forward_pre_hook(capture_attn_input, with_kwargs=True))
        handles.append(attn.register_forward_hook(restore))
        # prepended: the head copies are in place before hook_q / hook_k / hook_v read the same module's output
        handles.append(proj.module.register_forward_hook(on_projection, prepend=True))
        handles.append(_Undo(restore))  # removed first (handles go in reverse): attributes back, then the route
        return handles

    def attach_fn(point: HookPoint, fns: list, force_write: bool) -> list:
        return _chained(proj.module, f"{kind}_input", install, point, fns, force_write)

    return HookSite(proj.module, "edge", on_request=True, attach_fn=attach_fn)


_CACHE_KWARGS = ("past_key_values", "past_key_value", "layer_past", "cache")


def call_input_site(attn: nn.Module, norm: nn.Module | None, cfg: "ModelConfig", kind: str) -> HookSite:
    """``blocks.{l}.hook_{kind}_input`` where no linear projection gives a head's q / k / v on its own (multi-head
    latent attention, per-head norms after rotary, fixed KV-head reshapes): a head whose copy changed gets the
    q (k, v) of the attention module re-run on its own copy (the pre-attention ``norm``, then the module's
    forward up to its attention call, uncover.core.attention.capture); under grouped-query attention that head
    reads the key / value of its KV head computed from its copy, the other query heads the shared one. The
    other heads keep the model's own tensors. One re-run per changed head; edits need a forward without a KV
    cache. hook_q (and, without grouped-query attention, hook_k / hook_v) of such a block are read at the
    attention call, so they show the edit."""
    n_heads = cfg.n_heads

    def install(chain: _Chain) -> list:
        seen: dict[str, Any] = {}

        def capture_norm_input(module, args, output):
            seen["x"] = args[0]

        def capture_attn_call(module, args, kwargs):
            if norm is None:
                seen["x"] = args[0] if args else kwargs["hidden_states"]
            seen["call"] = (args, kwargs)

        def rerun(hidden: torch.Tensor):
            args, kwargs = seen["call"]
            if args:
                return capture(attn, lambda: attn.forward(hidden, *args[1:], **kwargs))
            return capture(attn, lambda: attn.forward(**{**kwargs, "hidden_states": hidden}))

        def edit(query, key, value):
            x = seen["x"]
            b, p, d = x.shape
            view = x.unsqueeze(2).expand(b, p, n_heads, d)
            new = chain.run(view)
            if chain.force_write:
                heads = torch.arange(n_heads, device=x.device)
            elif new is view:
                return query, key, value, None
            else:
                heads = _changed_heads(new, view)
                if len(heads) == 0:
                    return query, key, value, None
            _, kwargs = seen["call"]
            if any(kwargs.get(k) is not None for k in _CACHE_KWARGS):
                raise UncoverError(
                    f"'hook_{kind}_input' of layer {chain.groups[0][0].layer} changed a head's input in a block "
                    "whose heads uncover re-runs one by one, during a forward with a KV cache (generate); run the "
                    "model without a cache (model(...), run_with_hooks) instead"
                )
            mine = []
            for h in heads.tolist():
                copy = new[:, :, h]
                t = dict(zip("qkv", rerun(copy if norm is None else _first(norm.forward(copy)))))[kind]
                mine.append(t[:, h // (n_heads // t.shape[1])])
            mine = torch.stack(mine, dim=1)
            if kind != "q":
                key, value = expand_kv(attn, key, value, n_heads)
            target = {"q": query, "k": key, "v": value}[kind]
            target = target.index_copy(1, heads, mine.to(target.dtype))
            return (target if kind == "q" else query, target if kind == "k" else key, target if kind == "v" else value,
                    heads)

        handles: list = []
        if norm is not None:
            handles.append(norm.register_forward_hook(capture_norm_input))
        handles.append(attn.register_forward_pre_hook(capture_attn_call, with_kwargs=True))
        handles.append(_Undo(call_edits(attn, kind, edit)))
        handles.append(_Undo(seen.clear))
        return handles

    def attach_fn(point: HookPoint, fns: list, force_write: bool) -> list:
        return _chained(attn, f"{kind}_call_input", install, point, fns, force_write)

    return HookSite(attn, "edge", on_request=True, attach_fn=attach_fn)


def rerun_kv_input_site(adapter: "Adapter", layer: nn.Module, cfg: "ModelConfig", kind: str, n_kv: int) -> HookSite:
    """``blocks.{l}.hook_k_input | hook_v_input`` of a grouped / multi-query layer whose attention is written
    out by hand and whose fused projection has no room for extra heads (Falcon): a query head whose copy
    changed gets its own key (value), its KV head's projection of its copy, by a re-run of the attention
    module with that KV slot of the projection's output replaced, up to the output projection; that head's
    z row is taken from the re-run. The other heads, hook_k / hook_v (the KV heads) and hook_pattern (the
    shared-key pattern) keep the model's own values. One re-run per changed head; no KV cache."""
    attn, norm, o_proj = adapter.attn(layer), adapter.attn_norm(layer), adapter.o_proj(layer)
    proj = adapter.qkv_proj_sites(layer, cfg)[kind]
    n_heads, group = cfg.n_heads, cfg.n_heads // n_kv

    def shared_state() -> dict:
        state = attn.__dict__.get("_uncover_rerun_kv")
        if state is not None:
            state["holders"] += 1
            return state
        state = attn.__dict__["_uncover_rerun_kv"] = {"holders": 1, "pending": {}}

        def call(module, args, kwargs):
            state["call"] = (args, kwargs)

        def splice(module, args):
            pending = state["pending"]
            if not pending:
                return None
            state["pending"] = {}
            a, kw = state["call"]
            if any(kw.get(k) is not None for k in _CACHE_KWARGS):
                raise UncoverError("'hook_k_input' / 'hook_v_input' edits of this layer re-run its attention and "
                                   "need a forward without a KV cache; run the model without one (model(...), "
                                   "run_with_hooks) instead")
            z = args[0]
            per = z.view(*z.shape[:-1], n_heads, z.shape[-1] // n_heads).clone()
            heads = torch.cat([h for h, _, _, _ in pending.values()]).unique()
            for h in heads.tolist():
                fused = next(iter(pending.values()))[3]
                for hs, mine, site, _ in pending.values():
                    if h in hs.tolist():
                        current = site.read(fused).clone()
                        current[:, :, h // group] = mine[:, :, hs.tolist().index(h)].to(current.dtype)
                        fused = site.write(fused, current)
                z2 = rerun_to(attn, o_proj, {proj.module: fused}, lambda: attn.forward(*a, **kw))
                per[:, :, h] = z2.view_as(per)[:, :, h]
            return (per.view_as(z),) + tuple(args[1:])

        state["handles"] = [attn.register_forward_pre_hook(call, with_kwargs=True),
                            o_proj.register_forward_pre_hook(splice)]
        return state

    def release() -> None:
        state = attn.__dict__["_uncover_rerun_kv"]
        state["holders"] -= 1
        if state["holders"] == 0:
            for h in state["handles"]:
                h.remove()
            del attn.__dict__["_uncover_rerun_kv"]

    def install(chain: _Chain) -> list:
        seen: dict[str, Any] = {}
        state = shared_state()

        def capture_input(module, args, kwargs):
            seen["x"] = args[0] if args else kwargs["hidden_states"]

        def on_projection(module, args, output):
            raw = _first(output)
            x = seen.pop("x")
            b, p, d = x.shape
            view = x.unsqueeze(2).expand(b, p, n_heads, d)
            new = chain.run(view)
            heads = _heads_to_write(chain, new, view)
            if heads is None:
                return None
            normed = new[:, :, heads] if norm is None else norm.forward(new[:, :, heads])
            mine = adapter.project_heads(layer, cfg, proj, kind, normed, heads)
            state["pending"][kind] = (heads, mine, proj, raw)
            return None

        handles: list = [norm.register_forward_hook(lambda m, a, o: seen.update(x=a[0])) if norm is not None
                         else attn.register_forward_pre_hook(capture_input, with_kwargs=True),
                         proj.module.register_forward_hook(on_projection), _Undo(release)]
        return handles

    def attach_fn(point: HookPoint, fns: list, force_write: bool) -> list:
        return _chained(proj.module, f"{kind}_rerun_input", install, point, fns, force_write)

    return HookSite(proj.module, "edge", on_request=True, attach_fn=attach_fn)


def call_site(attn: nn.Module, kind: str) -> HookSite:
    """``attn.hook_{kind}`` read where the attention function receives it: [batch, pos, head, d_head] (after any
    rotary embedding; for multi-head latent attention, after decompression)."""

    def attach_fn(point: HookPoint, fns: list, force_write: bool) -> list:
        return [_Undo(call_hooks(attn, kind, fns, point, force_write))]

    return HookSite(attn, "call", attach_fn=attach_fn)


def inline_pattern_site(attn: nn.Module) -> HookSite:
    """``attn.hook_pattern`` of attention written out by hand: the softmax it computes (core/attention.py)."""

    def attach_fn(point: HookPoint, fns: list, force_write: bool) -> list:
        return [_Undo(inline_pattern_hooks(attn, fns, point))]

    return HookSite(attn, "inline", on_request=True, attach_fn=attach_fn)


def result_site(
    z_module: nn.Module, z_from: str, out_module: nn.Module, W_O: Callable[[], torch.Tensor], d_head: int,
    bias: Callable[[], torch.Tensor | None] = lambda: None,
) -> HookSite:
    """``blocks.{l}.attn.hook_result``. z is read at ``z_module``'s input ("in", merged heads [b, p, H*d_head])
    or output ("out", [b, p, H, d_head]); the attention output is ``out_module``'s output. W_O: [H, d_head, d_model]."""

    def install(chain: _Chain) -> list:
        seen: dict[str, torch.Tensor] = {}

        def per_head(z: torch.Tensor) -> torch.Tensor:
            if z_from == "in":
                z = z.view(*z.shape[:-1], z.shape[-1] // d_head, d_head)
            with onloaded(out_module):  # weights a device map offloaded are read in place
                return torch.einsum("bphe,hed->bphd", z, W_O().to(z.device, z.dtype))

        def replace(output: Any, result: torch.Tensor) -> Any:
            new = chain.run(result)
            if new is result and not chain.force_write:
                return None
            total = new.sum(dim=2)
            with onloaded(out_module):
                b = bias()
                b = None if b is None else b.to(total.device)
            return _replace_first(output, total if b is None else total + b)

        if z_from == "in" and z_module is out_module:
            def hook(module, args, output):
                return replace(output, per_head(args[0]))

            return [out_module.register_forward_hook(hook, prepend=True)]

        def grab(module, args, output):
            seen["z"] = _first(output) if z_from == "out" else args[0]

        def hook(module, args, output):
            return replace(output, per_head(seen.pop("z")))

        return [z_module.register_forward_hook(grab), out_module.register_forward_hook(hook, prepend=True)]

    def attach_fn(point: HookPoint, fns: list, force_write: bool) -> list:
        return _chained(out_module, "result", install, point, fns, force_write)

    return HookSite(out_module, "edge", on_request=True, attach_fn=attach_fn)


def mlp_in_site(norm: nn.Module) -> HookSite:
    """``blocks.{l}.hook_mlp_in``: the input of the MLP's pre-norm ``norm``; a change re-runs only that norm."""

    def install(chain: _Chain) -> list:
        def hook(module, args, output):
            x = args[0]
            t = x.view_as(x)  # its own autograd node: gradients here count the MLP's path only
            new = chain.run(t)
            if new is t and not chain.force_write:
                return None
            return _replace_first(output, module.forward(new))

        # a forward hook sees the input after every pre-hook (hook_resid_mid's writes included)
        return [norm.register_forward_hook(hook, prepend=True)]

    def attach_fn(point: HookPoint, fns: list, force_write: bool) -> list:
        return _chained(norm, "mlp_in", install, point, fns, force_write)

    return HookSite(norm, "edge", on_request=True, attach_fn=attach_fn)
