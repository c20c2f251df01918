"""Progress measures for grokking (Nanda et al. 2023) and Fourier sparsity measures (Doshi et al. 2023).

Conventions: p is an odd prime; frequency k in 1..(p-1)/2 means angular frequency w_k = 2*pi*k/p. The
real Fourier basis over Z_p has p orthonormal rows: constant, then cos(w_k x), sin(w_k x) for each k.
Logit grids are ``[p, p, p]`` indexed (a, b, c) for the answer logits on input (a, b).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from uncover.errors import UncoverError


def fourier_basis(p: int) -> tuple[torch.Tensor, list[str]]:
    """Orthonormal real Fourier basis over Z_p: [p, p] (rows are basis vectors) and their labels."""
    x = torch.arange(p, dtype=torch.float64)
    rows, labels = [torch.ones(p, dtype=torch.float64)], ["const"]
    for k in range(1, (p - 1) // 2 + 1):
        rows += [torch.cos(2 * math.pi * k * x / p), torch.sin(2 * math.pi * k * x / p)]
        labels += [f"cos {k}", f"sin {k}"]
    basis = torch.stack(rows)
    return basis / basis.norm(dim=1, keepdim=True), labels


def frequency_norms(weights: torch.Tensor) -> torch.Tensor:
    """Norm of each frequency's component of a per-residue matrix.

    weights: [p, d] (e.g. W_E restricted to the p number tokens). Returns [(p-1)/2 + 1]: index 0 is the
    constant component, index k the root sum of squares of the cos k and sin k components.
    """
    p = weights.shape[0]
    basis, _ = fourier_basis(p)
    coeffs = basis.to(weights.dtype) @ weights  # [p, d]
    sq = coeffs.pow(2).sum(-1)
    return torch.cat([sq[:1], sq[1:].view(-1, 2).sum(-1)]).sqrt()


def fourier_component_norms(weights: torch.Tensor) -> torch.Tensor:
    """Norm of each of the p Fourier components (constant, cos 1, sin 1, ...) of ``weights`` [p, d] -> [p]."""
    basis, _ = fourier_basis(weights.shape[0])
    return (basis.to(weights.dtype) @ weights).norm(dim=-1)


def key_frequencies(norms: torch.Tensor, max_keys: int = 10, min_gap: float = 2.0) -> list[int]:
    """The frequencies that carry the embedding, found from the largest drop in sorted norms.

    norms: [(p-1)/2 + 1] from ``frequency_norms`` (index 0, the constant, is ignored). Sorts the
    frequency norms, and cuts after the position (among the top ``max_keys``) with the largest ratio
    between consecutive norms; returns [] when no ratio reaches ``min_gap`` (no sparse structure yet).
    """
    values = norms[1:].double()
    order = values.argsort(descending=True)
    ranked = values[order]
    limit = min(max_keys, len(ranked) - 1)
    if limit < 1:
        return []
    ratios = ranked[:limit] / ranked[1 : limit + 1].clamp_min(1e-30)
    cut = int(ratios.argmax())
    if float(ratios[cut]) < min_gap:
        return []
    return sorted(int(k) + 1 for k in order[: cut + 1])


def neuron_frequencies(acts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each neuron's dominant frequency and the fraction of its variance that frequency explains.

    acts: [p, p, n] neuron activations over the input grid (a, b). For frequency k, the explained part
    is every 2D Fourier term built only from frequency k and the constant: (k, 0), (0, k) and (k, k)
    terms (cos/sin products included). Returns (freq [n] in 1..(p-1)/2, fve [n] in [0, 1]).
    """
    p = acts.shape[0]
    basis, _ = fourier_basis(p)
    basis = basis.to(acts.dtype)
    coeffs = torch.einsum("ia,jb,abn->ijn", basis, basis, acts)  # 2D Fourier coefficients
    power = coeffs.pow(2)
    total = power.sum((0, 1)) - power[0, 0]  # variance around the mean (times p^2)
    n_freq = (p - 1) // 2
    explained = []
    for k in range(1, n_freq + 1):
        idx = [2 * k - 1, 2 * k]
        part = power[idx][:, [0]].sum((0, 1)) + power[[0]][:, idx].sum((0, 1)) + power[idx][:, idx].sum((0, 1))
        explained.append(part)
    explained = torch.stack(explained)  # [n_freq, n]
    fve, best = (explained / total.clamp_min(1e-30)).max(0)
    return best + 1, fve


def _sum_directions(p: int, key_freqs: list[int], sign: int) -> torch.Tensor:
    """Orthonormal directions cos(w_k (a + sign*b)), sin(w_k (a + sign*b)) over the grid: [2K, p*p]."""
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    s = (a + sign * b).double().reshape(-1)
    dirs = []
    for k in key_freqs:
        w = 2 * math.pi * k / p
        dirs += [torch.cos(w * s), torch.sin(w * s)]
    if not dirs:
        return torch.zeros(0, p * p, dtype=torch.float64)
    dirs = torch.stack(dirs)
    return dirs / dirs.norm(dim=1, keepdim=True)


def key_frequency_logits(logits: torch.Tensor, key_freqs: list[int], sign: int = 1) -> torch.Tensor:
    """The part of the logit grid [p, p, p] along cos/sin(w_k (a + sign*b)) for the key frequencies."""
    p = logits.shape[0]
    flat = logits.reshape(p * p, -1).double()
    dirs = _sum_directions(p, key_freqs, sign)
    return (dirs.T @ (dirs @ flat)).reshape(logits.shape).to(logits.dtype)


def logit_frequency_norms(logits: torch.Tensor, sign: int = 1) -> torch.Tensor:
    """Norm of the logit grid [p, p, p] along cos/sin(w_k (a + sign*b)) for each k: [(p-1)/2] (index k-1)."""
    p = logits.shape[0]
    flat = logits.reshape(p * p, -1).double()
    dirs = _sum_directions(p, list(range(1, (p - 1) // 2 + 1)), sign)  # [2K, p*p]
    coeffs = (dirs @ flat).pow(2).sum(-1)  # squared norm of each direction's component
    return coeffs.view(-1, 2).sum(-1).sqrt()


def logit_key_frequencies(logits: torch.Tensor, sign: int = 1, max_keys: int = 10, min_gap: float = 2.0) -> list[int]:
    """Key frequencies of a trained model read off its logit grid [p, p, p]: the frequencies whose
    cos/sin(w_k (a + sign*b)) terms carry the logits (largest drop in ``logit_frequency_norms``)."""
    norms = logit_frequency_norms(logits, sign)
    return key_frequencies(torch.cat([norms.new_zeros(1), norms]), max_keys=max_keys, min_gap=min_gap)


def restricted_logits(logits: torch.Tensor, key_freqs: list[int], sign: int = 1) -> torch.Tensor:
    """Keep only the key-frequency terms of the logit grid (plus each output's mean over inputs)."""
    mean = logits.mean((0, 1), keepdim=True)
    return mean + key_frequency_logits(logits, key_freqs, sign)


def excluded_logits(logits: torch.Tensor, key_freqs: list[int], sign: int = 1) -> torch.Tensor:
    """Remove the key-frequency terms from the logit grid [p, p, p]."""
    return logits - key_frequency_logits(logits, key_freqs, sign)


def grid_loss(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Mean cross-entropy of a logit grid [p, p, c] against labels [p, p], over ``mask`` [p, p] if given."""
    losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).double(), labels.reshape(-1), reduction="none")
    if mask is not None:
        losses = losses[mask.reshape(-1)]
    return float(losses.mean())


def restricted_loss(logits: torch.Tensor, labels: torch.Tensor, key_freqs: list[int], sign: int = 1) -> float:
    """Loss over every input pair when only the key frequencies' terms are kept (Nanda et al. 2023)."""
    return grid_loss(restricted_logits(logits, key_freqs, sign), labels)


def excluded_loss(logits: torch.Tensor, labels: torch.Tensor, key_freqs: list[int], train_mask: torch.Tensor,
                  sign: int = 1) -> float:
    """Training loss when the key frequencies' terms are removed (Nanda et al. 2023): rises as the model
    comes to rely on the generalising circuit rather than memorisation."""
    return grid_loss(excluded_logits(logits, key_freqs, sign), labels, train_mask)


def gini(values: torch.Tensor) -> float:
    """Gini coefficient of non-negative values: sum_ij |x_i - x_j| / (2 n sum x). 0 = equal, (n-1)/n = one."""
    x = values.double().flatten()
    if (x < 0).any():
        raise UncoverError("gini needs non-negative values")
    n, total = len(x), x.sum()
    if total == 0:
        return 0.0
    x = x.sort().values
    ranks = torch.arange(1, n + 1, dtype=torch.float64)
    return float((2 * (ranks * x).sum()) / (n * total) - (n + 1) / n)


def one_sided_power(weights: torch.Tensor) -> torch.Tensor:
    """Power at each frequency 0..(p-1)/2 of each row: weights [n, p] -> [n, (p-1)/2 + 1] (cos^2 + sin^2)."""
    basis, _ = fourier_basis(weights.shape[-1])
    sq = (weights.double() @ basis.T).pow(2)
    return torch.cat([sq[:, :1], sq[:, 1:].reshape(sq.shape[0], -1, 2).sum(-1)], dim=1)


def ipr(power: torch.Tensor, r: int = 2) -> torch.Tensor:
    """Inverse participation ratio of each row of a power spectrum [n, K]: sum_k P_k^r / (sum_k P_k)^r.

    With the one-sided power of ``one_sided_power`` a single-frequency row has IPR 1 and a row spread
    evenly over m frequencies has 1/m^(r-1) (Doshi et al. 2023 use r = 2).
    """
    power = power.double()
    return power.pow(r).sum(-1) / power.sum(-1).clamp_min(1e-30).pow(r)


def weight_norms(model: nn.Module) -> dict[str, float]:
    """L2 norm of all weights ('total') and of each top-level part / block ('blocks.0', 'embed', ...)."""
    groups: dict[str, float] = {}
    total = 0.0
    for name, param in model.named_parameters():
        parts = name.split(".")
        group = ".".join(parts[:2]) if parts[0] == "blocks" else parts[0]
        sq = float(param.detach().double().pow(2).sum())
        groups[group] = groups.get(group, 0.0) + sq
        total += sq
    return {"total": math.sqrt(total), **{k: math.sqrt(v) for k, v in groups.items()}}


@dataclass
class Phases:
    """Step boundaries of grokking's three phases (Nanda et al. 2023); None where not reached."""

    memorised: int | None  # end of memorisation: first step with train accuracy >= threshold
    cleanup_start: int | None  # end of circuit formation: test loss has fallen `drop` of its log range
    generalised: int | None  # end of cleanup: first step with test accuracy >= threshold

    def ranges(self) -> dict[str, tuple[int, int] | None]:
        m, c, g = self.memorised, self.cleanup_start, self.generalised
        return {
            "memorisation": (0, m) if m is not None else None,
            "circuit_formation": (m, c) if m is not None and c is not None else None,
            "cleanup": (c, g) if c is not None and g is not None else None,
        }


def detect_phases(steps: list[int], train_acc: list[float], test_acc: list[float], test_loss: list[float],
                  threshold: float = 0.99, drop: float = 0.1) -> Phases:
    """Find memorisation / circuit formation / cleanup from training curves.

    Memorisation ends when train accuracy first reaches ``threshold``; cleanup ends when test accuracy
    does. Circuit formation ends (cleanup starts) at the first step after the post-memorisation peak of
    log test loss where it has fallen by ``drop`` of the way from that peak to its value at generalisation.
    """
    if not (len(steps) == len(train_acc) == len(test_acc) == len(test_loss)):
        raise UncoverError("steps, train_acc, test_acc and test_loss must have the same length")
    first = lambda xs: next((i for i, x in enumerate(xs) if x >= threshold), None)  # noqa: E731
    i_mem, i_gen = first(train_acc), first(test_acc)
    memorised = steps[i_mem] if i_mem is not None else None
    generalised = steps[i_gen] if i_gen is not None else None
    cleanup = None
    if i_mem is not None and i_gen is not None and i_gen > i_mem:
        logs = [math.log(max(x, 1e-30)) for x in test_loss]
        i_peak = max(range(i_mem, i_gen + 1), key=lambda i: logs[i])
        level = logs[i_peak] - drop * (logs[i_peak] - logs[i_gen])
        i_clean = next(i for i in range(i_peak, i_gen + 1) if logs[i] <= level)
        cleanup = steps[i_clean]
    return Phases(memorised, cleanup, generalised)
