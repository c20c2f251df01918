"""Synthetic datasets for training-dynamics experiments (all made offline, deterministic given a seed).

Modular arithmetic (Power et al. 2022): every pair (a, b) in [0, p)^2 as tokens ``[a, b, p]`` (p is the
'=' token) with label ``op(a, b) mod p``; a random ``train_frac`` of pairs is the training set. Division
uses b in [1, p) (b = 0 has no inverse). Induction data (Olsson et al. 2022): random token sequences whose
second half repeats the first half.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from uncover.errors import UncoverError

OPERATIONS = ("add", "sub", "div", "poly")  # a+b, a-b, a/b, a^2+ab (mod p)


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))


def modular_labels(a: torch.Tensor, b: torch.Tensor, p: int, op: str) -> torch.Tensor:
    """op(a, b) mod p for LongTensors a, b (any shape)."""
    if op == "add":
        return (a + b) % p
    if op == "sub":
        return (a - b) % p
    if op == "div":
        inverse = torch.tensor([pow(int(x), p - 2, p) if x else 0 for x in range(p)])
        return (a * inverse[b]) % p
    if op == "poly":
        return (a * a + a * b) % p
    raise UncoverError(f"unknown operation {op!r}; choose one of {OPERATIONS}")


@dataclass
class ModularData:
    """Every (a, b) pair of a modular task, split into train and test.

    tokens: [n, 3] (a, b, '=' token p); labels: [n]; train_idx / test_idx index into them.
    ``clean_labels`` differs from ``labels`` only where training labels were corrupted (``corrupted`` mask [n]).
    """

    p: int
    op: str
    tokens: torch.Tensor
    labels: torch.Tensor
    clean_labels: torch.Tensor
    corrupted: torch.Tensor
    train_idx: torch.Tensor
    test_idx: torch.Tensor

    @property
    def train(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tokens[self.train_idx], self.labels[self.train_idx]

    @property
    def test(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tokens[self.test_idx], self.labels[self.test_idx]

    def grid_order(self) -> torch.Tensor:
        """Indices that sort all pairs as a [p, p] grid (a major) — only for ops defined on all b."""
        return torch.argsort(self.tokens[:, 0] * self.p + self.tokens[:, 1])


def modular_data(p: int = 113, op: str = "add", train_frac: float = 0.3, seed: int = 0,
                 corrupt_frac: float = 0.0) -> ModularData:
    """All pairs of ``op`` mod ``p``; a ``train_frac`` random split; optionally a ``corrupt_frac`` of the
    *training* labels replaced by uniformly random wrong labels (Doshi et al. 2023)."""
    if not _is_prime(p):
        raise UncoverError(f"p={p} must be prime (modular division and the Fourier analysis assume a field)")
    if not 0.0 < train_frac < 1.0:
        raise UncoverError(f"train_frac={train_frac} must be strictly between 0 and 1")
    if not 0.0 <= corrupt_frac < 1.0:
        raise UncoverError(f"corrupt_frac={corrupt_frac} must be in [0, 1)")
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    a, b = a.reshape(-1), b.reshape(-1)
    if op == "div":
        keep = b != 0
        a, b = a[keep], b[keep]
    labels = modular_labels(a, b, p, op)
    tokens = torch.stack([a, b, torch.full_like(a, p)], dim=1)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(labels), generator=gen)
    n_train = int(round(train_frac * len(labels)))
    train_idx, test_idx = perm[:n_train].sort().values, perm[n_train:].sort().values
    noisy = labels.clone()
    corrupted = torch.zeros(len(labels), dtype=torch.bool)
    n_corrupt = int(round(corrupt_frac * n_train))
    if n_corrupt:
        chosen = train_idx[torch.randperm(n_train, generator=gen)[:n_corrupt]]
        shift = torch.randint(1, p, (n_corrupt,), generator=gen)  # never the true label
        noisy[chosen] = (labels[chosen] + shift) % p
        corrupted[chosen] = True
    return ModularData(p, op, tokens, noisy, labels, corrupted, train_idx, test_idx)


def repeated_sequences(n: int, seq_len: int, d_vocab: int, seed: int = 0, vary_period: bool = False) -> torch.Tensor:
    """[n, seq_len] random tokens that end with a repeated segment (the induction task).

    Each sequence starts with token 0 (a BOS marker); the rest are tokens 1..d_vocab-1. By default a
    random segment of length seq_len // 2 follows the BOS and is then repeated (truncated to seq_len).
    With ``vary_period`` each sequence draws its segment length m in [seq_len // 4, (seq_len - 1) // 2]
    and is BOS, random filler, segment, segment: the repeat's offset varies, so only matching on content
    (an induction head), not on position, predicts it.
    """
    if seq_len < 5 or d_vocab < 3:
        raise UncoverError("need seq_len >= 5 and d_vocab >= 3 for a repeated sequence")
    gen = torch.Generator().manual_seed(seed)
    body = torch.randint(1, d_vocab, (n, seq_len - 1), generator=gen)
    if not vary_period:
        half = seq_len // 2
        body = torch.cat([body[:, :half], body[:, :half]], dim=1)[:, : seq_len - 1]
    else:
        periods = torch.randint(seq_len // 4, (seq_len - 1) // 2 + 1, (n,), generator=gen)
        for row, m in enumerate(periods.tolist()):
            body[row, -m:] = body[row, -2 * m : -m]
    return torch.cat([torch.zeros(n, 1, dtype=torch.long), body], dim=1)
