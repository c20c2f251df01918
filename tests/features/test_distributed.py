"""Data-parallel SAE training on 2 gloo ranks (torch.multiprocessing.spawn) against one process.

The reference is ``train_sae`` in this process on the same global batches; the 2-rank run must give the
same weights (max relative difference <= 1e-4 after several Adam steps), write the same checkpoint
format, and, after one rank is killed mid-run, resume on restart from the last checkpoint to the same
final weights.
"""
from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from uncover.errors import UncoverError
from uncover.features.sae import SAE, SAEConfig
from uncover.features.training import SAETrainConfig, SAETrainer, train_sae

pytestmark = pytest.mark.usefixtures("one_thread")
ARCHS = ("topk", "relu", "jumprelu")
STEPS, BATCH = 6, 64


def _sae_cfg(arch: str) -> SAEConfig:
    return SAEConfig(d_in=16, d_sae=48, architecture=arch, k=4, l1_coefficient=0.5, l0_coefficient=0.1)


def _train_cfg(checkpoint_dir: str | None = None) -> SAETrainConfig:
    return SAETrainConfig(total_tokens=STEPS * BATCH, batch_size=BATCH, lr=3e-3, warmup_steps=2,
                          dead_after_tokens=10 ** 9, log_every=1, checkpoint_dir=checkpoint_dir,
                          checkpoint_every=2)


def _data() -> list[torch.Tensor]:
    """Global batches of activations with some structure: [BATCH + 7, 16] chunks (rebatched in fit)."""
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(24, 16, generator=g)
    codes = torch.relu(torch.randn(STEPS * BATCH, 24, generator=g) - 1.0)
    x = codes @ basis + 0.05 * torch.randn(STEPS * BATCH, 16, generator=g)
    return list(x.split(BATCH + 7))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str, archs: tuple, crash_at: int | None) -> None:
    """One rank: train each architecture with DDP; rank 0 saves the weights to out/<arch>.pt."""
    from uncover.features.distributed import init_from_env, train_sae_ddp

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    init_from_env("gloo", timeout_s=60)
    for arch in archs:
        batches = _data()
        if crash_at is not None and rank == 1:
            def dying(batches=batches):
                for i, b in enumerate(batches):
                    if i == crash_at:
                        os._exit(3)                       # killed mid-run, after a checkpoint
                    yield b
            batches = dying()
        ckpt = os.path.join(out, f"ckpt-{arch}") if crash_at is not None or arch == "topk" else None
        sae = SAE(_sae_cfg(arch), seed=0)
        history = train_sae_ddp(sae, batches, _train_cfg(ckpt))
        if rank == 0:
            torch.save({"state": sae.state_dict(), "mse": history.mse}, os.path.join(out, f"{arch}.pt"))
    dist.barrier()
    dist.destroy_process_group()
    # Leave without interpreter finalisation: gloo's worker threads can still be alive then and abort the
    # process ("terminate called without an active exception", SIGABRT; seen once in CI, pytorch#179291).
    os._exit(0)


def _spawn(out, archs, crash_at=None) -> None:
    mp.spawn(_worker, args=(2, _port(), str(out), archs, crash_at), nprocs=2, join=True)


def _reference(arch: str) -> tuple[SAE, list[float]]:
    sae = SAE(_sae_cfg(arch), seed=0)
    history = train_sae(sae, _data(), _train_cfg())
    return sae, history.mse


def _max_rel_diff(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-12)) for k in b)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    _spawn(out, ARCHS)
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_ddp_matches_single_process(ddp_run, arch):
    got = torch.load(ddp_run / f"{arch}.pt", weights_only=True)
    ref, ref_mse = _reference(arch)
    start = {k: v for k, v in SAE(_sae_cfg(arch), seed=0).state_dict().items() if k in ("W_enc", "W_dec")}
    moved = _max_rel_diff(ref.state_dict(), start)
    diff = _max_rel_diff(got["state"], ref.state_dict())
    print(f"{arch}: max relative diff DDP vs single {diff:.2e} (training moved weights by {moved:.2e})")
    assert moved > 1e-2                       # the steps did change the SAE
    assert diff <= 1e-4
    assert len(got["mse"]) == STEPS
    assert torch.allclose(torch.tensor(got["mse"]), torch.tensor(ref_mse), rtol=1e-4)


def test_ddp_checkpoint_has_the_single_process_format(ddp_run, tmp_path):
    ckpt = ddp_run / "ckpt-topk"
    assert sorted(p.name for p in ckpt.iterdir()) == ["optimizer.pt", "sae", "trainer.json"]
    assert json.loads((ckpt / "trainer.json").read_text())["step"] == STEPS
    loaded = SAE.load(ckpt / "sae")                      # the SAELens layout, as one process writes it
    got = torch.load(ddp_run / "topk.pt", weights_only=True)["state"]
    assert all(torch.equal(loaded.state_dict()[k], got[k]) for k in ("W_enc", "W_dec", "b_enc", "b_dec"))
    resumed = SAETrainer(SAE(_sae_cfg("topk"), seed=1), _train_cfg(str(ckpt)))   # one process resumes it
    assert resumed.step == STEPS and torch.equal(resumed.sae.W_enc, got["W_enc"])


def test_killed_rank_resumes_from_last_checkpoint(tmp_path):
    with pytest.raises(mp.ProcessExitedException):
        _spawn(tmp_path, ("topk",), crash_at=5)       # rank 1 dies fetching batch 5 (checkpoint at step 4)
    meta = json.loads((tmp_path / "ckpt-topk" / "trainer.json").read_text())
    assert meta["step"] == 4
    _spawn(tmp_path, ("topk",))                       # relaunch: both ranks resume from step 4
    got = torch.load(tmp_path / "topk.pt", weights_only=True)
    ref, ref_mse = _reference("topk")
    assert _max_rel_diff(got["state"], ref.state_dict()) <= 1e-4
    assert len(got["mse"]) == STEPS                   # history kept from the checkpoint: no step lost or doubled
    assert torch.allclose(torch.tensor(got["mse"]), torch.tensor(ref_mse), rtol=1e-4)


def test_needs_a_process_group():
    from uncover.features.distributed import DDPSAETrainer, init_from_env

    with pytest.raises(UncoverError, match="process group"):
        DDPSAETrainer(SAE(_sae_cfg("topk")), _train_cfg())
    env = {k: os.environ.pop(k) for k in ("RANK", "WORLD_SIZE") if k in os.environ}
    try:
        with pytest.raises(UncoverError, match="torchrun"):
            init_from_env()
    finally:
        os.environ.update(env)


# ----- distributed harvest ----------------------------------------------------------------------------

HOOKS = ["blocks.0.hook_resid_post", "blocks.1.mlp.hook_post"]


def _tokens(n_seqs: int = 10) -> torch.Tensor:
    return torch.randint(0, 1000, (n_seqs, 6), generator=torch.Generator().manual_seed(7))


def _harvest_worker(rank: int, world: int, port: int, out: str) -> None:
    """One rank: harvest 10 sequences (5 shards of 2) into out/dist; try 1 shard on 2 ranks."""
    import uncover as uc
    from tests.conftest import tiny_hf
    from uncover.features.distributed import harvest_distributed, init_from_env

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    init_from_env("gloo", timeout_s=60)
    model = uc.load(tiny_hf("llama", seed=5))
    harvest_distributed(model, HOOKS, _tokens(), os.path.join(out, "dist"), seqs_per_shard=2, skip_positions=1)
    try:
        harvest_distributed(model, HOOKS, _tokens(2), os.path.join(out, "too-many"), seqs_per_shard=2)
    except UncoverError as e:
        with open(os.path.join(out, f"error{rank}.txt"), "w") as f:
            f.write(str(e))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def harvested(tmp_path_factory):
    from tests.conftest import tiny_hf
    import uncover as uc
    from uncover.features.store import harvest_to_disk

    out = tmp_path_factory.mktemp("harvest")
    mp.spawn(_harvest_worker, args=(2, _port(), str(out)), nprocs=2, join=True)
    single = harvest_to_disk(uc.load(tiny_hf("llama", seed=5)), HOOKS, _tokens(), out / "single", seqs_per_shard=2,
                             skip_positions=1)
    return out, single


def test_distributed_harvest_equals_single_process(harvested):
    from uncover.features.store import DiskActivations

    out, single = harvested
    dist_store = DiskActivations(out / "dist")
    assert dist_store.manifest == single.manifest          # same shards, order, checksums, header
    for name in HOOKS:
        assert torch.equal(dist_store.load(name), single.load(name))
    assert dist_store.verify() == []
    ranks = [json.loads((out / "dist" / f"manifest.rank{r}.json").read_text()) for r in (0, 1)]
    assert [s["first_seq"] for s in ranks[0]["shards"]] == [0, 4, 8]   # shard i on rank i % 2
    assert [s["first_seq"] for s in ranks[1]["shards"]] == [2, 6]


def test_distributed_harvest_resumes_a_killed_rank(harvested, tmp_path):
    import shutil

    from uncover.features.store import DiskActivations

    out, single = harvested
    work = tmp_path / "run"
    shutil.copytree(out / "dist", work / "dist")
    (work / "dist" / "shard_00000006.safetensors").unlink()   # rank 1 died before writing this shard
    (work / "dist" / "manifest.json").unlink()
    kept = (work / "dist" / "shard_00000000.safetensors").stat().st_mtime_ns
    mp.spawn(_harvest_worker, args=(2, _port(), str(work)), nprocs=2, join=True)
    again = DiskActivations(work / "dist")
    assert again.manifest == single.manifest
    assert (work / "dist" / "shard_00000000.safetensors").stat().st_mtime_ns == kept   # not recomputed


def test_world_larger_than_shards_is_refused(harvested):
    out, _ = harvested
    for r in (0, 1):
        assert "world size 2 is larger than the 1 shards" in (out / f"error{r}.txt").read_text()


# ----- module-parallel SAE training -------------------------------------------------------------------

MP_HOOKS = ["a", "b", "c"]                       # three hook points on two ranks: no divisibility needed


def _mp_batches() -> list[dict[str, torch.Tensor]]:
    data = _data()
    return [{h: x * (i + 1) + i for i, h in enumerate(MP_HOOKS)} for x in torch.cat(data).split(BATCH)]


def _mp_worker(rank: int, world: int, port: int, out: str) -> None:
    from uncover.features.distributed import init_from_env, train_saes_module_parallel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    init_from_env("gloo", timeout_s=60)
    saes = {h: SAE(_sae_cfg("topk"), seed=i) for i, h in enumerate(MP_HOOKS)}
    done = train_saes_module_parallel(saes, _mp_batches, _train_cfg(), out_dir=out)
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(sorted(done), f)
    dist.destroy_process_group()


def test_module_parallel_trains_the_same_saes(tmp_path):
    mp.spawn(_mp_worker, args=(2, _port(), str(tmp_path)), nprocs=2, join=True)
    assert json.loads((tmp_path / "rank0.json").read_text()) == ["a", "c"]
    assert json.loads((tmp_path / "rank1.json").read_text()) == ["b"]
    for i, h in enumerate(MP_HOOKS):
        ref = SAE(_sae_cfg("topk"), seed=i)
        train_sae(ref, (b[h] for b in _mp_batches()), _train_cfg())
        got = SAE.load(tmp_path / h / "final")
        for k in ("W_enc", "W_dec", "b_enc", "b_dec"):
            assert torch.equal(got.state_dict()[k], ref.state_dict()[k]), (h, k)
        assert json.loads((tmp_path / h / "trainer.json").read_text())["step"] == STEPS
