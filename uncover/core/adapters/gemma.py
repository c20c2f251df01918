"""Gemma family. All scale embeddings by sqrt(d_model) inside the embedding module and use RMSNorm with
weight (1 + w). Gemma 2 and 3 add post-norms: hook_attn_out / hook_mlp_out are the post-normed outputs,
exactly what is added to the residual stream. Gemma 3 reads hook_q / hook_k after its per-head q/k norms."""
from __future__ import annotations

import torch
from torch import nn

from uncover.core.adapters.base import Adapter, ModelConfig, _merge_heads, _split_heads
from uncover.core.hooks import HookSite


class GemmaAdapter(Adapter):
    name = "gemma"
    model_types = ("gemma",)

    def norm_weight(self, norm: nn.Module) -> torch.Tensor:
        return 1.0 + norm.weight


class Gemma2Adapter(GemmaAdapter):
    name = "gemma2"
    model_types = ("gemma2",)

    def attn_out_module(self, layer: nn.Module) -> nn.Module:
        return layer.post_attention_layernorm

    def mlp_out_module(self, layer: nn.Module) -> nn.Module:
        return layer.post_feedforward_layernorm

    def mlp_norm(self, layer: nn.Module) -> nn.Module:
        return layer.pre_feedforward_layernorm


class Gemma3Adapter(Gemma2Adapter):
    name = "gemma3"
    model_types = ("gemma3_text", "gemma3")

    def qkv_sites(self, layer: nn.Module, cfg: ModelConfig) -> dict[str, HookSite]:
        a = layer.self_attn
        # q_norm / k_norm see [batch, head, pos, d_head]; the standard layout is [batch, pos, head, d_head]
        swap = lambda t: t.transpose(1, 2)  # noqa: E731
        return {
            "q": HookSite(a.q_norm, "out", swap, lambda raw, t: t.transpose(1, 2)),
            "k": HookSite(a.k_norm, "out", swap, lambda raw, t: t.transpose(1, 2)),
            "v": HookSite(a.v_proj, "out", lambda t: _split_heads(t, cfg.d_head), lambda raw, t: _merge_heads(t)),
        }
