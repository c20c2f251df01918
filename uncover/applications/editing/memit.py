"""MEMIT (Meng et al. 2023): many fact edits at once, spread over a range of MLP layers.

For each request i a target residual z_i at the last edited layer L (subject's last token) is found by
optimisation (as ROME's value, but on ``blocks.{L}.hook_resid_post``). Then for each layer l of the
range in order, with the previous layers already edited: keys K [n, d_mlp] (mean over prefixes),
residual gaps R = (z - h_L) / (layers left) [n, d_model], and the batched least-squares update

    Delta_l = argmin |K Delta - R|^2 + lambda |C^(1/2) Delta|^2 = (lambda C + K^T K)^-1 K^T R,

with C = E[k k^T] of the layer's keys over a corpus (W_out orientation: [d_mlp, d_model]).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Sequence

import torch

from uncover.applications.editing.rome import (
    EditRequest, RomeConfig, WeightEdit, _weight, context_prefixes, edit_layer_from_trace,
    last_subject_positions, mean_keys, optimise_deltas,
)
from uncover.core.results import Progress, no_progress
from uncover.errors import UncoverError

if TYPE_CHECKING:
    from uncover.core.model import Model


@dataclass
class MemitConfig(RomeConfig):
    """ROME's settings plus: layers (None: 5 layers centred on the traced MLP peak of the first
    request), cov_weight (lambda above; None: d_mlp / 2), group (requests optimised together).

    On lambda: one key k alone gets the fraction s / (lambda + s) of its wanted change, with
    s = k^T C^-1 k (about 3000 for subjects at smollm2's layer 4, where d_mlp = 1536). Meng et al.'s
    15000 for GPT-J (d_mlp 16384) is about d_mlp, which would fit only ~15% per layer here, so the
    default scales with d_mlp.
    """

    layers: tuple[int, ...] | None = None
    cov_weight: float | None = None
    group: int = 8
    n_prefixes: int = 1
    clamp: float = 0.75


def memit_update(K: torch.Tensor, R: torch.Tensor, C: torch.Tensor | None, cov_weight: float) -> torch.Tensor:
    """(lambda C + K^T K)^-1 K^T R: K [n, d_in] keys, R [n, d_out] wanted output changes -> [d_in, d_out].

    C None means the identity (plain ridge regression).
    """
    K, R = K.double(), R.double()
    C = torch.eye(K.shape[1], dtype=K.dtype) if C is None else C.double().to(K.device)
    return torch.linalg.solve(cov_weight * C + K.T @ K, K.T @ R)


@torch.no_grad()
def residuals_at(model: "Model", layer: int, requests: Sequence[EditRequest]) -> torch.Tensor:
    """h_L: ``blocks.{layer}.hook_resid_post`` at each subject's last token of the bare prompts, [n, d_model]."""
    texts = [r.text for r in requests]
    tokens, mask = model.to_tokens(texts, return_mask=True)
    pos = last_subject_positions(model, texts, [r.subject for r in requests], mask)
    name = f"blocks.{layer}.hook_resid_post"
    _, cache = model.run_with_cache(tokens, names=[name], attention_mask=mask)
    return cache[name][torch.arange(len(pos)), pos.to(cache[name].device)].double().cpu()


def memit(
    model: "Model",
    requests: Sequence[EditRequest],
    cfg: MemitConfig | None = None,
    apply: bool = True,
    covariances: dict[int, torch.Tensor] | None = None,
    progress: Progress = no_progress,
) -> WeightEdit:
    """Compute (and by default apply) a MEMIT edit of all ``requests``; ``restore`` undoes it.

    covariances: layer -> key second moment [d_mlp, d_mlp] (default: ``key_covariance``, cached).
    """
    from uncover.applications.editing.covariance import key_covariance

    cfg = cfg or MemitConfig()
    requests = list(requests)
    if not requests:
        raise UncoverError("no edit requests; pass at least one EditRequest")
    subjects = [r.subject for r in requests]
    if len(set(subjects)) != len(subjects):
        raise UncoverError("MEMIT needs distinct subjects; edit a subject once per batch")
    if cfg.layers is None:
        peak = edit_layer_from_trace(model, requests[0])
        first = min(max(0, peak - 2), model.cfg.n_layers - 5)
        layers = list(range(max(0, first), min(model.cfg.n_layers, first + 5)))
    else:
        layers = sorted(cfg.layers)
    bad = [l for l in layers if not 0 <= l < model.cfg.n_layers]
    if bad:
        raise UncoverError(f"layers {bad} out of range: {model.name} has layers 0..{model.cfg.n_layers - 1}")
    if covariances is None:
        covariances = {l: c.mom2 for l, c in key_covariance(model, layers, cfg.cov_tokens, progress=progress).items()}
    last = layers[-1]
    cov_weight = model.cfg.d_mlp / 2 if cfg.cov_weight is None else cfg.cov_weight
    prefixes = context_prefixes(model, cfg.n_prefixes, cfg.prefix_len, cfg.seed)

    h = residuals_at(model, last, requests)
    deltas, logs = [], []
    for start in progress(range(0, len(requests), cfg.group), "optimising target residuals"):
        chunk = requests[start:start + cfg.group]
        d, log = optimise_deltas(model, chunk, f"blocks.{last}.hook_resid_post", None,
                                 h[start:start + cfg.group].norm(dim=-1), prefixes, cfg)
        deltas.append(d)
        logs += log
    targets = h + torch.cat(deltas)

    steps: list[WeightEdit] = []
    try:
        for i, layer in enumerate(progress(layers, "updating layers")):
            keys = mean_keys(model, layer, requests, prefixes)
            gap = (targets - residuals_at(model, last, requests)) / (len(layers) - i)
            update = memit_update(keys, gap, covariances[layer], cov_weight)
            W = _weight(model, layer)
            steps.append(WeightEdit({layer: update.to(W.dtype).cpu()}, requests, "memit").apply(model))
    finally:
        for step in reversed(steps):
            step.restore(model)
    edit = WeightEdit(
        deltas={l: s.deltas[l] for s, l in zip(steps, layers)}, requests=requests, method="memit",
        info={"layers": layers, "cov_weight": cov_weight, "final_nll": [log["nll"][-1] for log in logs], "config": asdict(cfg)},
    )
    return edit.apply(model) if apply else edit
