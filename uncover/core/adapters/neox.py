"""GPT-NeoX (Pythia): LayerNorm, fused query_key_value laid out per head as [q | k | v], and usually a
parallel residual (attention and MLP read the same residual; then there is no hook_resid_mid)."""
from __future__ import annotations

import torch
from torch import nn

from uncover.core.adapters.base import Adapter, ModelConfig
from uncover.core.hooks import HookSite


def _neox_site(module: nn.Module, which: int, n_heads: int, d_head: int) -> HookSite:
    def read(raw: torch.Tensor) -> torch.Tensor:
        return raw.view(*raw.shape[:-1], n_heads, 3 * d_head)[..., which * d_head : (which + 1) * d_head]

    def write(raw: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        parts = list(raw.view(*raw.shape[:-1], n_heads, 3, d_head).unbind(-2))
        parts[which] = t
        return torch.stack(parts, dim=-2).reshape(raw.shape)

    return HookSite(module, "out", read, write)


class NeoXAdapter(Adapter):
    name = "gpt_neox"
    model_types = ("gpt_neox",)
    normalization = "ln"
    gated_mlp = False

    def body(self, hf):
        return hf.gpt_neox

    def layers(self, hf):
        return hf.gpt_neox.layers

    def embed(self, hf):
        return hf.gpt_neox.embed_in

    def final_norm(self, hf):
        return hf.gpt_neox.final_layer_norm

    def attn(self, layer):
        return layer.attention

    def attn_out_module(self, layer):
        return layer.post_attention_dropout

    def mlp_out_module(self, layer):
        return layer.post_mlp_dropout

    def mlp_norm(self, layer):
        return layer.post_attention_layernorm

    def o_proj(self, layer):
        return layer.attention.dense

    def mlp_pre_module(self, layer):
        return layer.mlp.dense_h_to_4h

    def mlp_down(self, layer):
        return layer.mlp.dense_4h_to_h

    def config(self, hf) -> ModelConfig:
        c = hf.config
        return ModelConfig(
            n_layers=c.num_hidden_layers, n_heads=c.num_attention_heads, n_kv_heads=c.num_attention_heads,
            d_model=c.hidden_size, d_head=c.hidden_size // c.num_attention_heads, d_mlp=c.intermediate_size,
            d_vocab=c.vocab_size, n_ctx=c.max_position_embeddings, act_fn=c.hidden_act, normalization="ln",
            gated_mlp=False, parallel=bool(c.use_parallel_residual), architecture=self.name,
        )

    def qkv_sites(self, layer, cfg):
        qkv = layer.attention.query_key_value
        return {k: _neox_site(qkv, i, cfg.n_heads, cfg.d_head) for i, k in enumerate("qkv")}

    def _qkv(self, layer, cfg, which):
        w = layer.attention.query_key_value.weight.view(cfg.n_heads, 3, cfg.d_head, cfg.d_model)
        return w[:, which].transpose(1, 2)

    def W_Q(self, layer, cfg):
        return self._qkv(layer, cfg, 0)

    def W_K(self, layer, cfg):
        return self._qkv(layer, cfg, 1)

    def W_V(self, layer, cfg):
        return self._qkv(layer, cfg, 2)
