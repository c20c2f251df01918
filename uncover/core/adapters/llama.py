"""Llama family: Llama (SmolLM2), Mistral, Qwen2 share the base layout; Qwen3 adds per-head q/k norms."""
from __future__ import annotations

import torch
from torch import nn

from uncover.core.adapters.base import Adapter, ModelConfig, _kv_site
from uncover.core.hooks import HookSite


class LlamaAdapter(Adapter):
    name = "llama"
    model_types = ("llama", "mistral", "qwen2")


class Qwen3Adapter(Adapter):
    """hook_q / hook_k are read after the per-head RMSNorm (q_norm, k_norm), before rotary embeddings."""

    name = "qwen3"
    model_types = ("qwen3",)

    def qkv_sites(self, layer: nn.Module, cfg: ModelConfig) -> dict[str, HookSite]:
        a = layer.self_attn
        n = cfg.n_kv_heads

        def write_k(raw: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # keep carried heads (core/edges.py)
            return t if raw.shape[-2] == n else torch.cat([t, raw[..., n:, :]], dim=-2)

        return {
            "q": HookSite(a.q_norm, "out"),
            "k": HookSite(a.k_norm, "out", lambda t: t[..., :n, :], write_k),
            "v": _kv_site(a.v_proj, n, cfg.d_head),
        }

    def qkv_proj_sites(self, layer: nn.Module, cfg: ModelConfig) -> dict[str, HookSite]:
        return Adapter.qkv_sites(self, layer, cfg)
