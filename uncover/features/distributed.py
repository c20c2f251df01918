"""SAE training and activation harvest over several processes with torch.distributed (``torchrun``).

Module-parallel SAE training (``train_saes_module_parallel``, sparsify's ``distribute_modules``): each
rank trains the SAEs of its own hook points (hook i on rank i % world_size; any number of hooks) on the
whole global batch. Every rank reads the batches from the same store, so no activations cross ranks;
each SAE is exactly the one-process SAE and is checkpointed under ``out_dir/<hook>``.

Distributed harvest (``harvest_distributed``): shard i of the corpus (``seqs_per_shard`` sequences) is
computed by rank ``i % world_size`` and written in ``harvest_to_disk``'s format (the same file names,
checksums and a partial manifest per rank); rank 0 merges the partial manifests into the one
``manifest.json`` a single process writes, shards in corpus order. Killed ranks resume: a re-run skips
every shard their partial manifest lists with a matching checksum.

Data-parallel SAE training (``DDPSAETrainer``): every rank holds the same SAE; each takes its
``batch_size / world_size`` rows of every global batch, gradients are averaged with one ``all_reduce``
of a flat buffer, firing counts are summed, so every rank takes the same Adam step and the run equals a
one-process run on the same global batches (up to float summation order). Only ``all_reduce``,
``broadcast`` and ``barrier`` are used: gloo (CPU) has no ``reduce_scatter``. Rank 0 writes the
checkpoint, in ``SAETrainer``'s format, and every rank resumes from it; after a rank is killed,
``torchrun`` (or a re-launch) restarts all ranks from the last checkpoint.

Where one global batch and its shards differ: BatchTopK keeps the ``k x rows`` largest activations of
each rank's rows (not of the global batch), and AuxK normalises by each rank's residual variance; the
logged explained variance averages the ranks' variances. TopK without dead latents, ReLU and JumpReLU
steps are the one-process steps.

Launch (see the README, "Scaling out")::

    torchrun --nproc_per_node 2 -m uncover.features.distributed train --activations acts/ \\
        --hook blocks.3.hook_resid_post --d-sae 4096 --k 32 --total-tokens 10_000_000 --out sae/
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from datetime import timedelta
from typing import Callable, Iterable, Sequence

import torch
import torch.distributed as dist

from uncover.errors import UncoverError
from uncover.features.sae import SAE, SAEConfig
from uncover.features.training import SAETrainConfig, SAETrainer, TrainHistory


def init_from_env(backend: str | None = None, timeout_s: float = 600) -> tuple[int, int]:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) unless
    already joined; backend defaults to NCCL with CUDA, gloo otherwise. Returns (rank, world_size)."""
    if not dist.is_initialized():
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            raise UncoverError("not launched by torchrun (RANK / WORLD_SIZE unset): run "
                               "`torchrun --nproc_per_node N -m uncover.features.distributed ...`")
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return dist.get_rank(), dist.get_world_size()


class DDPSAETrainer(SAETrainer):
    """``SAETrainer`` on every rank of an initialised process group; ``fit`` takes the *global* batch
    stream (the same on every rank) and each rank trains on its slice of every batch.

    cfg.batch_size is the global batch; it must divide by the world size.
    """

    def __init__(self, sae: SAE, cfg: SAETrainConfig, group: dist.ProcessGroup | None = None):
        if not dist.is_initialized():
            raise UncoverError("DDPSAETrainer needs a process group: call init_from_env() under torchrun")
        self.group = group
        self.rank, self.world = dist.get_rank(group), dist.get_world_size(group)
        if cfg.batch_size % self.world:
            raise UncoverError(f"batch_size {cfg.batch_size} does not divide by the world size {self.world}; "
                               f"use a multiple of {self.world}")
        super().__init__(sae, cfg)
        with torch.no_grad():  # every rank starts from rank 0's weights (and resumed state)
            for t in [*sae.parameters(), *sae.buffers(), self.tokens_since_fired]:
                dist.broadcast(t, 0, group=group)

    def _local(self, t: torch.Tensor) -> torch.Tensor:
        n = len(t) // self.world
        return t[self.rank * n:(self.rank + 1) * n]

    def _world(self) -> int:
        return self.world

    def _reduce_grads(self) -> None:
        grads = [p.grad for p in self.sae.parameters() if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])  # one collective per step
        dist.all_reduce(flat, group=self.group)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def _reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        dist.all_reduce(t, group=self.group)
        return t

    def save_checkpoint(self, path) -> None:
        """Rank 0 writes (SAETrainer's format); the others wait until it is complete."""
        if self.rank == 0:
            super().save_checkpoint(path)
        dist.barrier(group=self.group)


def train_sae_ddp(sae: SAE, batches, cfg: SAETrainConfig, group: dist.ProcessGroup | None = None):
    """``train_sae`` on every rank: same global ``batches`` everywhere; returns the TrainHistory."""
    from uncover.core.scoped import seeded

    with seeded(cfg.seed):
        return DDPSAETrainer(sae, cfg, group).fit(batches)


def train_saes_module_parallel(
    saes: dict[str, SAE], batches: Callable[[], Iterable[dict[str, torch.Tensor]]], cfg: SAETrainConfig,
    out_dir: str | os.PathLike | None = None, group: dist.ProcessGroup | None = None,
) -> dict[str, TrainHistory]:
    """Train ``saes`` (hook name -> SAE, the same dict on every rank) spread over the ranks: hook i (in
    dict order) on rank i % world_size, each on the full batches ``batches()`` yields (dicts hook name ->
    [rows, d_in]). Checkpoints (resumable) and the final SAE go to ``out_dir/<hook>``. Returns this rank's
    histories; the other ranks' SAEs are in their folders once every rank returns (a barrier)."""
    from uncover.features.training import train_sae

    if not dist.is_initialized():
        raise UncoverError("train_saes_module_parallel needs a process group: call init_from_env() under torchrun")
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    mine = [h for i, h in enumerate(saes) if i % world == rank]
    histories = {}
    for hook in mine:
        folder = None if out_dir is None else os.path.join(out_dir, hook)
        hook_cfg = dataclasses.replace(cfg, checkpoint_dir=folder)
        histories[hook] = train_sae(saes[hook], (b[hook] for b in batches()), hook_cfg)
        if folder is not None:
            saes[hook].save(os.path.join(folder, "final"))
    dist.barrier(group=group)
    return histories


def harvest_distributed(
    model, names: Sequence[str], tokens: torch.Tensor, out_dir, seqs_per_shard: int = 64,
    model_batch_size: int = 8, skip_positions: int = 0, dtype: torch.dtype = torch.float32,
    group: dist.ProcessGroup | None = None,
):
    """``harvest_to_disk`` spread over the ranks of the process group (every rank passes the same
    tokens [n_seqs, pos]); returns the merged ``DiskActivations`` on every rank.

    Raises when the world is larger than the number of shards (a rank would have nothing to do).
    """
    from uncover.features.store import DiskActivations, harvest_to_disk, merge_manifests

    if not dist.is_initialized():
        raise UncoverError("harvest_distributed needs a process group: call init_from_env() under torchrun")
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    n_shards = -(-len(tokens) // seqs_per_shard)
    if world > n_shards:
        raise UncoverError(f"world size {world} is larger than the {n_shards} shards of {len(tokens)} sequences "
                           f"x {seqs_per_shard} per shard; use at most {n_shards} ranks or a smaller "
                           f"seqs_per_shard (<= {max(len(tokens) // world, 1)})")
    harvest_to_disk(model, names, tokens, out_dir, seqs_per_shard, model_batch_size, skip_positions, dtype,
                    shards_of=(rank, world))
    dist.barrier(group=group)
    if rank == 0:
        merge_manifests(out_dir, world)
    dist.barrier(group=group)
    return DiskActivations(out_dir)


# ----- command line (torchrun -m uncover.features.distributed ...) ------------------------------------

def _train(args: argparse.Namespace) -> None:
    from uncover.features.store import DiskActivations

    rank, world = init_from_env(args.backend)
    store = DiskActivations(args.activations)
    if args.hook not in store.names:
        raise UncoverError(f"{args.hook} is not in {args.activations}; it has {store.names}")
    device = torch.device(f"cuda:{torch.cuda.current_device()}") if torch.cuda.is_available() else torch.device("cpu")
    d_in = store.shard(0, args.hook).shape[-1]
    sae = SAE(SAEConfig(d_in=d_in, d_sae=args.d_sae, architecture=args.architecture, k=args.k,
                        hook_name=args.hook, model_name=store.manifest.get("model", "")), seed=args.seed).to(device)
    cfg = SAETrainConfig(total_tokens=args.total_tokens, batch_size=args.batch_size, lr=args.lr,
                         checkpoint_dir=args.out, checkpoint_every=args.checkpoint_every, seed=args.seed)
    batches = (b[args.hook].to(device) for b in store.batches(args.batch_size, [args.hook], seed=args.seed,
                                                              epochs=args.epochs))
    history = train_sae_ddp(sae, batches, cfg)
    if rank == 0:
        sae.save(os.path.join(args.out, "sae"))
        last = history.explained_variance[-1] if history.explained_variance else float("nan")
        print(f"trained on {world} ranks: {history.step[-1] if history.step else 0} steps, EV {last:.3f}; "
              f"saved {args.out}/sae")
    dist.destroy_process_group()


def _harvest(args: argparse.Namespace) -> None:
    import uncover as uc
    from uncover.data.corpus import corpus_tokens

    rank, world = init_from_env(args.backend)
    device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else None
    model = uc.load(args.model, device=device)
    tokens = corpus_tokens(model, args.n_seqs, args.seq_len, seed=args.seed, source=args.corpus)
    store = harvest_distributed(model, args.hook, tokens, args.out, args.seqs_per_shard, args.model_batch_size,
                                args.skip_positions)
    if rank == 0:
        print(f"harvested {len(store)} tokens x {len(store.names)} hooks on {world} ranks into {args.out}")
    dist.destroy_process_group()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="torchrun -m uncover.features.distributed")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="data-parallel SAE training on a harvest_to_disk folder")
    t.add_argument("--activations", required=True)
    t.add_argument("--hook", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--d-sae", type=int, default=4096)
    t.add_argument("--architecture", default="topk")
    t.add_argument("--k", type=int, default=32)
    t.add_argument("--total-tokens", type=int, default=1_000_000)
    t.add_argument("--batch-size", type=int, default=4096, help="global batch (all ranks together)")
    t.add_argument("--lr", type=float, default=2e-4)
    t.add_argument("--epochs", type=int, default=1)
    t.add_argument("--checkpoint-every", type=int, default=500)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--backend", default=None, help="nccl (GPUs) or gloo (CPU); default by hardware")
    h = sub.add_parser("harvest", help="sharded activation harvest into one harvest_to_disk folder")
    h.add_argument("--model", default="smollm2-135m")
    h.add_argument("--hook", action="append", required=True, help="a hook name; repeat for several")
    h.add_argument("--out", required=True)
    h.add_argument("--corpus", default=None, help="HF dataset name or .txt/.jsonl path (default: offline corpus)")
    h.add_argument("--n-seqs", type=int, default=512)
    h.add_argument("--seq-len", type=int, default=128)
    h.add_argument("--seqs-per-shard", type=int, default=64)
    h.add_argument("--model-batch-size", type=int, default=8)
    h.add_argument("--skip-positions", type=int, default=1)
    h.add_argument("--seed", type=int, default=0)
    h.add_argument("--backend", default=None)
    args = parser.parse_args(argv)
    if args.command == "train":
        _train(args)
    else:
        _harvest(args)


if __name__ == "__main__":
    main()
