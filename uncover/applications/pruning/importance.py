"""How much each attention head and MLP neuron matters: scores [n_layers, units], higher = more important.

Measures (``METHODS``), each computed on calibration token windows [batch, pos] for the next-token loss L
(mean cross-entropy of one window, nats), with an optional plan's units already masked:

- ``gradient`` (Michel et al. 2019): E_x |dL(x)/d m_u| for a mask m_u on the unit's output (at m = 1 this is
  the sum over positions of activation . gradient), each layer's scores divided by their L2 norm.
- ``attribution``: the first-order estimate of the loss increase when the unit is zeroed,
  E_x [-a_u . dL/da_u] (attribution patching towards a zero activation); signed.
- ``activation``: mean over tokens of the norm of the unit's write to the residual stream
  (||z_h W_O^h|| for a head, |a_i| ||W_out[i]|| for a neuron).
- ``magnitude``: the Frobenius norm of the unit's own weights (query and output slices for a head; gate, up
  and down slices for a neuron).
- ``wanda`` (Sun et al. 2023), structured: the sum of |W_ij| ||X_j||_2 over the output projection's entries
  that read the unit (X_j: its input feature over all calibration tokens).
- ``random``: uniform scores from ``seed`` (the baseline).

``wanda_mask`` gives Wanda's original unstructured per-output-row mask for any weight.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from uncover.applications.pruning.plan import PruningPlan, n_units
from uncover.core.results import Progress, Result, no_progress
from uncover.core.vocab import next_token_nll
from uncover.errors import UncoverError

if TYPE_CHECKING:
    from uncover.core.model import Model

METHODS = ("gradient", "attribution", "activation", "magnitude", "wanda", "random")


@dataclass
class Importance(Result):
    """scores: [n_layers, units] (higher = more important), for ``unit`` by ``method``."""

    scores: torch.Tensor
    unit: str
    method: str


def _site(unit: str, l: int) -> str:
    return f"blocks.{l}.attn.hook_z" if unit == "heads" else f"blocks.{l}.mlp.hook_post"


def _unit_acts(unit: str, t: torch.Tensor) -> torch.Tensor:
    """[batch, pos, units, k]: heads keep their d_head axis; neurons get a trailing axis of 1."""
    return t if unit == "heads" else t.unsqueeze(-1)


def _check_tokens(tokens: torch.Tensor) -> torch.Tensor:
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2 or tokens.shape[1] < 2:
        raise UncoverError("calibration tokens must be a LongTensor [batch, pos] with pos >= 2 "
                           "(e.g. uncover.data.corpus.corpus_tokens(model, 16, 128))")
    return tokens


def _gradient_terms(model: "Model", tokens: torch.Tensor, unit: str, plan: PruningPlan | None,
                    batch_size: int, progress: Progress) -> tuple[torch.Tensor, torch.Tensor]:
    """(E_x |a.g|, E_x [-a.g]) per unit, each [n_layers, units]; a.g summed over positions and d_head."""
    n_layers, width = n_units(model, unit)
    names = [_site(unit, l) for l in range(n_layers)]
    hooks = plan.hooks() if plan is not None else []
    abs_sum = torch.zeros(n_layers, width)
    signed = torch.zeros(n_layers, width)
    chunks = list(torch.split(tokens, batch_size))
    for chunk in progress(chunks, f"{unit} gradients"):
        def total_loss(normed: torch.Tensor) -> torch.Tensor:  # sum of per-window mean losses
            return next_token_nll(model, normed, chunk).mean(-1).sum()

        # from the unembedding's input, a chunk of positions at a time: no whole logits nor their gradient
        _, acts, grads = model.grad_cache(chunk, total_loss, names, fwd_hooks=hooks, return_normed=True)
        for l, name in enumerate(names):
            dot = (_unit_acts(unit, acts[name]).float() * _unit_acts(unit, grads[name]).float()).sum(dim=(1, 3))
            abs_sum[l] += dot.abs().sum(0).cpu()
            signed[l] -= dot.sum(0).cpu()
    n = tokens.shape[0]
    return abs_sum / n, signed / n


@torch.no_grad()
def _activation_stats(model: "Model", tokens: torch.Tensor, unit: str, plan: PruningPlan | None,
                      batch_size: int, progress: Progress) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean write norm per unit, L2 norm over tokens of each input feature of the output projection).

    Shapes [n_layers, units] and [n_layers, units * k] (k = d_head for heads, 1 for neurons).
    """
    n_layers, width = n_units(model, unit)
    names = [_site(unit, l) for l in range(n_layers)]
    hooks = plan.hooks() if plan is not None else []
    write = torch.zeros(n_layers, width)
    sq = None
    n_tok = 0
    W = [_out_weight(model, unit, l).float() for l in range(n_layers)]  # [units, k, d_model]
    for chunk in progress(list(torch.split(tokens, batch_size)), f"{unit} activations"):
        _, cache = model.run_with_cache(chunk, names=names, fwd_hooks=hooks)
        n_tok += chunk.numel()
        rows = []
        for l, name in enumerate(names):
            a = _unit_acts(unit, cache[name]).float()  # [b, pos, units, k]
            out = torch.einsum("bpuk,ukd->bpud", a, W[l].to(a.device))
            write[l] += out.norm(dim=-1).sum(dim=(0, 1)).cpu()
            rows.append(a.pow(2).sum(dim=(0, 1)).flatten().cpu())
        step = torch.stack(rows)
        sq = step if sq is None else sq + step
    return write / n_tok, sq.sqrt()


def _out_weight(model: "Model", unit: str, l: int) -> torch.Tensor:
    """[units, k, d_model]: what each unit writes (W_O per head, W_out rows per neuron)."""
    return model.W_O(l).detach() if unit == "heads" else model.W_out(l).detach().unsqueeze(1)


def _magnitude(model: "Model", unit: str) -> torch.Tensor:
    rows = []
    for l in range(model.cfg.n_layers):
        if unit == "heads":
            q = model.W_Q(l).detach().float().pow(2).sum(dim=(1, 2))
            o = model.W_O(l).detach().float().pow(2).sum(dim=(1, 2))
            rows.append((q + o).sqrt())
        else:
            sq = model.W_in(l).detach().float().pow(2).sum(0) + model.W_out(l).detach().float().pow(2).sum(1)
            layer = model.adapter.layers(model.hf)[l]
            up = getattr(getattr(layer, "mlp", None), "up_proj", None)
            if model.cfg.gated_mlp and up is not None:
                sq = sq + up.weight.detach().float().pow(2).sum(1)
            rows.append(sq.sqrt())
    return torch.stack(rows).cpu()


def _wanda_structured(model: "Model", unit: str, x_norm: torch.Tensor) -> torch.Tensor:
    n_layers, width = n_units(model, unit)
    rows = []
    for l in range(n_layers):
        W = _out_weight(model, unit, l).float().cpu()  # [units, k, d_model]
        x = x_norm[l].view(width, -1, 1)  # [units, k, 1]
        rows.append((W.abs() * x).sum(dim=(1, 2)))
    return torch.stack(rows)


def importance(model: "Model", tokens: torch.Tensor, method: str = "gradient", unit: str = "heads",
               plan: PruningPlan | None = None, batch_size: int = 8, seed: int = 0,
               progress: Progress = no_progress) -> Importance:
    """Scores [n_layers, units] of ``unit`` ("heads" or "neurons") by ``method`` (see the module doc).

    tokens: calibration windows [batch, pos] (no padding). plan: units already removed are masked
    during the measurement (iterative pruning); their own scores are meaningless and are set to -inf.
    """
    if method not in METHODS:
        raise UncoverError(f"unknown importance method {method!r}; choose one of {', '.join(METHODS)}")
    n_layers, width = n_units(model, unit)
    if method == "random":
        scores = torch.rand(n_layers, width, generator=torch.Generator().manual_seed(seed))
    elif method == "magnitude":
        scores = _magnitude(model, unit)
    elif method in ("gradient", "attribution"):
        absolute, signed = _gradient_terms(model, _check_tokens(tokens), unit, plan, batch_size, progress)
        if method == "gradient":
            scores = absolute / absolute.norm(dim=1, keepdim=True).clamp(min=1e-12)
        else:
            scores = signed
    else:
        write, x_norm = _activation_stats(model, _check_tokens(tokens), unit, plan, batch_size, progress)
        scores = write if method == "activation" else _wanda_structured(model, unit, x_norm)
    if plan is not None:
        scores = scores.clone()
        scores[plan.mask(unit) == 0] = float("-inf")
    return Importance(scores, unit, method)


def wanda_mask(weight: torch.Tensor, x_norm: torch.Tensor, share: float) -> torch.Tensor:
    """Wanda's unstructured mask: per output row, drop the ``share`` of weights with the lowest |W_ij| ||X_j||.

    weight: [out, in] (an nn.Linear weight); x_norm: [in], the L2 norm of each input feature over the
    calibration tokens. Returns a bool keep-mask [out, in] with ``round(share * in)`` False per row.
    """
    from uncover.applications.pruning.plan import check_share

    check_share(share)
    if weight.ndim != 2 or x_norm.shape != (weight.shape[1],):
        raise UncoverError(f"wanda_mask needs weight [out, in] and x_norm [in]; got {tuple(weight.shape)} "
                           f"and {tuple(x_norm.shape)}")
    score = weight.abs().float() * x_norm.float().to(weight.device)[None]
    k = int(round(share * weight.shape[1]))
    keep = torch.ones_like(weight, dtype=torch.bool)
    if k:
        drop = score.topk(k, dim=1, largest=False).indices
        keep.scatter_(1, drop, False)
    return keep
