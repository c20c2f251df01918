"""Activation stores: harvest activations at hook names over token sequences, in memory or on disk.

``harvest(model, names, tokens)`` runs the model on batches of sequences, keeps only the requested
hook tensors and stops the forward pass as soon as the deepest requested hook has fired, so harvesting
costs at most one plain forward pass. Two stores build on it:

* ``ShuffleBuffer`` streams [batch_size, d] batches from a mixing buffer of ``buffer_tokens`` rows;
* ``harvest_to_disk`` writes sharded safetensors plus ``manifest.json`` (one shard per
  ``seqs_per_shard`` sequences, sha256 of every shard, atomic replace of shards and manifest), and
  resumes after a kill by skipping the shards the manifest lists. ``DiskActivations`` reads them back
  memory-mapped.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from uncover.core.results import Progress, no_progress
from uncover.errors import UncoverError

if TYPE_CHECKING:
    from uncover.core.model import Model

MANIFEST = "manifest.json"


def stop_layer(names: Sequence[str]) -> int | None:
    """The ``stop_at_layer`` after which every hook in ``names`` has fired: one past the deepest block named
    (0 for embedding hooks only); None when a name lies after the blocks (``ln_final.hook_normalized``)."""
    layers = []
    for name in names:
        block = re.match(r"blocks\.(\d+)\.", name)
        if block:
            layers.append(int(block.group(1)))
        elif name in ("hook_embed", "hook_pos_embed"):
            layers.append(-1)
        else:
            return None
    return max(layers) + 1 if layers else None


def harvest(
    model: "Model", names: Sequence[str], tokens: torch.Tensor, skip_positions: int = 0
) -> dict[str, torch.Tensor]:
    """Activations at ``names`` for tokens [batch, pos], flattened to [batch * (pos - skip), d] (float32).

    skip_positions drops the first positions of every sequence (e.g. 1 to skip a BOS token, whose
    activations are outliers). The forward pass stops after the deepest requested layer (``stop_layer``).
    """
    names = list(dict.fromkeys(names))
    got: dict[str, torch.Tensor] = {}

    def grab(t: torch.Tensor, hook) -> None:
        got[hook.name] = t.detach()[:, skip_positions:].reshape(-1, t.shape[-1]).float()

    with torch.no_grad(), model.hooks([(n, grab) for n in names]):
        model(tokens, stop_at_layer=stop_layer(names))
    missing = [n for n in names if n not in got]
    if missing:
        raise UncoverError(f"hooks {missing} never fired; use per-token names from model.hook_names()")
    return got


def iter_harvest(
    model: "Model", names: Sequence[str], tokens: torch.Tensor, model_batch_size: int = 8,
    skip_positions: int = 0, progress: Progress = no_progress,
) -> Iterator[dict[str, torch.Tensor]]:
    """Harvest ``tokens`` [n_seqs, pos] in chunks of ``model_batch_size`` sequences."""
    starts = range(0, len(tokens), model_batch_size)
    starts = progress(starts, "harvesting activations")
    for s in starts:
        yield harvest(model, names, tokens[s:s + model_batch_size], skip_positions)


class ShuffleBuffer:
    """Stream shuffled activation batches: yields dict name -> [batch_size, d] float32.

    Fills a buffer of ``buffer_tokens`` rows from the model, shuffles it, yields half of it as batches,
    refills, and so on; tokens of the same sequence end up spread over many batches. Every token is
    yielded exactly once (the last partial batch is dropped).
    """

    def __init__(
        self, model: "Model", names: Sequence[str], tokens: torch.Tensor, batch_size: int = 4096,
        buffer_tokens: int = 65_536, model_batch_size: int = 8, skip_positions: int = 0, seed: int = 0,
    ):
        if buffer_tokens < 2 * batch_size:
            raise UncoverError(f"buffer_tokens ({buffer_tokens}) must be at least 2 x batch_size ({batch_size})")
        self.model, self.names, self.tokens = model, list(names), tokens
        self.batch_size, self.buffer_tokens = batch_size, buffer_tokens
        self.model_batch_size, self.skip_positions, self.seed = model_batch_size, skip_positions, seed

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        gen = torch.Generator().manual_seed(self.seed)
        buffer: dict[str, torch.Tensor] | None = None
        source = iter_harvest(self.model, self.names, self.tokens, self.model_batch_size, self.skip_positions)
        exhausted = False
        while True:
            while not exhausted and (buffer is None or len(buffer[self.names[0]]) < self.buffer_tokens):
                chunk = next(source, None)
                if chunk is None:
                    exhausted = True
                    break
                buffer = chunk if buffer is None else {n: torch.cat([buffer[n], chunk[n]]) for n in self.names}
            if buffer is None or len(buffer[self.names[0]]) < self.batch_size:
                return
            order = torch.randperm(len(buffer[self.names[0]]), generator=gen)
            buffer = {n: t[order] for n, t in buffer.items()}
            n_out = len(order) if exhausted else len(order) // 2
            n_out -= n_out % self.batch_size
            for s in range(0, n_out, self.batch_size):
                yield {n: t[s:s + self.batch_size] for n, t in buffer.items()}
            buffer = {n: t[n_out:] for n, t in buffer.items()}
            if exhausted and len(buffer[self.names[0]]) < self.batch_size:
                return


# ----- on disk -----------------------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def harvest_to_disk(
    model: "Model", names: Sequence[str], tokens: torch.Tensor, out_dir: str | Path,
    seqs_per_shard: int = 64, model_batch_size: int = 8, skip_positions: int = 0,
    dtype: torch.dtype = torch.float32, progress: Progress = no_progress,
    shards_of: tuple[int, int] | None = None,
) -> "DiskActivations | None":
    """Write activations at ``names`` for tokens [n_seqs, pos] as shards under ``out_dir``; resumable.

    A re-run with the same arguments keeps every shard listed in the manifest whose checksum still
    matches and computes only the rest. The manifest records the model, names, token checksum and shapes.
    shards_of: (rank, world_size) computes only shards i with i % world_size == rank and lists them in
    ``manifest.rank{rank}.json`` (returns None); ``merge_manifests`` then writes the one manifest
    (``uncover.features.distributed.harvest_distributed`` does both).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = list(dict.fromkeys(names))
    token_digest = hashlib.sha256(tokens.cpu().numpy().tobytes()).hexdigest()
    header = {"model": getattr(model, "name", ""), "names": names, "n_seqs": len(tokens),
              "seq_len": tokens.shape[1], "skip_positions": skip_positions, "seqs_per_shard": seqs_per_shard,
              "dtype": str(dtype).removeprefix("torch."), "tokens_sha256": token_digest}
    manifest_path = out / (MANIFEST if shards_of is None else rank_manifest(shards_of[0]))
    shards: list[dict] = []
    if manifest_path.exists():
        old = json.loads(manifest_path.read_text())
        if {k: old.get(k) for k in header} != header:
            raise UncoverError(f"{out} holds a different harvest (other model, names or tokens); "
                               "pass an empty out_dir or the same arguments to resume")
        shards = [s for s in old["shards"] if (out / s["file"]).exists() and _sha256(out / s["file"]) == s["sha256"]]
    done = {s["first_seq"] for s in shards}
    starts = [s for s in range(0, len(tokens), seqs_per_shard) if s not in done]
    if shards_of is not None:
        rank, world = shards_of
        starts = [s for s in starts if (s // seqs_per_shard) % world == rank]
    starts = progress(starts, "harvesting to disk")
    for first in starts:
        part = tokens[first:first + seqs_per_shard]
        acts: dict[str, list[torch.Tensor]] = {n: [] for n in names}
        for chunk in iter_harvest(model, names, part, model_batch_size, skip_positions):
            for n in names:
                acts[n].append(chunk[n].to(dtype))
        file = f"shard_{first:08d}.safetensors"
        tmp = out / f".{file}.tmp{os.getpid()}"
        save_file({n: torch.cat(v).contiguous() for n, v in acts.items()}, str(tmp))
        os.replace(tmp, out / file)
        shards.append({"file": file, "first_seq": first, "n_seqs": len(part),
                       "n_tokens": len(part) * (tokens.shape[1] - skip_positions), "sha256": _sha256(out / file)})
        shards.sort(key=lambda s: s["first_seq"])
        _write_json_atomic(manifest_path, {**header, "shards": shards})
    if not manifest_path.exists():
        _write_json_atomic(manifest_path, {**header, "shards": shards})
    return DiskActivations(out) if shards_of is None else None


def rank_manifest(rank: int) -> str:
    """The partial manifest one rank of a distributed harvest writes."""
    return f"manifest.rank{rank}.json"


def merge_manifests(out_dir: str | Path, world_size: int) -> "DiskActivations":
    """Merge the ranks' partial manifests into ``manifest.json`` (shards in corpus order); the result
    is the manifest one process would have written. Raises when a rank's shards are missing."""
    out = Path(out_dir)
    parts = []
    for r in range(world_size):
        path = out / rank_manifest(r)
        if not path.exists():
            raise UncoverError(f"rank {r} has not finished its shards ({path} missing); re-run the harvest")
        parts.append(json.loads(path.read_text()))
    header = {k: v for k, v in parts[0].items() if k != "shards"}
    if any({k: v for k, v in p.items() if k != "shards"} != header for p in parts):
        raise UncoverError(f"the ranks' manifests in {out} describe different harvests")
    shards = sorted((s for p in parts for s in p["shards"]), key=lambda s: s["first_seq"])
    expected = list(range(0, header["n_seqs"], header["seqs_per_shard"]))
    if [s["first_seq"] for s in shards] != expected:
        missing = sorted(set(expected) - {s["first_seq"] for s in shards})
        raise UncoverError(f"shards starting at sequences {missing} are missing in {out}; re-run the harvest")
    _write_json_atomic(out / MANIFEST, {**header, "shards": shards})
    return DiskActivations(out)


@dataclass
class DiskActivations:
    """Read a ``harvest_to_disk`` folder; tensors are memory-mapped safetensors."""

    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if not (self.path / MANIFEST).exists():
            raise UncoverError(f"{self.path} has no {MANIFEST}; create it with harvest_to_disk")
        self.manifest = json.loads((self.path / MANIFEST).read_text())

    @property
    def names(self) -> list[str]:
        return self.manifest["names"]

    def __len__(self) -> int:
        return sum(s["n_tokens"] for s in self.manifest["shards"])

    def verify(self) -> list[str]:
        """Files whose sha256 no longer matches the manifest (empty when all are intact)."""
        return [s["file"] for s in self.manifest["shards"] if _sha256(self.path / s["file"]) != s["sha256"]]

    def shard(self, i: int, name: str) -> torch.Tensor:
        """Shard i's activations at ``name``: [n_tokens, d], memory-mapped."""
        with safe_open(str(self.path / self.manifest["shards"][i]["file"]), framework="pt") as f:
            return f.get_tensor(name)

    def load(self, name: str) -> torch.Tensor:
        """All activations at ``name`` in harvest order: [n_tokens, d] float32."""
        return torch.cat([self.shard(i, name).float() for i in range(len(self.manifest["shards"]))])

    def batches(
        self, batch_size: int, names: Sequence[str] | None = None, shuffle: bool = True, seed: int = 0,
        epochs: int = 1,
    ) -> Iterable[dict[str, torch.Tensor]]:
        """Batches dict name -> [batch_size, d] float32; shuffled within pairs of shards when shuffle."""
        names = list(names or self.names)
        gen = torch.Generator().manual_seed(seed)
        n = len(self.manifest["shards"])
        for _ in range(epochs):
            order = torch.randperm(n, generator=gen).tolist() if shuffle else list(range(n))
            carry: dict[str, torch.Tensor] | None = None
            for group in [order[i:i + 2] for i in range(0, n, 2)]:
                data = {nm: torch.cat([self.shard(i, nm).float() for i in group]) for nm in names}
                if carry is not None:
                    data = {nm: torch.cat([carry[nm], data[nm]]) for nm in names}
                if shuffle:
                    perm = torch.randperm(len(data[names[0]]), generator=gen)
                    data = {nm: t[perm] for nm, t in data.items()}
                usable = len(data[names[0]]) - len(data[names[0]]) % batch_size
                for s in range(0, usable, batch_size):
                    yield {nm: t[s:s + batch_size] for nm, t in data.items()}
                carry = {nm: t[usable:] for nm, t in data.items()}
