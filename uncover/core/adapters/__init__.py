"""Architecture adapters. ``adapter_for(hf_model)`` picks one: a hand-written family adapter where a family
has one (its ``model_type`` and the modules it names both match), otherwise the structural adapter built from
what the model's modules do (structural.py), otherwise the residual-stream level, otherwise a clear error."""
from __future__ import annotations

from torch import nn

from uncover.core.adapters.base import Adapter, ModelConfig
from uncover.core.adapters.gemma import Gemma2Adapter, Gemma3Adapter, GemmaAdapter
from uncover.core.adapters.gpt2 import GPT2Adapter
from uncover.core.adapters.llama import LlamaAdapter, Qwen3Adapter
from uncover.core.adapters.neox import NeoXAdapter
from uncover.core.adapters.phi3 import Phi3Adapter
from uncover.core.adapters.structural import ResidualAdapter, StructuralAdapter, structural_adapter
from uncover.errors import UncoverError

ADAPTERS: list[Adapter] = [
    LlamaAdapter(), Qwen3Adapter(), Phi3Adapter(), GemmaAdapter(), Gemma2Adapter(), Gemma3Adapter(),
    GPT2Adapter(), NeoXAdapter(),
]


def supported_model_types() -> list[str]:
    return sorted(t for a in ADAPTERS for t in a.model_types)


def _fits(adapter: Adapter, hf: nn.Module) -> bool:
    """Whether a family adapter's module paths exist on this model (a renamed fork falls to structural)."""
    try:
        layer = adapter.layers(hf)[0]
        return all(m is not None for m in (adapter.embed(hf), adapter.final_norm(hf), adapter.attn(layer),
                                           adapter.o_proj(layer), adapter.mlp_down(layer)))
    except (AttributeError, IndexError, TypeError):
        return False


def adapter_for(hf: nn.Module) -> Adapter:
    """The adapter for a causal LM: hand-written family, structural, residual-only, or a clear error.

    Structural detection runs one short probe forward, once, here at load; forwards pay nothing for it.
    """
    custom = getattr(hf, "uncover_adapter", None)  # models defined in uncover (toy models) bring their own
    if custom is not None:
        return custom
    config = getattr(hf, "config", None)
    model_type = getattr(config, "model_type", None)
    for adapter in ADAPTERS:
        if model_type in adapter.model_types and _fits(adapter, hf):
            return adapter
    if config is None or not callable(getattr(hf, "get_input_embeddings", None)):
        raise UncoverError(
            f"{type(hf).__name__} is not a transformers causal LM (no config or input embeddings); load one "
            "with transformers' AutoModelForCausalLM, or use an uncover toy model"
        )
    _refuse_non_causal(hf)
    try:
        return structural_adapter(hf)
    except UncoverError:
        raise
    except Exception as e:  # the probe forward failed: say so instead of a traceback from deep inside HF
        raise UncoverError(
            f"architecture '{model_type}' ({type(hf).__name__}) could not be probed ({type(e).__name__}: {e}); "
            "no hook level is available, not even the residual stream. Use model.hf directly."
        ) from e


def _refuse_non_causal(hf: nn.Module) -> None:
    """Encoder-only and encoder-decoder models attend both ways: the causal-LM names do not describe them."""
    from transformers.models.auto import modeling_auto as M

    cls = type(hf).__name__
    other = {v for mapping in (M.MODEL_FOR_MASKED_LM_MAPPING_NAMES, M.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES)
             for v in mapping.values() if isinstance(v, str)}
    if getattr(hf.config, "is_encoder_decoder", False) or (cls in other and not cls.endswith(("ForCausalLM", "LMHeadModel"))):
        raise UncoverError(
            f"{cls} is not supported: uncover names the activations of decoder-only causal LMs (a hand-written "
            f"adapter for {', '.join(supported_model_types())}, or structural detection for others). Load the "
            "model with transformers' AutoModelForCausalLM."
        )


__all__ = ["Adapter", "ModelConfig", "adapter_for", "supported_model_types", "ADAPTERS", "StructuralAdapter",
           "ResidualAdapter"]
