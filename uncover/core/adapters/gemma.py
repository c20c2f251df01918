"""Gemma family. All scale embeddings by sqrt(d_model) inside the embedding module and use RMSNorm with
weight (1 + w). Gemma 2 and 3 add post-norms: hook_attn_out / hook_mlp_out are the post-normed outputs,
exactly what is added to the residual stream, and attn.hook_result (per head, summed: the o_proj output) is
*before* the post-attention norm: hook_attn_out = post_attention_layernorm(sum of hook_result over heads).
Gemma 3 reads hook_q / hook_k after its per-head q/k norms."""
from __future__ import annotations

import torch
from torch import nn

from uncover.core.adapters.base import Adapter, ModelConfig, _kv_site
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
        n = cfg.n_kv_heads
        # q_norm / k_norm see [batch, head, pos, d_head]; the standard layout is [batch, pos, head, d_head]
        swap = lambda t: t.transpose(1, 2)  # noqa: E731

        def write_k(raw: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # keep carried heads (core/edges.py)
            return t.transpose(1, 2) if raw.shape[1] == n else torch.cat([t.transpose(1, 2), raw[:, n:]], dim=1)

        return {
            "q": HookSite(a.q_norm, "out", swap, lambda raw, t: t.transpose(1, 2)),
            "k": HookSite(a.k_norm, "out", lambda t: t[:, :n].transpose(1, 2), write_k),
            "v": _kv_site(a.v_proj, n, cfg.d_head),
        }

    def qkv_proj_sites(self, layer: nn.Module, cfg: ModelConfig) -> dict[str, HookSite]:
        return Adapter.qkv_sites(self, layer, cfg)
