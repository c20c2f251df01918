"""SAE evaluation: reconstruction quality, sparsity and the model's loss with the SAE spliced in.

For an SAE at hook h (a transcoder: input hook h_in, output hook h_out), on token batches:

* ``l0``: mean active latents per token; ``dead_fraction`` / ``dense_fraction``: latents that never fire /
  fire on more than ``dense_threshold`` of tokens; ``feature_density`` [d_sae] the firing frequency;
* ``explained_variance`` = 1 - Σ‖x - x̂‖² / Σ‖x - mean(x)‖² and ``fvu`` = 1 - explained variance;
  ``cosine_similarity``: mean cos(x, x̂); ``l2_ratio`` = mean ‖x̂‖/‖x‖ (< 1 means shrinkage);
* ``ce_loss_clean`` / ``ce_loss_with_sae`` / ``ce_loss_zero_ablation`` (nats per next-token prediction),
  ``delta_loss`` = with_sae - clean, ``ce_loss_recovered`` = (zero - with_sae) / (zero - clean), and
  ``kl_div`` = mean KL(clean ‖ with SAE) of next-token distributions.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from uncover.core.results import Result
from uncover.core.vocab import log_prob_chunks, next_token_nll
from uncover.features.sae import SAE

if TYPE_CHECKING:
    from uncover.core.model import Model


@dataclass
class SAEEvalResult(Result):
    n_tokens: int
    l0: float
    explained_variance: float
    fvu: float
    cosine_similarity: float
    l2_ratio: float
    ce_loss_clean: float
    ce_loss_with_sae: float
    ce_loss_zero_ablation: float
    delta_loss: float
    ce_loss_recovered: float
    kl_div: float
    dead_fraction: float
    dense_fraction: float
    feature_density: torch.Tensor = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able metrics (feature_density as a list)."""
        out = asdict(self)
        out["feature_density"] = self.feature_density.tolist()
        return out


def splice_hooks(sae: SAE, replacement: str = "sae", skip_positions: int = 0) -> list[tuple[str, Any]]:
    """Hook functions that replace the SAE's output site by its reconstruction ("sae") or by zeros ("zero").

    For a transcoder the input hook stores its activation and the output hook is replaced by the
    transcoder's prediction from it. The first ``skip_positions`` positions keep their clean activations
    (the positions an SAE trained with ``skip_positions`` never saw, such as an attention sink at position 0).
    """
    cfg = sae.cfg
    out_name = cfg.hook_name_out if cfg.is_transcoder else cfg.hook_name

    def keep_first(t: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        return torch.cat([t[:, :skip_positions], new[:, skip_positions:]], 1) if skip_positions else new

    if replacement == "zero":
        return [(out_name, lambda t, hook: keep_first(t, torch.zeros_like(t)))]
    if not cfg.is_transcoder:
        return [(cfg.hook_name, lambda t, hook: keep_first(t, sae(t.float()).to(t.dtype)))]
    seen: dict[str, torch.Tensor] = {}

    def read(t: torch.Tensor, hook) -> None:
        seen["x"] = t

    def write(t: torch.Tensor, hook) -> torch.Tensor:
        return keep_first(t, sae(seen["x"].float()).to(t.dtype))

    return [(cfg.hook_name, read), (out_name, write)]


@torch.no_grad()
def evaluate_sae(
    model: "Model", sae: SAE, tokens: torch.Tensor, batch_size: int = 8, dense_threshold: float = 0.1,
    skip_positions: int = 0,
) -> SAEEvalResult:
    """Evaluate ``sae`` on tokens [n_seqs, pos], ``batch_size`` sequences per forward; the losses and KL are
    computed a chunk of positions at a time (``uncover.core.vocab``), so no batch's logits are ever whole.

    skip_positions: the first positions of every sequence are left out of the activation statistics and
    keep their clean activations in the spliced and zero-ablated runs (the loss still counts every
    prediction), for an SAE trained without them.
    """
    from uncover.features.store import harvest

    cfg = sae.cfg
    out_name = cfg.hook_name_out if cfg.is_transcoder else cfg.hook_name
    sums = {k: 0.0 for k in ("l0", "sq_err", "cos", "ratio", "ce_clean", "ce_sae", "ce_zero", "kl")}
    x_sum = x_sq = None
    fired = torch.zeros(cfg.d_sae)
    n_tok = n_pred = 0
    for s in range(0, len(tokens), batch_size):
        batch = tokens[s:s + batch_size]
        acts = harvest(model, list(dict.fromkeys([cfg.hook_name, out_name])), batch, skip_positions)
        x, target = acts[cfg.hook_name], acts[out_name]
        latents = sae.encode(x)
        recon = sae.decode(latents)
        active = latents > 0
        fired += active.sum(0)
        sums["l0"] += active.sum().item()
        sums["sq_err"] += (recon - target).pow(2).sum().item()
        sums["cos"] += F.cosine_similarity(recon, target, dim=-1).sum().item()
        sums["ratio"] += (recon.norm(dim=-1) / target.norm(dim=-1).clamp_min(1e-8)).sum().item()
        x_sum = target.sum(0) if x_sum is None else x_sum + target.sum(0)
        x_sq = target.pow(2).sum(0) if x_sq is None else x_sq + target.pow(2).sum(0)
        n_tok += len(x)
        runs = [model(batch, return_normed=True)] + [
            model.run_with_hooks(batch, fwd_hooks=splice_hooks(sae, kind, skip_positions), return_normed=True)
            for kind in ("sae", "zero")]                                          # [batch, pos, d_model] each
        next_ids = batch[:, 1:].flatten().to(runs[0].device)
        clean, spliced = (r[:, :-1].flatten(0, 1) for r in runs[:2])
        for rows, (lp_clean, lp_sae) in log_prob_chunks(model, clean, spliced):
            sums["ce_clean"] -= lp_clean.gather(-1, next_ids[rows, None]).sum().item()
            sums["ce_sae"] -= lp_sae.gather(-1, next_ids[rows, None]).sum().item()
            sums["kl"] += (lp_clean.exp() * (lp_clean - lp_sae)).sum().item()
            del lp_clean, lp_sae  # before the next chunk is made
        sums["ce_zero"] += next_token_nll(model, runs[2], batch).sum().item()
        n_pred += batch.shape[0] * (batch.shape[1] - 1)
    total_var = (x_sq - x_sum.pow(2) / n_tok).sum().item()
    ev = 1 - sums["sq_err"] / max(total_var, 1e-12)
    ce_clean, ce_sae, ce_zero = (sums[k] / n_pred for k in ("ce_clean", "ce_sae", "ce_zero"))
    density = fired / n_tok
    return SAEEvalResult(
        n_tokens=n_tok, l0=sums["l0"] / n_tok, explained_variance=ev, fvu=1 - ev,
        cosine_similarity=sums["cos"] / n_tok, l2_ratio=sums["ratio"] / n_tok,
        ce_loss_clean=ce_clean, ce_loss_with_sae=ce_sae, ce_loss_zero_ablation=ce_zero,
        delta_loss=ce_sae - ce_clean,
        ce_loss_recovered=(ce_zero - ce_sae) / (ce_zero - ce_clean) if ce_zero != ce_clean else float("nan"),
        kl_div=sums["kl"] / n_pred, dead_fraction=float((fired == 0).float().mean()),
        dense_fraction=float((density > dense_threshold).float().mean()), feature_density=density,
    )
