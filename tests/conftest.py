"""Shared fixtures: the bundled models (loaded once per session) and tiny random models per architecture."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import uncover as uc  # noqa: E402
from uncover.core.zoo import BUNDLED  # noqa: E402

ARCHITECTURES = ["llama", "mistral", "qwen2", "qwen3", "phi3", "gemma", "gemma2", "gemma3", "gpt2", "gpt_neox", "gpt_neox_seq"]


def tiny_hf(arch: str, seed: int = 0):
    """A tiny randomly initialised causal LM of the given family (vocab 1000, 3 layers); "toy" is uncover's own."""
    import transformers as T

    torch.manual_seed(seed)
    common = dict(vocab_size=1000, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    if arch in ("llama", "mistral", "qwen2", "qwen3", "phi3", "gemma", "gemma2", "gemma3"):
        cls = {
            "llama": (T.LlamaConfig, T.LlamaForCausalLM), "mistral": (T.MistralConfig, T.MistralForCausalLM),
            "qwen2": (T.Qwen2Config, T.Qwen2ForCausalLM), "qwen3": (T.Qwen3Config, T.Qwen3ForCausalLM),
            "phi3": (T.Phi3Config, T.Phi3ForCausalLM), "gemma": (T.GemmaConfig, T.GemmaForCausalLM),
            "gemma2": (T.Gemma2Config, T.Gemma2ForCausalLM), "gemma3": (T.Gemma3TextConfig, T.Gemma3ForCausalLM),
        }[arch]
        extra = {"head_dim": 16} if arch.startswith("gemma") or arch == "qwen3" else {}
        if arch in ("gemma2", "gemma3"):
            extra.update(sliding_window=8)
        if arch == "phi3":
            extra.update(pad_token_id=0)
        config = cls[0](**common, **extra)
        hf = cls[1](config)
    elif arch == "toy":  # uncover's own toy transformer (uncover.dynamics), wrapped like any HF model
        from uncover.dynamics.models import ToyConfig, ToyTransformer

        hf = ToyTransformer(ToyConfig(d_vocab=1000, n_ctx=256, d_model=64, n_heads=4, d_head=16, d_mlp=96,
                                      n_layers=3, layer_norm=True), seed=seed)
    elif arch == "gpt2":
        hf = T.GPT2LMHeadModel(T.GPT2Config(vocab_size=1000, n_embd=64, n_layer=3, n_head=4, n_positions=256))
    else:
        cfg = T.GPTNeoXConfig(vocab_size=1000, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                              num_attention_heads=4, max_position_embeddings=256,
                              use_parallel_residual=(arch == "gpt_neox"))
        hf = T.GPTNeoXForCausalLM(cfg)
    # random init can leave norm weights at exactly 1/0; perturb every parameter so each site matters
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return hf.eval()


@pytest.fixture
def one_thread():
    """Tiny models run faster on one thread (no oversubscription); restores the count afterwards.
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model():
    """Factory: tiny_model("llama") -> uc.Model over a tiny random model (no tokenizer; pass token ids)."""
    made = {}

    def make(arch: str = "llama") -> uc.Model:
        if arch not in made:
            made[arch] = uc.load(tiny_hf(arch))
        return made[arch]

    return make


def _bundled(name: str) -> uc.Model:
    if not BUNDLED[name].installed():
        pytest.fail(f"bundled model {name} is not installed: {BUNDLED[name].pip} (make test installs it)")
    return uc.load(name)


@pytest.fixture(scope="session")
def smollm() -> uc.Model:
    """SmolLM2-135M-Instruct, loaded once per test session."""
    return _bundled("smollm2-135m")


@pytest.fixture(scope="session")
def gemma() -> uc.Model:
    """Gemma 3 270M, loaded once per test session."""
    return _bundled("gemma3-270m")
