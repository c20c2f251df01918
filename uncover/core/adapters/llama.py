"""Llama family: Llama (SmolLM2), Mistral, Qwen2 share the base layout; Qwen3 adds per-head q/k norms."""
from __future__ import annotations

from torch import nn

from uncover.core.adapters.base import Adapter, ModelConfig, _merge_heads, _split_heads
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
        return {
            "q": HookSite(a.q_norm, "out"),
            "k": HookSite(a.k_norm, "out"),
            "v": HookSite(a.v_proj, "out", lambda t: _split_heads(t, cfg.d_head), lambda raw, t: _merge_heads(t)),
        }
