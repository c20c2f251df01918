"""Techniques leave what the caller passed alone: requires_grad flags and the global RNG stream."""
from __future__ import annotations

import pytest
import torch

import uncover as uc
from tests.conftest import tiny_hf
from tests.editing.conftest import word_tokenizer
from uncover.data.facts import FACTS

pytestmark = pytest.mark.usefixtures("one_thread")


def _flags(module: torch.nn.Module) -> list[bool]:
    return [p.requires_grad for p in module.parameters()]


def _mixed_flags_model() -> uc.Model:
    """A tiny Llama whose parameters have mixed requires_grad flags (every other one off)."""
    model = uc.load(tiny_hf("llama"), tokenizer=word_tokenizer())
    for i, p in enumerate(model.hf.parameters()):
        p.requires_grad_(i % 2 == 0)
    return model


def test_train_tuned_lens_restores_requires_grad_and_rng():
    from uncover.components.lens import train_tuned_lens

    model = _mixed_flags_model()
    before, rng = _flags(model.hf), torch.get_rng_state()
    tokens = torch.randint(5, 500, (6, 10), generator=torch.Generator().manual_seed(0))
    train_tuned_lens(model, tokens, steps=2, batch_size=2, positions_per_seq=3)
    assert _flags(model.hf) == before
    assert torch.equal(torch.get_rng_state(), rng)


def test_train_tuned_lens_restores_flags_when_it_fails():
    from uncover.components.lens import train_tuned_lens

    model = _mixed_flags_model()
    before = _flags(model.hf)
    with pytest.raises(Exception):
        train_tuned_lens(model, torch.full((2, 4), 10_000), steps=1, batch_size=1, positions_per_seq=1)
    assert _flags(model.hf) == before


def test_train_reft_restores_requires_grad_and_rng():
    from uncover.representations.reft import Reft, train_reft

    model = _mixed_flags_model()
    before, rng = _flags(model.hf), torch.get_rng_state()
    reft = Reft(model.cfg.d_model, layers=[1], kind="loreft", rank=2, seed=3)
    facts = FACTS[:3]
    losses = train_reft(model, reft, [f.prompts()[0] for f in facts], [f.attribute for f in facts], steps=2)
    assert len(losses) == 2 and all(p.grad is not None for p in reft.parameters())
    assert _flags(model.hf) == before
    assert torch.equal(torch.get_rng_state(), rng)
    again = Reft(model.cfg.d_model, layers=[1], kind="loreft", rank=2, seed=3)
    fresh = Reft(model.cfg.d_model, layers=[1], kind="loreft", rank=2, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), fresh.state_dict().values()))


@pytest.mark.parametrize("make", ["mlp_probe", "toy_transformer", "modular_mlp", "train_sae"])
def test_seeded_constructors_and_training_keep_the_global_rng(make):
    rng = torch.get_rng_state()
    if make == "mlp_probe":
        from uncover.representations.probes import MLPProbe

        x = torch.randn(20, 4, generator=torch.Generator().manual_seed(1))
        MLPProbe(hidden=4, epochs=3).fit(x, (x[:, 0] > 0).long())
    elif make == "toy_transformer":
        from uncover.dynamics.models import ToyConfig, ToyTransformer

        ToyTransformer(ToyConfig(d_vocab=8, n_ctx=4, d_model=8, n_heads=2, d_head=4, d_mlp=8), seed=5)
    elif make == "modular_mlp":
        from uncover.dynamics.models import ModularMLP

        ModularMLP(7, width=8, seed=5)
    else:
        from uncover.features.sae import SAE, SAEConfig
        from uncover.features.training import SAETrainConfig, train_sae

        x = torch.randn(256, 8, generator=torch.Generator().manual_seed(1))
        train_sae(SAE(SAEConfig(8, 16, "relu"), seed=0), [x], SAETrainConfig(total_tokens=256, batch_size=64))
    assert torch.equal(torch.get_rng_state(), rng)


def test_load_converts_a_copy_of_a_passed_model():
    hf = tiny_hf("llama")
    before = {n: (p.dtype, p.data_ptr()) for n, p in hf.named_parameters()}
    model = uc.load(hf, dtype=torch.float64)
    assert {n: (p.dtype, p.data_ptr()) for n, p in hf.named_parameters()} == before
    assert all(p.dtype == torch.float64 for p in model.hf.parameters()) and model.hf is not hf
    tokens = torch.tensor([[1, 2, 3, 4]])
    assert torch.allclose(model(tokens).float(), hf(tokens).logits, atol=1e-4)
