"""What every architecture adapter provides: config, hook sites and per-head weights.

An adapter maps the standard (TransformerLens-style) names onto one Hugging Face architecture. Most
decoder-only models share the layout below; each family file overrides only what differs.
Weights are returned in the standard per-head layouts (views or small copies of the HF parameters):
W_Q [n_heads, d_model, d_head], W_K/W_V [n_kv_heads, d_model, d_head], W_O [n_heads, d_head, d_model],
W_in [d_model, d_mlp], W_out [d_mlp, d_model], W_E [d_vocab, d_model], W_U [d_model, d_vocab].
The edge-level names (core/edges.py: hook_q/k/v_input, attn.hook_result, hook_mlp_in) are built by
``edge_sites`` from ``attn_norm``, ``qkv_proj_sites``, ``project_heads``, ``carry_attrs``, ``result_site`` and
``mlp_norm``; a family overrides only those whose layout differs.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import nn

from uncover.core import edges
from uncover.core.hooks import HookSite


@dataclass(frozen=True)
class ModelConfig:
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_mlp: int
    d_vocab: int
    n_ctx: int
    act_fn: str
    normalization: str  # "rms", "ln", or "none" (toy models)
    gated_mlp: bool
    parallel: bool  # attention and MLP read the same residual (GPT-NeoX): no hook_resid_mid
    architecture: str


def _split_heads(t: torch.Tensor, d_head: int) -> torch.Tensor:
    return t.view(*t.shape[:-1], t.shape[-1] // d_head, d_head)


def _merge_heads(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(*t.shape[:-2], t.shape[-2] * t.shape[-1])


def _kv_site(module: nn.Module, n: int, d_head: int) -> HookSite:
    """The first ``n`` heads of a k or v projection's output [..., n * d_head], split into heads. While a
    grouped-query layer carries per-query-head k/v after them (core/edges.py), reads skip those and writes
    keep them."""

    def read(raw: torch.Tensor) -> torch.Tensor:
        return _split_heads(raw, d_head)[..., :n, :]

    def write(raw: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if raw.shape[-1] == n * d_head:
            return _merge_heads(t)
        return torch.cat([_merge_heads(t), raw[..., n * d_head :]], dim=-1)

    return HookSite(module, "out", read, write)


_ROWS: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def _head_rows(site: HookSite) -> torch.Tensor | None:
    """For a site whose module is a plain ``nn.Linear`` and whose ``read`` only reshapes / slices its output:
    the output features of each head, LongTensor [heads, d_head] (found by reading the feature indices
    themselves); None otherwise (the caller projects through the module)."""
    module = site.module
    if type(module) is not nn.Linear or module.weight.device.type == "meta":  # meta: offloaded by a device map
        return None
    cache = _ROWS.setdefault(module, {})
    key = site.read
    if key not in cache:
        n = module.out_features
        index = torch.arange(n, dtype=torch.float64).view(1, 1, n)
        try:
            rows = site.read(index)[0, 0]
        except Exception:  # a read that needs a real activation
            rows = None
        ok = rows is not None and rows.dim() == 2 and bool((rows == rows.round()).all()) \
            and rows.min() >= 0 and rows.max() < n
        cache[key] = rows.long() if ok else None
    return cache[key]


class Adapter:
    """Llama-style layout (Llama, Mistral, Qwen2): separate q/k/v/o, gated MLP, pre-norms."""

    name = "llama"
    model_types: tuple[str, ...] = ("llama", "mistral", "qwen2")
    normalization = "rms"
    gated_mlp = True
    parallel = False

    # ---- module paths -------------------------------------------------------------------------
    def body(self, hf: nn.Module) -> nn.Module:
        return hf.model

    def layers(self, hf: nn.Module) -> nn.ModuleList:
        return self.body(hf).layers

    def embed(self, hf: nn.Module) -> nn.Module:
        return self.body(hf).embed_tokens

    def final_norm(self, hf: nn.Module) -> nn.Module:
        return self.body(hf).norm

    def lm_head(self, hf: nn.Module) -> nn.Module:
        return hf.get_output_embeddings()

    def attn(self, layer: nn.Module) -> nn.Module:
        return layer.self_attn

    def attn_out_module(self, layer: nn.Module) -> nn.Module:
        return layer.self_attn

    def mlp_out_module(self, layer: nn.Module) -> nn.Module:
        return layer.mlp

    def mlp_norm(self, layer: nn.Module) -> nn.Module:
        """The norm whose input is resid_mid."""
        return layer.post_attention_layernorm

    def o_proj(self, layer: nn.Module) -> nn.Module:
        return layer.self_attn.o_proj

    def mlp_pre_module(self, layer: nn.Module) -> nn.Module:
        return layer.mlp.gate_proj

    def mlp_down(self, layer: nn.Module) -> nn.Module:
        return layer.mlp.down_proj

    # ---- config -------------------------------------------------------------------------------
    def config(self, hf: nn.Module) -> ModelConfig:
        c = hf.config
        n_heads = c.num_attention_heads
        d_head = getattr(c, "head_dim", None) or c.hidden_size // n_heads
        return ModelConfig(
            n_layers=c.num_hidden_layers,
            n_heads=n_heads,
            n_kv_heads=getattr(c, "num_key_value_heads", None) or n_heads,
            d_model=c.hidden_size,
            d_head=d_head,
            d_mlp=c.intermediate_size,
            d_vocab=c.vocab_size,
            n_ctx=c.max_position_embeddings,
            act_fn=getattr(c, "hidden_act", None) or getattr(c, "hidden_activation", "unknown"),
            normalization=self.normalization,
            gated_mlp=self.gated_mlp,
            parallel=self.parallel,
            architecture=self.name,
        )

    # ---- hook sites ---------------------------------------------------------------------------
    def qkv_sites(self, layer: nn.Module, cfg: ModelConfig) -> dict[str, HookSite]:
        a = layer.self_attn
        split = lambda t: _split_heads(t, cfg.d_head)  # noqa: E731
        write = lambda raw, t: _merge_heads(t)  # noqa: E731
        return {
            "q": HookSite(a.q_proj, "out", split, write),
            "k": _kv_site(a.k_proj, cfg.n_kv_heads, cfg.d_head),
            "v": _kv_site(a.v_proj, cfg.n_kv_heads, cfg.d_head),
        }

    def mlp_pre_site(self, layer: nn.Module, cfg: ModelConfig) -> HookSite:
        return HookSite(self.mlp_pre_module(layer), "out")

    def sites(self, hf: nn.Module, cfg: ModelConfig) -> dict[str, HookSite]:
        sites = {"hook_embed": HookSite(self.embed(hf), "out")}
        sites.update(self.extra_embed_sites(hf))
        split = lambda t: _split_heads(t, cfg.d_head)  # noqa: E731
        for l, layer in enumerate(self.layers(hf)):
            p = f"blocks.{l}."
            sites[p + "hook_resid_pre"] = HookSite(layer, "in")
            if not cfg.parallel:
                sites[p + "hook_resid_mid"] = HookSite(self.mlp_norm(layer), "in", compensate=layer)
            sites[p + "hook_resid_post"] = HookSite(layer, "out")
            sites[p + "hook_attn_out"] = HookSite(self.attn_out_module(layer), "out")
            sites[p + "hook_mlp_out"] = HookSite(self.mlp_out_module(layer), "out")
            for k, site in self.qkv_sites(layer, cfg).items():
                sites[p + f"attn.hook_{k}"] = site
            sites[p + "attn.hook_z"] = HookSite(self.o_proj(layer), "in", split, lambda raw, t: _merge_heads(t))
            sites[p + "attn.hook_pattern"] = HookSite(self.attn(layer), "pattern", pattern_layer=l, on_request=True)
            sites[p + "mlp.hook_pre"] = self.mlp_pre_site(layer, cfg)
            sites[p + "mlp.hook_post"] = HookSite(self.mlp_down(layer), "in")
            sites.update(self.edge_sites(layer, l, cfg))
        sites["ln_final.hook_normalized"] = HookSite(self.final_norm(hf), "out")
        return sites

    def extra_embed_sites(self, hf: nn.Module) -> dict[str, HookSite]:
        return {}

    # ---- edge-level sites (on request; core/edges.py says what each is) ------------------------
    def edge_sites(self, layer: nn.Module, l: int, cfg: ModelConfig) -> dict[str, HookSite]:
        """hook_q_input / hook_k_input / hook_v_input, attn.hook_result and hook_mlp_in of layer ``l``."""
        p = f"blocks.{l}."
        sites = {p + f"hook_{k}_input": edges.head_input_site(self, layer, cfg, k) for k in "qkv"}
        sites[p + "attn.hook_result"] = self.result_site(layer, cfg)
        sites[p + "hook_mlp_in"] = edges.mlp_in_site(self.mlp_norm(layer))
        return sites

    def attn_norm(self, layer: nn.Module) -> nn.Module | None:
        """The pre-attention norm, whose input is the residual the heads read (None: the attention reads it)."""
        return layer.input_layernorm

    def qkv_proj_sites(self, layer: nn.Module, cfg: ModelConfig) -> dict[str, HookSite]:
        """q / k / v at the projections' outputs (before any per-head norm or rotary embedding)."""
        return self.qkv_sites(layer, cfg)

    def project_heads(self, layer: nn.Module, cfg: ModelConfig, site: HookSite, kind: str,
                      normed: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
        """q, k or v of query heads ``heads`` [n], each from its own normed input [b, p, n, d_model] ->
        [b, p, n, d_head] (k, v: with the weights of each query head's KV head). ``site``: qkv_proj_sites[kind]."""
        src = heads if kind == "q" else heads // (cfg.n_heads // cfg.n_kv_heads)
        rows = _head_rows(site)
        if rows is not None:  # a plain linear layer: each copy meets only its own head's weight rows
            r = rows.to(heads.device)[src]  # [n, d_head]
            w = site.module.weight[r]  # [n, d_head, d_model]
            out = torch.einsum("bpnd,ned->bpne", normed, w.to(normed.dtype))
            bias = site.module.bias
            return out if bias is None else out + bias[r].to(out.dtype)
        per = site.read(site.module.forward(normed))  # [b, p, n, heads of this kind, d_head]
        return per[:, :, torch.arange(len(heads), device=heads.device), src]

    def head_weights(self, layer: nn.Module, cfg: ModelConfig, site: HookSite, kind: str,
                     heads: torch.Tensor) -> torch.Tensor | None:
        """The weight rows [n, d_head, d_model] by which ``project_heads`` maps query heads ``heads``' normed
        inputs (k, v: their KV heads' rows) where that is a plain linear map; None otherwise."""
        rows = _head_rows(site)
        if rows is None:
            return None
        src = heads if kind == "q" else heads // (cfg.n_heads // cfg.n_kv_heads)
        return site.module.weight[rows.to(heads.device)[src]]

    def carry_attrs(self, attn: nn.Module, cfg: ModelConfig, kind: str, n_extra: int) -> dict:
        """Attention-module attributes to set while its k (v) projection carries ``n_extra`` extra heads."""
        return {}

    def result_site(self, layer: nn.Module, cfg: ModelConfig) -> HookSite:
        o = self.o_proj(layer)
        return edges.result_site(o, "in", o, lambda: self.W_O(layer, cfg), cfg.d_head,
                                 lambda: getattr(o, "bias", None))

    # ---- weights ------------------------------------------------------------------------------
    def W_E(self, hf: nn.Module) -> torch.Tensor:
        emb = self.embed(hf)
        scale = getattr(emb, "embed_scale", None)  # Gemma scales embeddings inside the module
        return emb.weight if scale is None else emb.weight * scale.to(emb.weight.dtype)

    def W_U(self, hf: nn.Module) -> torch.Tensor:
        return self.lm_head(hf).weight.T

    def W_Q(self, layer: nn.Module, cfg: ModelConfig) -> torch.Tensor:
        return self._in_proj(layer.self_attn.q_proj.weight, cfg.n_heads, cfg)

    def W_K(self, layer: nn.Module, cfg: ModelConfig) -> torch.Tensor:
        return self._in_proj(layer.self_attn.k_proj.weight, cfg.n_kv_heads, cfg)

    def W_V(self, layer: nn.Module, cfg: ModelConfig) -> torch.Tensor:
        return self._in_proj(layer.self_attn.v_proj.weight, cfg.n_kv_heads, cfg)

    @staticmethod
    def _in_proj(w: torch.Tensor, n: int, cfg: ModelConfig) -> torch.Tensor:
        # nn.Linear weight [n*d_head, d_model] -> [n, d_model, d_head]
        return w.view(n, cfg.d_head, cfg.d_model).transpose(1, 2)

    def W_O(self, layer: nn.Module, cfg: ModelConfig) -> torch.Tensor:
        w = self.o_proj(layer).weight  # [d_model, n_heads*d_head]
        return w.view(cfg.d_model, cfg.n_heads, cfg.d_head).permute(1, 2, 0)

    def W_in(self, layer: nn.Module, cfg: ModelConfig) -> torch.Tensor:
        return self.mlp_pre_module(layer).weight.T

    def W_out(self, layer: nn.Module, cfg: ModelConfig) -> torch.Tensor:
        return self.mlp_down(layer).weight.T

    # ---- final norm and unembedding -----------------------------------------------------------
    def norm_weight(self, norm: nn.Module) -> torch.Tensor:
        return norm.weight

    def norm_eps(self, norm: nn.Module) -> float:
        return getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", 1e-6)

    def unembed(self, hf: nn.Module, x: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(hf)(x)
        cap = getattr(hf.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits
