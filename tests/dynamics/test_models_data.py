"""Toy models and datasets: the fast last-token path equals the plain forward; labels match naive loops."""
import pytest
import torch

from uncover.dynamics.data import modular_data, modular_labels, repeated_sequences
from uncover.dynamics.models import ModularMLP, ToyConfig, ToyTransformer, nanda_config
from uncover.errors import UncoverError


@pytest.mark.parametrize("layer_norm", [False, True])
def test_one_layer_fast_path_matches_full_forward(layer_norm):
    cfg = nanda_config(11)
    cfg.d_model, cfg.d_head, cfg.d_mlp, cfg.layer_norm = 32, 8, 64, layer_norm
    model = ToyTransformer(cfg, seed=0)
    tokens = modular_data(11, "add", 0.5).tokens
    full = model(tokens).logits[:, -1]
    fast = model(tokens, last_only=True).logits[:, -1]
    assert torch.allclose(full, fast, atol=1e-5)
    # gradients agree too
    g_full = torch.autograd.grad(full.square().sum(), model.embed.weight)[0]
    g_fast = torch.autograd.grad(model(tokens, last_only=True).logits[:, -1].square().sum(), model.embed.weight)[0]
    assert torch.allclose(g_full, g_fast, atol=1e-4)


def test_two_layer_last_only_matches_full_forward():
    cfg = ToyConfig(d_vocab=20, n_ctx=8, d_model=32, n_heads=2, d_head=16, d_mlp=0, n_layers=2)
    model = ToyTransformer(cfg, seed=1)
    tokens = torch.randint(0, 20, (4, 8))
    assert torch.allclose(model(tokens).logits[:, -1:], model(tokens, last_only=True).logits, atol=1e-5)


def test_attention_is_causal_and_hook_points_have_standard_shapes():
    cfg = ToyConfig(d_vocab=20, n_ctx=6, d_model=16, n_heads=2, d_head=8, d_mlp=24, n_layers=2)
    model = ToyTransformer(cfg, seed=0)
    tokens = torch.randint(0, 20, (3, 6))
    seen = {}
    handles = [m.register_forward_hook(lambda mod, i, o, n=name: seen.__setitem__(n, o.shape))
               for name, m in model.named_modules() if name.split(".")[-1].startswith("hook_")]
    logits = model(tokens).logits
    for h in handles:
        h.remove()
    assert seen["blocks.1.attn.hook_pattern"] == (3, 2, 6, 6)
    assert seen["blocks.0.attn.hook_q"] == (3, 6, 2, 8)
    assert seen["blocks.0.attn.hook_z"] == (3, 6, 2, 8)
    assert seen["blocks.0.mlp.hook_post"] == (3, 6, 24)
    assert seen["blocks.1.hook_resid_post"] == (3, 6, 16)
    assert seen["hook_embed"] == (3, 6, 16)
    # changing a later token leaves earlier logits unchanged (causal mask)
    other = tokens.clone()
    other[:, -1] = (other[:, -1] + 1) % 20
    assert torch.allclose(model(other).logits[:, :-1], logits[:, :-1], atol=1e-6)


def test_replacing_the_pattern_through_its_hook_changes_the_output():
    cfg = nanda_config(7)
    cfg.d_model, cfg.d_head, cfg.d_mlp = 16, 4, 32
    model = ToyTransformer(cfg, seed=0)
    tokens = modular_data(7, "add", 0.5).tokens
    base = model(tokens, last_only=True).logits
    uniform = lambda mod, i, o: torch.full_like(o, 1.0 / o.shape[-1])  # noqa: E731
    h = model.blocks[0].attn.hook_pattern.register_forward_hook(uniform)
    fast, full = model(tokens, last_only=True).logits, model(tokens).logits[:, -1:]
    h.remove()
    assert not torch.allclose(base, fast)
    # a uniform pattern over 3 keys is the same for the fast and the plain path at the last position
    # (the plain path's pattern is causal for earlier queries, but the last query sees all keys)
    assert torch.allclose(fast, full, atol=1e-5)


def test_modular_mlp_gathers_like_a_one_hot_matmul():
    model = ModularMLP(p=7, width=10, act_fn="quadratic", seed=0)
    tokens = modular_data(7, "add", 0.5).tokens
    onehot = torch.cat([torch.nn.functional.one_hot(tokens[:, 0], 7), torch.nn.functional.one_hot(tokens[:, 1], 7)], 1)
    want = model.fc_out((onehot.float() @ model.fc_in.weight.T) ** 2)
    assert torch.allclose(model(tokens), want, atol=1e-5)
    wa, wb = model.neuron_input_weights()
    assert wa.shape == wb.shape == (10, 7)


@pytest.mark.parametrize("op", ["add", "sub", "div", "poly"])
def test_modular_labels_match_naive_loop(op):
    p = 7
    data = modular_data(p, op, 0.5)
    for (a, b, eq), y in zip(data.tokens.tolist(), data.labels.tolist()):
        assert eq == p
        if op == "div":
            want = next(c for c in range(p) if (c * b) % p == a)
        else:
            want = {"add": (a + b) % p, "sub": (a - b) % p, "poly": (a * a + a * b) % p}[op]
        assert y == want
    n = p * p - (p if op == "div" else 0)
    assert len(data.labels) == n
    assert len(data.train_idx) + len(data.test_idx) == n
    assert set(data.train_idx.tolist()).isdisjoint(data.test_idx.tolist())


def test_corrupted_labels_are_wrong_and_only_in_training():
    data = modular_data(11, "add", 0.6, seed=3, corrupt_frac=0.25)
    corrupted = data.corrupted.nonzero().squeeze(1)
    assert len(corrupted) == round(0.25 * len(data.train_idx))
    assert set(corrupted.tolist()) <= set(data.train_idx.tolist())
    assert (data.labels[corrupted] != data.clean_labels[corrupted]).all()
    assert (data.labels[~data.corrupted] == data.clean_labels[~data.corrupted]).all()
    assert torch.equal(data.clean_labels, modular_labels(data.tokens[:, 0], data.tokens[:, 1], 11, "add"))


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(UncoverError, match="prime"):
        modular_data(12)
    with pytest.raises(UncoverError, match="train_frac"):
        modular_data(7, train_frac=1.0)
    with pytest.raises(UncoverError, match="unknown operation"):
        modular_data(7, op="mul")
    with pytest.raises(UncoverError, match="n_ctx"):
        ToyTransformer(nanda_config(7))(torch.zeros(1, 4, dtype=torch.long))


def test_repeated_sequences_repeat():
    seqs = repeated_sequences(5, 21, 30, seed=0)
    assert seqs.shape == (5, 21)
    assert (seqs[:, 0] == 0).all() and (seqs[:, 1:] > 0).all()
    assert torch.equal(seqs[:, 1:11], seqs[:, 11:21])
    varied = repeated_sequences(50, 24, 1000, seed=0, vary_period=True)
    periods = []
    for row in varied:
        m = next(m for m in range(6, 12) if torch.equal(row[-m:], row[-2 * m : -m]))
        periods.append(m)
    assert len(set(periods)) > 3  # the offset of the repeat varies between sequences


def test_init_scale_multiplies_every_initial_weight():
    base = ModularMLP(p=7, width=10, seed=0)
    scaled = ModularMLP(p=7, width=10, init_scale=3.0, seed=0)
    for a, b in zip(base.parameters(), scaled.parameters()):
        assert torch.allclose(3.0 * a, b)
    cfg = nanda_config(7)
    big = ToyConfig(**{**cfg.to_dict(), "init_scale": 2.0})
    for a, b in zip(ToyTransformer(cfg, seed=0).parameters(), ToyTransformer(big, seed=0).parameters()):
        assert torch.allclose(2.0 * a, b)
