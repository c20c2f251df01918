"""Device correctness without a GPU: capabilities run on fake CUDA tensors (``tests/fake_cuda.py``).

Under ``FakeTensorMode`` every op checks that its tensors share a device, so a tensor a technique
creates on the CPU and mixes with the model's cuda tensors raises ``FakeTensorDeviceMismatchError``,
as it would on a GPU. Checked here: the model forward with every standard hook cached, the SAE trainer
step for every architecture (its dense CUDA path; dead-latent counters, Adam, decoder norms), the SAE's
custom autograd backwards called directly, the patching engine (activation, attribution, path patching,
ablation sweeps), probes' activation collection, steering (CAA directions and their hooks, ActAdd),
ROME (with a given key covariance) and the toy trainer.

What FakeTensorMode cannot cover on a CPU-only build (see ``tests/fake_cuda.py``): autograd through cuda
tensors (no backward pass runs: parameters get zero gradients, ``autograd.grad`` gives zeros), the
sparse CSR/COO kernels (which is why the CUDA path of the SAE step is dense), values (every ``float()`` /
``bool()`` / ``.item()`` is a placeholder, so only one side of a data-dependent branch runs and results
are meaningless), host-device copies of real data (``t.to("cuda")`` gives an uninitialised fake), streams,
NCCL, memory limits and kernel speed. Those need a real GPU (benchmarks).
"""
from __future__ import annotations

import pytest
import torch

import uncover as uc
from tests.conftest import tiny_hf
from tests.editing.conftest import word_tokenizer
from tests.fake_cuda import call_function, fake_cuda, to_fake_cuda

pytestmark = pytest.mark.usefixtures("one_thread")
CUDA = torch.device("cuda", 0)


def _on_cuda(*tensors: torch.Tensor) -> None:
    for t in tensors:
        assert t.device == CUDA, t.device


def test_fake_cuda_catches_a_device_mix():
    with fake_cuda():
        a = torch.ones(3, device="cuda")
        with pytest.raises(Exception, match="device"):
            a + torch.ones(3)                                   # a cpu tensor made by mistake
        with pytest.raises(Exception, match="device"):
            torch.zeros(3, dtype=torch.long).index_add_(0, torch.zeros(2, dtype=torch.long, device="cuda"),
                                                        torch.ones(2, dtype=torch.long, device="cuda"))
        _on_cuda(a + torch.tensor(2.0), a[1:], a[None, :, None][0, :, 0])   # 0-dim cpu scalars are fine


def test_model_forward_and_cache():
    with fake_cuda():
        model = uc.load(to_fake_cuda(tiny_hf("llama")))
        assert model.device == CUDA
        tokens = torch.zeros(2, 5, dtype=torch.long, device="cuda")
        logits, cache = model.run_with_cache(tokens, names=model.hook_names())
        _on_cuda(logits, *cache.data.values())
        _on_cuda(cache.stack_head_results(), cache.accumulated_resid())


@pytest.mark.parametrize("arch", ["topk", "relu", "jumprelu", "batchtopk"])
def test_sae_train_step(arch, tmp_path):
    from uncover.features.sae import SAE, SAEConfig
    from uncover.features.training import SAETrainConfig, SAETrainer

    with fake_cuda():
        sae = SAE(SAEConfig(d_in=16, d_sae=32, architecture=arch, k=4)).to("cuda")
        trainer = SAETrainer(sae, SAETrainConfig(total_tokens=64, batch_size=32, dead_after_tokens=1))
        x = torch.randn(32, 16, device="cuda")
        for _ in range(2):                                      # the second step has dead latents (AuxK)
            metrics = trainer.train_step(x)
        _on_cuda(trainer.tokens_since_fired, *sae.parameters(), sae.encode(x), sae(x))
        assert trainer.optimizer.state[sae.W_dec]["exp_avg"].device == CUDA
        assert set(metrics) >= {"loss", "mse", "l0"}


def test_sae_custom_backwards():
    from uncover.features.sae import _JumpReLU, _Step, sparse_decode, sparse_pre_acts

    with fake_cuda():
        pre, theta = torch.randn(8, 32, device="cuda"), torch.rand(32, device="cuda")
        for fn in (_JumpReLU, _Step):
            out, grads = call_function(fn, pre, theta, 0.05)
            _on_cuda(out, *(g for g in grads if g is not None))
        x, W_enc, W_dec = torch.randn(8, 16, device="cuda"), torch.randn(16, 32, device="cuda"), torch.randn(32, 16, device="cuda")
        idx = torch.randn(8, 32, device="cuda").topk(4, dim=-1).indices
        vals = sparse_pre_acts(x, None, W_enc, torch.zeros(32, device="cuda"), idx)
        _on_cuda(vals, sparse_decode(vals, idx, W_dec))


def test_sae_dense_path_equals_sparse_kernels(monkeypatch):
    """The dense path taken off the CPU gives the CPU sparse kernels' values and gradients (real tensors)."""
    from uncover.features import sae as sae_mod

    g = torch.Generator().manual_seed(0)
    x, W_enc, b_enc = torch.randn(8, 16, generator=g), torch.randn(16, 32, generator=g), torch.randn(32, generator=g)
    W_dec, shift = torch.randn(32, 16, generator=g), torch.randn(16, generator=g)
    idx = torch.randn(8, 32, generator=g).topk(4, dim=-1).indices
    out = {}
    for sparse in (True, False):
        monkeypatch.setattr(sae_mod, "_use_sparse", lambda t, s=sparse: s)
        params = [p.clone().requires_grad_(True) for p in (W_enc, b_enc, W_dec, shift)]
        vals = sae_mod.sparse_pre_acts(x, params[3], params[0], params[1], idx)
        recon = sae_mod.sparse_decode(torch.relu(vals), idx, params[2])
        recon.pow(2).sum().backward()
        out[sparse] = [vals, recon] + [p.grad for p in params]
    for a, b in zip(out[True], out[False]):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("method", ["activation", "attribution", "path", "ablation"])
def test_patching_engine(method):
    from uncover.components import patching as P

    with fake_cuda():
        model = uc.Model(tiny_hf("llama").to("cuda"))
        clean = torch.zeros(2, 6, dtype=torch.long, device="cuda")
        corrupt = torch.ones(2, 6, dtype=torch.long, device="cuda")

        def metric(logits: torch.Tensor) -> torch.Tensor:
            _on_cuda(logits)
            return logits[:, -1, 5].mean() - logits[:, -1, 7].mean()

        if method == "activation":
            for site, by in [("resid_pre", "layer"), ("z", "head"), ("mlp_out", "pos")]:
                P.activation_patching(model, clean, corrupt, metric, site=site, by=by, normalize=False)
        elif method == "attribution":
            P.attribution_patching(model, clean, corrupt, metric, site="z", by="head", normalize=False)
        elif method == "path":
            P.path_patching(model, clean, corrupt, metric, normalize=False)
        else:
            P.ablation_sweep(model, clean, metric, site="z", kind="mean")


def test_probe_activations_and_steering():
    from uncover.representations.activations import collect_activations
    from uncover.representations.directions import concept_direction
    from uncover.representations.steering import actadd_hooks, actadd_vector, steering_hooks
    from uncover.data.contrast import contrast_pairs

    with fake_cuda(truth=False):                                # validation checks pass
        model = uc.Model(tiny_hf("llama").to("cuda"), word_tokenizer())
        acts = collect_activations(model, ["Paris is in France", "The cat"], layers=[0, 2])
        assert acts.shape == (2, 2, 64)          # gathered on the CPU, as documented
        d = concept_direction(model, contrast_pairs("sentiment", 4, 0), [1], "mean_diff")
        tokens = model.to_tokens(["Paris is in France"])
        _on_cuda(model.run_with_hooks(tokens, fwd_hooks=steering_hooks(d, 4.0)))
        v = actadd_vector(model, "Paris is", "The cat", 1)
        _on_cuda(model.run_with_hooks(tokens, fwd_hooks=actadd_hooks(v, 2.0)))


def test_toy_trainer():
    from uncover.dynamics.data import modular_data
    from uncover.dynamics.models import ToyConfig, ToyTransformer
    from uncover.dynamics.tasks import ModularTask
    from uncover.dynamics.trainer import TrainConfig, Trainer

    with fake_cuda():
        toy = ToyTransformer(ToyConfig(d_vocab=8, n_ctx=3, d_model=16, n_heads=2, d_head=8, d_mlp=32, n_layers=1))
        trainer = Trainer(toy, ModularTask(modular_data(p=7)), TrainConfig(steps=3, eval_every=1,
                                                                            checkpoints="none", device="cuda"))
        assert trainer.fit().steps_done == 3
        _on_cuda(*toy.parameters(), trainer.task.tokens)
        assert trainer.optimizer.state[next(toy.parameters())]["exp_avg"].device == CUDA


def test_rome():
    from uncover.applications.editing.rome import EditRequest, RomeConfig, rome

    with fake_cuda(truth=False):
        model = uc.Model(tiny_hf("llama").to("cuda"), word_tokenizer())
        request = EditRequest("Paris", "{} is the capital of", " Rome")
        # no corpus prefixes: the corpus's token stream is cached per tokenizer, and a fake tensor cached here
        # would leak into later tests
        edit = rome(model, request, RomeConfig(layer=1, steps=2, n_prefixes=0, prefix_len=4),
                    covariance=torch.eye(96, device="cuda"))
        assert edit.deltas[1].shape == (96, 64)
        _on_cuda(model.W_out(1))
