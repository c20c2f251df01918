"""Models whose layers have different widths: the format of physically pruned models.

A pruned model is its family's transformers class whose attention and MLP projections are rebuilt at
each layer's own size, described by ``config.uncover_pruning``::

    {"base": "LlamaForCausalLM",
     "heads": [[kept query head ids of layer 0], ...], "kv_heads": [[kept KV head ids], ...],
     "kv_of_head": [[index into kv_heads for each kept query head], ...], "d_mlp": [kept neurons per layer]}

Under grouped-query attention a layer whose query heads no longer come in equal groups per KV head keeps
only its kept KV heads' weights and gathers them per query head after the projection (what ``repeat_kv``
does for equal groups). Supported: families with ``self_attn.{q,k,v,o}_proj`` and
``mlp.{gate,up,down}_proj`` (Llama, Mistral, Qwen2/3, Gemma 1/2/3).

This file imports only torch and transformers: it is copied next to a saved pruned model as
``modeling_uncover_pruned.py``, so ``AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)``
loads it; ``uncover.load(dir)`` builds the same class from this module without running the copied file.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

LAYOUT_KEY = "uncover_pruning"
MODELING_FILE = "modeling_uncover_pruned.py"
CLASS_NAME = "UncoverPrunedForCausalLM"


class GatherLinear(nn.Linear):
    """``y = (x W^T + b)[..., rows]``: the kept KV heads' projection, repeated for each query head reading it."""

    def __init__(self, in_features: int, out_features: int, rows: list[int], bias: bool, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.rows = [int(r) for r in rows]
        self._index: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        if self._index is None or self._index.device != y.device:
            self._index = torch.tensor(self.rows, dtype=torch.long, device=y.device)
        return y.index_select(-1, self._index)


def equal_groups(kv_of_head: list[int], n_kv: int) -> bool:
    """Whether kept query heads come in equal, ordered groups per kept KV head (plain ``repeat_kv`` works)."""
    if n_kv == 0 or len(kv_of_head) % n_kv:
        return False
    g = len(kv_of_head) // n_kv
    return list(kv_of_head) == [i // g for i in range(len(kv_of_head))]


def _linear(old: nn.Linear, n_in: int, n_out: int) -> nn.Linear:
    w = old.weight
    return nn.Linear(n_in, n_out, bias=old.bias is not None, device=w.device, dtype=w.dtype)


def shrink(hf: nn.Module, layout: dict) -> None:
    """Rebuild every layer's projections at the layout's sizes (weights uninitialised: load or copy them)."""
    layers = hf.model.layers
    for l, layer in enumerate(layers):
        attn, mlp = layer.self_attn, layer.mlp
        d_head = attn.head_dim
        d_model = attn.q_proj.in_features
        n_q, n_kv = len(layout["heads"][l]), len(layout["kv_heads"][l])
        kv_of = layout["kv_of_head"][l]
        attn.q_proj = _linear(attn.q_proj, d_model, n_q * d_head)
        attn.o_proj = _linear(attn.o_proj, n_q * d_head, d_model)
        if equal_groups(kv_of, n_kv):
            attn.k_proj = _linear(attn.k_proj, d_model, n_kv * d_head)
            attn.v_proj = _linear(attn.v_proj, d_model, n_kv * d_head)
            attn.num_key_value_groups = n_q // n_kv
        else:
            rows = [k * d_head + i for k in kv_of for i in range(d_head)]
            for name in ("k_proj", "v_proj"):
                old = getattr(attn, name)
                setattr(attn, name, GatherLinear(d_model, n_kv * d_head, rows, old.bias is not None,
                                                 old.weight.device, old.weight.dtype))
            attn.num_key_value_groups = 1
        d_mlp = int(layout["d_mlp"][l])
        mlp.gate_proj = _linear(mlp.gate_proj, d_model, d_mlp)
        mlp.up_proj = _linear(mlp.up_proj, d_model, d_mlp)
        mlp.down_proj = _linear(mlp.down_proj, d_mlp, d_model)


def pruned_class(base: str) -> type:
    """A subclass of ``transformers.<base>`` that shrinks itself to ``config.uncover_pruning`` on init."""
    import transformers

    Base = getattr(transformers, base)

    class UncoverPrunedForCausalLM(Base):
        def __init__(self, config, *args, **kwargs):
            super().__init__(config, *args, **kwargs)
            shrink(self, getattr(config, LAYOUT_KEY))

    UncoverPrunedForCausalLM.__qualname__ = UncoverPrunedForCausalLM.__name__ = CLASS_NAME
    return UncoverPrunedForCausalLM


def pruned_layout(path: str | Path) -> dict | None:
    """The pruning layout of a local model folder's config.json, or None when it is not a pruned model."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return None
    return json.loads(config.read_text()).get(LAYOUT_KEY)


def modeling_source(base: str) -> str:
    """This module's source plus the class line: the ``modeling_uncover_pruned.py`` saved with a model."""
    return Path(__file__).read_text() + f"\n\n{CLASS_NAME} = pruned_class({base!r})\n"
