"""Phi-3: fused qkv_proj [q | k | v] and fused gate_up_proj [gate | up].

While per-query-head k/v ride along (core/edges.py) the layout is [q | k (+ extra k heads) | v (+ extra v
heads)]: the attention module slices k by its ``num_key_value_heads`` (raised for the extra k heads) and
takes the rest as v, so hook_k / hook_v read the first KV heads of their part, wherever v starts."""
from __future__ import annotations

import torch
from torch import nn

from uncover.core.adapters.base import Adapter, ModelConfig, _merge_heads, _split_heads
from uncover.core.hooks import HookSite


def _slice_site(module: nn.Module, start: int, stop: int, d_head: int | None) -> HookSite:
    """A site that is columns [start:stop) of a fused projection's output, optionally split into heads."""

    def read(raw: torch.Tensor) -> torch.Tensor:
        t = raw[..., start:stop]
        return _split_heads(t, d_head) if d_head else t

    def write(raw: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = _merge_heads(t) if d_head else t
        return torch.cat([raw[..., :start], t, raw[..., stop:]], dim=-1)

    return HookSite(module, "out", read, write)


class Phi3Adapter(Adapter):
    name = "phi3"
    model_types = ("phi3",)

    def qkv_sites(self, layer: nn.Module, cfg: ModelConfig) -> dict[str, HookSite]:
        a = layer.self_attn
        q, kv = cfg.n_heads * cfg.d_head, cfg.n_kv_heads * cfg.d_head

        def v_start() -> int:  # v begins after k and any extra k heads
            return q + a.num_key_value_heads * cfg.d_head

        def read_v(raw: torch.Tensor) -> torch.Tensor:
            return _split_heads(raw[..., v_start() : v_start() + kv], cfg.d_head)

        def write_v(raw: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return torch.cat([raw[..., : v_start()], _merge_heads(t), raw[..., v_start() + kv :]], dim=-1)

        return {
            "q": _slice_site(a.qkv_proj, 0, q, cfg.d_head),
            "k": _slice_site(a.qkv_proj, q, q + kv, cfg.d_head),
            "v": HookSite(a.qkv_proj, "out", read_v, write_v),
        }

    def project_heads(self, layer, cfg, site, kind, normed, heads):
        out = layer.self_attn.qkv_proj.forward(normed)  # fresh: the plain [q | k | v] layout
        q, kv = cfg.n_heads * cfg.d_head, cfg.n_kv_heads * cfg.d_head
        part = {"q": out[..., :q], "k": out[..., q : q + kv], "v": out[..., q + kv :]}[kind]
        per = _split_heads(part, cfg.d_head)
        src = heads if kind == "q" else heads // (cfg.n_heads // cfg.n_kv_heads)
        return per[:, :, torch.arange(len(heads), device=heads.device), src]

    def head_weights(self, layer, cfg, site, kind, heads):
        return None  # project_heads re-runs the fused projection

    def carry_attrs(self, attn, cfg, kind, n_extra):
        return {"num_key_value_heads": cfg.n_kv_heads + n_extra} if kind == "k" else {}

    def mlp_pre_module(self, layer: nn.Module) -> nn.Module:
        return layer.mlp.gate_up_proj

    def mlp_pre_site(self, layer: nn.Module, cfg: ModelConfig) -> HookSite:
        return _slice_site(layer.mlp.gate_up_proj, 0, cfg.d_mlp, None)

    def _qkv_weight(self, layer: nn.Module, cfg: ModelConfig, which: int) -> torch.Tensor:
        q, kv = cfg.n_heads * cfg.d_head, cfg.n_kv_heads * cfg.d_head
        bounds = [(0, q), (q, q + kv), (q + kv, q + 2 * kv)][which]
        return layer.self_attn.qkv_proj.weight[bounds[0] : bounds[1]]

    def W_Q(self, layer, cfg):
        return self._in_proj(self._qkv_weight(layer, cfg, 0), cfg.n_heads, cfg)

    def W_K(self, layer, cfg):
        return self._in_proj(self._qkv_weight(layer, cfg, 1), cfg.n_kv_heads, cfg)

    def W_V(self, layer, cfg):
        return self._in_proj(self._qkv_weight(layer, cfg, 2), cfg.n_kv_heads, cfg)

    def W_in(self, layer, cfg):
        return layer.mlp.gate_up_proj.weight[: cfg.d_mlp].T
