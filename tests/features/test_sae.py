"""SAEs and transcoders on synthetic sparse data, checked against dense reference computations."""
from __future__ import annotations

import pytest
import torch

from uncover.errors import UncoverError
from uncover.features.sae import SAE, SAEConfig, _JumpReLU, sparse_pre_acts
from uncover.features.training import SAETrainConfig, SAETrainer, lr_factor, train_sae

D, N_TRUE, ACTIVE = 24, 48, 3


pytestmark = pytest.mark.usefixtures("one_thread")


def synthetic(n: int, seed: int = 0) -> torch.Tensor:
    """x = Σ of ACTIVE random unit directions (of N_TRUE) with magnitudes in [1, 2], plus an offset."""
    gen = torch.Generator().manual_seed(seed)
    dictionary = torch.randn(N_TRUE, D, generator=torch.Generator().manual_seed(123))
    dictionary /= dictionary.norm(dim=1, keepdim=True)
    idx = torch.rand(n, N_TRUE, generator=gen).topk(ACTIVE, dim=1).indices
    codes = torch.zeros(n, N_TRUE).scatter(1, idx, 1 + torch.rand(n, ACTIVE, generator=gen))
    return codes @ dictionary + 0.5


def test_sparse_pre_acts_match_dense_forward_and_gradients():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(600, 20, generator=gen)
    W = torch.randn(20, 50, generator=gen, requires_grad=True)
    b = torch.randn(50, generator=gen, requires_grad=True)
    shift = torch.randn(20, generator=gen, requires_grad=True)
    idx = torch.randint(0, 50, (600, 4), generator=gen)
    g = torch.randn(600, 4, generator=gen)
    (sparse_pre_acts(x, shift, W, b, idx) * g).sum().backward()
    grads = [t.grad.clone() for t in (W, b, shift)]
    for t in (W, b, shift):
        t.grad = None
    dense = ((x - shift) @ W + b).gather(1, idx)
    assert torch.allclose(sparse_pre_acts(x, shift, W, b, idx), dense, atol=1e-5)
    (dense * g).sum().backward()
    for got, t in zip(grads, (W, b, shift)):
        assert torch.allclose(got, t.grad, atol=1e-4)


def test_topk_training_loss_equals_dense_reconstruction():
    sae = SAE(SAEConfig(D, 96, "topk", k=4), seed=1)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
    x = synthetic(256)
    out = sae.training_loss(x)
    dense_mse = (sae(x) - x).pow(2).sum(-1).mean()
    # training picks the k latents from a bfloat16 product, so near-ties may pick differently
    assert float(out["mse"]) == pytest.approx(float(dense_mse), rel=1e-2)
    assert float(out["l0"]) <= 4


def test_jumprelu_straight_through_gradient_matches_formula():
    pre = torch.tensor([[0.10, 0.52, 0.50, 1.0]], requires_grad=True)
    theta = torch.tensor([0.5, 0.5, 0.5, 0.5], requires_grad=True)
    eps = 0.1
    _JumpReLU.apply(pre, theta, eps).sum().backward()
    inside = ((pre - theta).abs() < eps / 2).float()
    assert torch.allclose(theta.grad, (-(theta / eps) * inside).sum(0))
    assert torch.allclose(pre.grad, (pre > theta).float())


ARCHS = [("relu", dict(l1_coefficient=0.5)), ("topk", dict(k=ACTIVE)), ("batchtopk", dict(k=ACTIVE)),
         ("jumprelu", dict(l0_coefficient=0.1, jumprelu_bandwidth=0.1, jumprelu_init_threshold=0.3))]


@pytest.mark.parametrize("arch,kwargs", ARCHS, ids=[a for a, _ in ARCHS])
def test_every_architecture_learns_sparse_codes(arch, kwargs):
    data = synthetic(48_000)
    sae = SAE(SAEConfig(D, 64, arch, **kwargs), seed=0)
    cfg = SAETrainConfig(total_tokens=len(data), batch_size=256, lr=1e-2, warmup_steps=10, log_every=20,
                         sparsity_warmup_steps=50 if arch in ("relu", "jumprelu") else 0)
    history = train_sae(sae, data.split(4096), cfg)
    test = synthetic(2000, seed=9)
    with torch.no_grad():
        recon, acts = sae(test), sae.encode(test)
    ev = 1 - (recon - test).pow(2).sum() / (test - test.mean(0)).pow(2).sum()
    l0 = float((acts > 0).float().sum(-1).mean())
    assert float(ev) > 0.78, (arch, float(ev), l0)
    assert l0 < 12, (arch, l0)
    centred = test - test.mean(0)                # the best linear code with ACTIVE dimensions does far worse
    top = torch.linalg.svdvals(centred)[:ACTIVE].pow(2).sum() / centred.pow(2).sum()
    assert float(ev) > float(top) + 0.2
    assert history.explained_variance[-1] > history.explained_variance[0]
    if arch in ("topk", "batchtopk", "jumprelu"):
        assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(64), atol=1e-4)
    if arch == "batchtopk":    # inference with the learned global threshold keeps L0 near k
        assert abs(l0 - ACTIVE) < 2.0


def test_transcoder_predicts_another_activation():
    x = synthetic(32_000)
    A = torch.randn(D, 16, generator=torch.Generator().manual_seed(5)) / D ** 0.5
    target = x @ A
    sae = SAE(SAEConfig(D, 64, "topk", k=ACTIVE, d_out=16, hook_name="a", hook_name_out="b"))
    assert sae.cfg.is_transcoder
    cfg = SAETrainConfig(total_tokens=len(x), batch_size=256, lr=1e-2, warmup_steps=10)
    train_sae(sae, list(zip(x.split(4096), target.split(4096))), cfg)
    test = synthetic(1000, seed=3)
    pred = sae(test)
    ev = 1 - (pred - test @ A).pow(2).sum() / (test @ A - (test @ A).mean(0)).pow(2).sum()
    assert float(ev) > 0.65


def test_auxk_revives_dead_latents():
    data = synthetic(16_384)
    results = {}
    for aux in (0.0, 1.0):
        sae = SAE(SAEConfig(D, 96, "topk", k=ACTIVE, auxk_coefficient=aux, auxk_k=16), seed=0)
        with torch.no_grad():
            sae.W_enc[:, :48] *= 0.01          # half the latents start too weak to ever win the top-k
        cfg = SAETrainConfig(total_tokens=len(data), batch_size=256, lr=1e-2, warmup_steps=1,
                             dead_after_tokens=512)
        trainer = SAETrainer(sae, cfg)
        trainer.fit(data.split(4096))
        results[aux] = float(trainer.tokens_since_fired[:48].lt(512).float().mean())
    assert results[0.0] == 0.0
    assert results[1.0] > 0.2


def test_checkpoint_resume_gives_the_same_weights(tmp_path):
    data = synthetic(8192)
    batches = lambda: data.split(1024)  # noqa: E731
    straight = SAE(SAEConfig(D, 64, "topk", k=ACTIVE), seed=0)
    train_sae(straight, batches(), SAETrainConfig(total_tokens=8192, batch_size=512, lr=1e-3))

    resumed = SAE(SAEConfig(D, 64, "topk", k=ACTIVE), seed=0)
    cfg = SAETrainConfig(total_tokens=8192, batch_size=512, lr=1e-3, checkpoint_dir=str(tmp_path), checkpoint_every=5)

    def killed_after_seven():
        for i, b in enumerate(data.split(512)):
            if i == 7:
                raise KeyboardInterrupt
            yield b

    with pytest.raises(KeyboardInterrupt):
        train_sae(resumed, killed_after_seven(), cfg)
    fresh = SAE(SAEConfig(D, 64, "topk", k=ACTIVE), seed=0)
    trainer = SAETrainer(fresh, cfg)
    assert trainer.step == 5
    trainer.fit(batches())
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        assert torch.allclose(getattr(fresh, name), getattr(straight, name), atol=1e-6), name


def test_lr_schedule_warms_up_and_decays():
    cfg = SAETrainConfig(total_tokens=100 * 10, batch_size=10, warmup_steps=10, decay_fraction=0.2)
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(50, cfg) == 1.0
    assert lr_factor(90, cfg) == pytest.approx(0.5)


def test_bad_configs_say_what_to_do():
    with pytest.raises(UncoverError, match="architecture"):
        SAEConfig(8, 16, "gated")
    with pytest.raises(UncoverError, match="k must be"):
        SAEConfig(8, 16, "topk", k=32)
    with pytest.raises(UncoverError, match="less than one batch"):
        train_sae(SAE(SAEConfig(8, 16, "relu")), [torch.randn(4, 8)], SAETrainConfig(total_tokens=10))
