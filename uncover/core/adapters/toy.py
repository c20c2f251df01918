"""uncover's own toy transformers (uncover.dynamics.models.ToyTransformer).

Their hook points are identity modules already named like the standard hooks (``hook_embed``,
``blocks.{l}.attn.hook_pattern`` ...), so every site is simply that module's output. Attention-only
models (d_mlp = 0) have no MLP sites and no hook_resid_mid. ``d_vocab`` is the number of output classes
(the logits' last axis); the input vocabulary may be larger (e.g. the '=' token of modular arithmetic).
Models without LayerNorm report ``normalization="none"``: their final norm is the identity.
"""
from __future__ import annotations

import torch
from torch import nn

from uncover.core import edges
from uncover.core.adapters.base import Adapter, ModelConfig
from uncover.core.hooks import HookSite


class ToyAdapter(Adapter):
    name = "toy"
    model_types = ("uncover-toy",)
    gated_mlp = False

    def body(self, hf: nn.Module) -> nn.Module:
        return hf

    def layers(self, hf: nn.Module) -> nn.ModuleList:
        return hf.blocks

    def embed(self, hf: nn.Module) -> nn.Module:
        return hf.embed

    def final_norm(self, hf: nn.Module) -> nn.Module:
        return hf.ln_final

    def lm_head(self, hf: nn.Module) -> nn.Module:
        return hf.unembed

    def attn(self, layer: nn.Module) -> nn.Module:
        return layer.attn

    def mlp_norm(self, layer: nn.Module) -> nn.Module:
        return layer.ln2

    def attn_out_module(self, layer: nn.Module) -> nn.Module:
        return layer.hook_attn_out

    def attn_norm(self, layer: nn.Module) -> nn.Module:
        return layer.ln1  # an identity without layer_norm: the heads read the residual itself

    def qkv_proj_sites(self, layer: nn.Module, cfg: ModelConfig) -> dict[str, HookSite]:
        return {k: HookSite(getattr(layer.attn, f"hook_{k}"), "out") for k in "qkv"}

    def project_heads(self, layer, cfg, site, kind, normed, heads):
        w = getattr(layer.attn, f"W_{kind.upper()}")[heads]  # [n, d_model, d_head]
        return torch.einsum("bpnd,nde->bpne", normed, w)

    def head_weights(self, layer, cfg, site, kind, heads):
        return getattr(layer.attn, f"W_{kind.upper()}")[heads].transpose(1, 2)  # [n, d_head, d_model]

    def result_site(self, layer: nn.Module, cfg: ModelConfig) -> HookSite:
        # z is hook_z's output; the attention output is the attention module's (no output projection module)
        return edges.result_site(layer.attn.hook_z, "out", layer.attn, lambda: layer.attn.W_O, cfg.d_head)

    def edge_sites(self, layer: nn.Module, l: int, cfg: ModelConfig) -> dict[str, HookSite]:
        sites = super().edge_sites(layer, l, cfg)
        if layer.mlp is None:
            del sites[f"blocks.{l}.hook_mlp_in"]
        return sites

    def config(self, hf: nn.Module) -> ModelConfig:
        c = hf.cfg
        return ModelConfig(
            n_layers=c.n_layers, n_heads=c.n_heads, n_kv_heads=c.n_heads, d_model=c.d_model, d_head=c.d_head,
            d_mlp=c.d_mlp, d_vocab=c.d_vocab_out, n_ctx=c.n_ctx, act_fn=c.act_fn,
            normalization="ln" if c.layer_norm else "none", gated_mlp=False, parallel=False,
            architecture=self.name,
        )

    def sites(self, hf: nn.Module, cfg: ModelConfig) -> dict[str, HookSite]:
        sites = {"hook_embed": HookSite(hf.hook_embed, "out"), "hook_pos_embed": HookSite(hf.hook_pos_embed, "out")}
        for l, block in enumerate(hf.blocks):
            p = f"blocks.{l}."
            names = ["hook_resid_pre", "hook_attn_out"]
            names += ["hook_resid_mid", "hook_mlp_out"] if block.mlp is not None else []
            names += ["hook_resid_post"]
            names += [f"attn.hook_{k}" for k in ("q", "k", "v", "pattern", "z")]
            names += ["mlp.hook_pre", "mlp.hook_post"] if block.mlp is not None else []
            for name in names:
                sites[p + name] = HookSite(block.get_submodule(name), "out", on_request=name.endswith("pattern"))
            sites.update(self.edge_sites(block, l, cfg))
        if isinstance(hf.ln_final, nn.LayerNorm):
            sites["ln_final.hook_normalized"] = HookSite(hf.ln_final, "out")
        return sites

    # weights: the toy model stores attention per head already
    def W_E(self, hf: nn.Module) -> torch.Tensor:
        return hf.embed.weight

    def W_U(self, hf: nn.Module) -> torch.Tensor:
        return hf.unembed.weight.T

    def W_Q(self, layer: nn.Module, cfg: ModelConfig) -> torch.Tensor:
        return layer.attn.W_Q

    def W_K(self, layer: nn.Module, cfg: ModelConfig) -> torch.Tensor:
        return layer.attn.W_K

    def W_V(self, layer: nn.Module, cfg: ModelConfig) -> torch.Tensor:
        return layer.attn.W_V

    def W_O(self, layer: nn.Module, cfg: ModelConfig) -> torch.Tensor:
        return layer.attn.W_O

    def W_in(self, layer: nn.Module, cfg: ModelConfig) -> torch.Tensor:
        return layer.mlp.fc_in.weight.T

    def W_out(self, layer: nn.Module, cfg: ModelConfig) -> torch.Tensor:
        return layer.mlp.fc_out.weight.T

    def norm_weight(self, norm: nn.Module) -> torch.Tensor:
        weight = getattr(norm, "weight", None)
        return weight if weight is not None else torch.ones(())

    def norm_eps(self, norm: nn.Module) -> float:
        return getattr(norm, "eps", 0.0)

    def unembed(self, hf: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return hf.unembed(x)
