"""GPT-2: LayerNorm, learned positions (hook_pos_embed), fused c_attn, Conv1D weights stored [in, out]."""
from __future__ import annotations

import torch
from torch import nn

from uncover.core.adapters.base import Adapter, ModelConfig, _merge_heads, _split_heads
from uncover.core.hooks import HookSite


def _fused_site(module: nn.Module, which: int, d_model: int, d_head: int) -> HookSite:
    """Head-split view of the q (0), k (1) or v (2) third of a fused [q | k | v] projection output."""
    start, stop = which * d_model, (which + 1) * d_model

    def write(raw: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.cat([raw[..., :start], _merge_heads(t), raw[..., stop:]], dim=-1)

    return HookSite(module, "out", lambda raw: _split_heads(raw[..., start:stop], d_head), write)


class GPT2Adapter(Adapter):
    name = "gpt2"
    model_types = ("gpt2",)
    normalization = "ln"
    gated_mlp = False

    def body(self, hf):
        return hf.transformer

    def layers(self, hf):
        return hf.transformer.h

    def embed(self, hf):
        return hf.transformer.wte

    def final_norm(self, hf):
        return hf.transformer.ln_f

    def attn(self, layer):
        return layer.attn

    def attn_out_module(self, layer):
        return layer.attn

    def attn_norm(self, layer):
        return layer.ln_1

    def mlp_norm(self, layer):
        return layer.ln_2

    def o_proj(self, layer):
        return layer.attn.c_proj

    def mlp_pre_module(self, layer):
        return layer.mlp.c_fc

    def mlp_down(self, layer):
        return layer.mlp.c_proj

    def config(self, hf) -> ModelConfig:
        c = hf.config
        return ModelConfig(
            n_layers=c.n_layer, n_heads=c.n_head, n_kv_heads=c.n_head, d_model=c.n_embd,
            d_head=c.n_embd // c.n_head, d_mlp=c.n_inner or 4 * c.n_embd, d_vocab=c.vocab_size,
            n_ctx=c.n_positions, act_fn=c.activation_function, normalization="ln", gated_mlp=False,
            parallel=False, architecture=self.name,
        )

    def extra_embed_sites(self, hf):
        return {"hook_pos_embed": HookSite(hf.transformer.wpe, "out")}

    def qkv_sites(self, layer, cfg):
        return {k: _fused_site(layer.attn.c_attn, i, cfg.d_model, cfg.d_head) for i, k in enumerate("qkv")}

    def _qkv(self, layer, cfg, which):
        w = layer.attn.c_attn.weight[:, which * cfg.d_model : (which + 1) * cfg.d_model]  # [d_model, d_model]
        return w.view(cfg.d_model, cfg.n_heads, cfg.d_head).permute(1, 0, 2)

    def W_Q(self, layer, cfg):
        return self._qkv(layer, cfg, 0)

    def W_K(self, layer, cfg):
        return self._qkv(layer, cfg, 1)

    def W_V(self, layer, cfg):
        return self._qkv(layer, cfg, 2)

    def W_O(self, layer, cfg):
        return layer.attn.c_proj.weight.view(cfg.n_heads, cfg.d_head, cfg.d_model)

    def W_in(self, layer, cfg):
        return layer.mlp.c_fc.weight

    def W_out(self, layer, cfg):
        return layer.mlp.c_proj.weight
