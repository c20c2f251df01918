"""What one unit (an SAE latent or an MLP neuron) does: top-activating contexts, activation histogram,
logit effects, a polysemanticity score, and ablation / steering hooks.

Units are columns of an activation tensor [batch, pos, units] computed by a *unit function*
``fn(model, tokens) -> acts``; ``sae_latents(sae, latents)`` and (in uncover.components.neurons)
``mlp_neurons(layer, neurons)`` build the two common ones.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import torch

from uncover.core import interventions
from uncover.core.results import Progress, Result, no_progress
from uncover.errors import UncoverError
from uncover.features.sae import SAE

if TYPE_CHECKING:
    from uncover.core.model import Model

UnitFn = Callable[["Model", torch.Tensor], torch.Tensor]


def sae_latents(sae: SAE, latents: Sequence[int] | None = None) -> UnitFn:
    """Unit function: the SAE's latent activations [batch, pos, len(latents)] at its input hook."""
    from uncover.features.store import harvest

    index = None if latents is None else torch.as_tensor(list(latents))

    def fn(model: "Model", tokens: torch.Tensor) -> torch.Tensor:
        x = harvest(model, [sae.cfg.hook_name], tokens)[sae.cfg.hook_name]
        acts = sae.encode(x) if index is None else _encode_some(sae, x, index)
        return acts.view(*tokens.shape, -1)

    return fn


def _encode_some(sae: SAE, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    if sae.cfg.architecture == "topk":        # TopK needs every pre-activation to rank
        return sae.encode(x)[:, index]
    pre = sae._input(x) @ sae.W_enc[:, index] + sae.b_enc[index]
    acts = torch.relu(pre)
    return acts if sae.cfg.architecture == "relu" else acts * (pre > sae.threshold[index])


@dataclass
class TopContexts(Result):
    """For each unit, the n_top sequences with the highest activation (each sequence at most once).

    values [units, n_top]: the maximum activation in that sequence; seq / pos [units, n_top]: the row in
    ``tokens`` and the position of that maximum; acts [units, n_top, seq_len]: the unit's activations
    over the whole sequence; tokens: the token ids [n_seqs, seq_len] searched.
    """

    values: torch.Tensor
    seq: torch.Tensor
    pos: torch.Tensor
    acts: torch.Tensor
    tokens: torch.Tensor


@torch.no_grad()
def top_contexts_from_batches(
    batches: Iterable[torch.Tensor], tokens: torch.Tensor, n_top: int = 10
) -> TopContexts:
    """Keep each unit's n_top most activating sequences from consecutive activation batches
    [b, seq_len, units] covering tokens [n_seqs, seq_len] in order."""
    if n_top > len(tokens):
        raise UncoverError(f"n_top={n_top} exceeds the {len(tokens)} sequences searched; pass more tokens")
    best_v = best_s = best_p = best_a = None
    s = 0
    for acts in batches:
        acts = acts.float()
        v, p = acts.max(dim=1)                                             # [b, units]
        v, p, a = v.T, p.T, acts.permute(2, 0, 1)                          # [units, b], [units, b, pos]
        seq = torch.arange(s, s + acts.shape[0]).expand_as(v)
        s += acts.shape[0]
        if best_v is not None:
            v, p, seq = torch.cat([best_v, v], 1), torch.cat([best_p, p], 1), torch.cat([best_s, seq], 1)
            a = torch.cat([best_a, a], 1)
        k = min(n_top, v.shape[1])
        best_v, idx = v.topk(k, dim=1)
        best_p, best_s = p.gather(1, idx), seq.gather(1, idx)
        best_a = a.gather(1, idx[:, :, None].expand(-1, -1, a.shape[-1]))
    if s != len(tokens):
        raise UncoverError(f"the activation batches cover {s} sequences but tokens has {len(tokens)}")
    return TopContexts(best_v, best_s, best_p, best_a, tokens)


def top_contexts(
    model: "Model", unit_fn: UnitFn, tokens: torch.Tensor, n_top: int = 10, batch_size: int = 8,
    progress: Progress = no_progress,
) -> TopContexts:
    """Scan tokens [n_seqs, seq_len] and keep each unit's n_top most activating sequences."""
    if n_top > len(tokens):
        raise UncoverError(f"n_top={n_top} exceeds the {len(tokens)} sequences searched; pass more tokens")
    starts = range(0, len(tokens), batch_size)
    starts = progress(starts, "top contexts")
    return top_contexts_from_batches((unit_fn(model, tokens[s:s + batch_size]) for s in starts), tokens, n_top)


def activation_histogram(acts: torch.Tensor, bins: int = 30) -> dict[str, Any]:
    """Histogram of a unit's non-zero activations (any shape): counts, bin edges, and the firing rate."""
    flat = acts.flatten().float()
    nz = flat[flat > 0]
    if len(nz) == 0:
        return {"counts": [], "edges": [], "firing_rate": 0.0}
    counts = torch.histc(nz, bins=bins, min=0.0, max=float(nz.max()))
    edges = torch.linspace(0, float(nz.max()), bins + 1)
    return {"counts": counts.tolist(), "edges": edges.tolist(), "firing_rate": len(nz) / len(flat)}


def logit_effects(model: "Model", vectors: torch.Tensor, k: int = 10) -> dict[str, Any]:
    """Direct logit effect of residual-stream directions vectors [n, d_model] (decoder rows, neuron value
    vectors) through the unembedding ``v @ W_U`` (Geva et al. 2022): top/bottom k tokens and logits."""
    logits = vectors.float() @ model.W_U.float()                              # [n, d_vocab]
    top, bottom = logits.topk(k, dim=-1), (-logits).topk(k, dim=-1)

    def decode(ids: torch.Tensor) -> list[list[str]]:
        if model.tokenizer is None:
            return [[f"<{int(i)}>" for i in row] for row in ids]
        return [[model.tokenizer.decode([int(i)]) for i in row] for row in ids]

    return {"top_ids": top.indices.tolist(), "top_tokens": decode(top.indices), "top_logits": top.values.tolist(),
            "bottom_ids": bottom.indices.tolist(), "bottom_tokens": decode(bottom.indices),
            "bottom_logits": (-bottom.values).tolist()}


def _peak_mass(ctx: TopContexts, unit: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(token ids, share of the unit's top-context activation mass peaking on each), or None if no mass."""
    weights = ctx.values[unit].clamp_min(0)
    if weights.sum() <= 0:
        return None
    ids, inverse = ctx.tokens[ctx.seq[unit], ctx.pos[unit]].unique(return_inverse=True)
    mass = torch.zeros(len(ids)).index_add_(0, inverse, weights.float())
    return ids, mass / mass.sum()


def polysemanticity(ctx: TopContexts) -> torch.Tensor:
    """Effective number of distinct tokens a unit fires on in its top contexts: exp(entropy) of the
    activation-weighted distribution over the token ids at each context's maximum. [units]; 1 means
    the unit always peaks on the same token, n_top means every context peaks on a different token."""
    out = torch.empty(len(ctx.values))
    for u in range(len(ctx.values)):
        peak = _peak_mass(ctx, u)
        out[u] = float("nan") if peak is None else math.exp(float(-(peak[1] * peak[1].clamp_min(1e-12).log()).sum()))
    return out


def peak_tokens(model: "Model", ctx: TopContexts, unit: int, k: int = 3) -> list[tuple[str, float]]:
    """The k tokens that carry most of ``unit``'s top-context activation mass at the contexts' maxima, as
    (string token, share of the mass), largest first (the distribution ``polysemanticity`` measures)."""
    peak = _peak_mass(ctx, unit)
    if peak is None:
        return []
    ids, share = peak
    order = share.argsort(descending=True)[:k]
    return [(model.to_str_tokens(ids[i:i + 1])[0], float(share[i])) for i in order]


def context_window(model: "Model", ctx: TopContexts, unit: int, rank: int, before: int = 12, after: int = 4
                   ) -> tuple[list[str], list[float]]:
    """String tokens and the unit's activations around the maximum of its rank-th top context."""
    seq, pos = int(ctx.seq[unit, rank]), int(ctx.pos[unit, rank])
    lo, hi = max(0, pos - before), min(ctx.tokens.shape[1], pos + after + 1)
    words = model.to_str_tokens(ctx.tokens[seq, lo:hi])
    return words, ctx.acts[unit, rank, lo:hi].tolist()


# ----- interventions -----------------------------------------------------------------------------

def steer_hook(sae: SAE, latent: int, scale: float, positions=None) -> tuple[str, Callable]:
    """Add ``scale`` x the latent's decoder direction at the SAE's output hook (core add_vector)."""
    name = sae.cfg.hook_name_out if sae.cfg.is_transcoder else sae.cfg.hook_name
    return name, interventions.add_vector(sae.W_dec[latent].detach(), scale=scale, positions=positions)


def ablate_hook(sae: SAE, latent: int) -> tuple[str, Callable]:
    """Remove the latent's contribution f_latent(x) · W_dec[latent] from the activation at the SAE's hook
    (the rest of the activation, including the SAE's error, is left alone). SAEs only, not transcoders."""
    if sae.cfg.is_transcoder:
        raise UncoverError("ablate_hook edits an SAE's own hook; for a transcoder splice it with the latent zeroed")
    direction = sae.W_dec[latent].detach()

    def fn(t: torch.Tensor, hook) -> torch.Tensor:
        f = sae.encode(t.float())[..., latent]
        return (t.float() - f[..., None] * direction).to(t.dtype)

    return sae.cfg.hook_name, fn
