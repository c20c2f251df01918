"""Reading the residual stream in vocabulary space: logit lens, tuned lens, direct logit attribution.

Logit lens (nostalgebraist 2020): the residual before each layer (and the final one) goes through the
model's own final norm and unembedding. Tuned lens (Belrose 2023): a learned affine translator per layer,
``h + A h + b`` (A, b start at zero, so an untrained tuned lens is the logit lens), trained to match the
final layer's distribution (KL) on a text corpus. Direct logit attribution: the final residual is a sum of
the embedding and every attention and MLP output (or every head); with the final norm's scale frozen at the
real residual, each part's contribution to a logit (difference) is a dot product, and the parts sum to it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from uncover.core.results import Progress, Result, no_progress
from uncover.core.scoped import frozen
from uncover.errors import UncoverError

if TYPE_CHECKING:
    from uncover.core.model import Model


def _resid_names(model: "Model") -> list[str]:
    L = model.cfg.n_layers
    return [f"blocks.{l}.hook_resid_pre" for l in range(L)] + [f"blocks.{L - 1}.hook_resid_post"]


def _tokens(model: "Model", tokens, attention_mask):
    if isinstance(tokens, str) or (isinstance(tokens, (list, tuple)) and tokens and isinstance(tokens[0], str)):
        t, m = model.to_tokens(tokens, return_mask=True)
        return t, (None if bool(m.all()) else m)
    t = torch.as_tensor(tokens)
    return (t[None] if t.ndim == 1 else t).to(model.device), attention_mask


@dataclass
class LensResult(Result):
    """A lens read at every layer. Layer axis: ``labels`` ("0_pre" .. "final_post").

    log_probs: [n_layers + 1, batch, pos, d_vocab] (None when not kept); top_ids, top_probs: [n_layers + 1,
    batch, pos, k]; target_prob, target_rank: [n_layers + 1, batch, pos] (rank 0 = top token), when a target
    was given.
    """

    labels: list[str]
    log_probs: Tensor | None
    top_ids: Tensor
    top_probs: Tensor
    target: Tensor | None = None
    target_prob: Tensor | None = None
    target_rank: Tensor | None = None
    kind: str = "logit"


def _read(model: "Model", normed: Tensor, labels: list[str], k: int, target, kind: str, keep: bool) -> LensResult:
    """Read normalised residuals [n_layers + 1, batch, pos, d_model] through the unembedding, a chunk of rows
    at a time (``uncover.core.vocab``); the whole log-probabilities are kept only if ``keep``."""
    from uncover.core.vocab import log_prob_chunks

    shape = normed.shape[:-1]
    t = None
    if target is not None:
        t = torch.as_tensor(target, device=normed.device).long().reshape(-1)
        t = t.expand(shape[1]) if t.numel() == 1 else t
        if t.numel() != shape[1]:
            raise UncoverError(f"target has {t.numel()} ids for a batch of {shape[1]} prompts; give one per prompt.")
    row_target = None if t is None else t[None, :, None].expand(shape).flatten()  # [rows]
    parts: dict[str, list[Tensor]] = {"lp": [], "ids": [], "probs": [], "tprob": [], "rank": []}
    for rows, (lp,) in log_prob_chunks(model, normed.flatten(0, 2)):
        top = lp.topk(k, dim=-1)
        parts["ids"].append(top.indices)
        parts["probs"].append(top.values.exp())
        if keep:
            parts["lp"].append(lp)
        if row_target is not None:
            tlp = lp.gather(-1, row_target[rows, None])
            parts["tprob"].append(tlp.squeeze(-1).exp())
            parts["rank"].append((lp > tlp).sum(-1))

    def joined(key: str) -> Tensor:  # chunks of rows -> [n_layers + 1, batch, pos, ...]
        return torch.cat(parts[key]).view(*shape, *parts[key][0].shape[1:])

    result = LensResult(labels, joined("lp") if keep else None, joined("ids"), joined("probs"), kind=kind)
    if t is not None:
        result.target, result.target_prob, result.target_rank = t.cpu(), joined("tprob"), joined("rank")
    return result


@torch.no_grad()
def logit_lens(model: "Model", tokens, target: int | Tensor | None = None, k: int = 5,
               attention_mask: Tensor | None = None, keep_log_probs: bool = True) -> LensResult:
    """The logit lens at every layer and position (see ``LensResult``); target: a token id or one per prompt.
    keep_log_probs=False leaves out the [n_layers + 1, batch, pos, d_vocab] log-probabilities (memory)."""
    tokens, mask = _tokens(model, tokens, attention_mask)
    _, cache = model.run_with_cache(tokens, names=_resid_names(model), attention_mask=mask)
    resid, labels = cache.accumulated_resid(return_labels=True)
    return _read(model, model.apply_final_norm(resid), labels, k, target, "logit", keep_log_probs)


class TunedLens(nn.Module, Result):
    """Per-layer affine translators ``h -> h + A_l h + b_l`` for layers 0..n_layers-1 (resid_pre), then the
    model's final norm and unembedding. The final residual needs no translator."""

    def __init__(self, n_layers: int, d_model: int, model_name: str = ""):
        super().__init__()
        self.model_name = model_name
        self.weight = nn.Parameter(torch.zeros(n_layers, d_model, d_model))
        self.bias = nn.Parameter(torch.zeros(n_layers, d_model))

    def translate(self, resid: Tensor, layer: int) -> Tensor:
        """resid [..., d_model] before ``layer`` -> translated residual [..., d_model]."""
        return resid + resid @ self.weight[layer].T + self.bias[layer]

    def to_fields(self) -> dict:
        """Saved as an uncover result folder: weight [n_layers, d_model, d_model], bias [n_layers, d_model]."""
        return {"weight": self.weight.detach(), "bias": self.bias.detach(), "model_name": self.model_name}

    @classmethod
    def from_fields(cls, fields: dict) -> "TunedLens":
        n, d, _ = fields["weight"].shape
        lens = cls(n, d, fields["model_name"])
        lens.load_state_dict({"weight": fields["weight"], "bias": fields["bias"]})
        return lens


def _kl(final_lp: Tensor, lp: Tensor) -> Tensor:
    """KL(final || lens) per token, nats: [..., vocab] -> [...]."""
    return (final_lp.exp() * (final_lp - lp)).sum(-1)


def train_tuned_lens(model: "Model", tokens: Tensor, steps: int = 100, lr: float = 1e-3, batch_size: int = 8,
                     positions_per_seq: int = 32, seed: int = 0, lens: TunedLens | None = None,
                     progress: Progress = no_progress) -> TunedLens:
    """Fit translators by minimising KL(final layer || tuned lens) on ``tokens`` [n_seqs, seq_len].

    Each step draws ``batch_size`` sequences and ``positions_per_seq`` random positions per sequence
    (the unembedding is the expensive part); Adam on all layers at once.
    """
    cfg = model.cfg
    lens = lens or TunedLens(cfg.n_layers, cfg.d_model, model.name)
    lens = lens.to(model.device)
    opt = torch.optim.Adam(lens.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    with frozen(model.hf):  # gradients flow to the lens only; the caller's flags come back on exit
        for _ in progress(range(steps), "training tuned lens"):
            rows = torch.randint(tokens.shape[0], (batch_size,), generator=g)
            pos = torch.randint(tokens.shape[1], (batch_size, positions_per_seq), generator=g)
            resid, final_lp = _layer_inputs(model, tokens[rows], pos)
            loss = torch.stack([
                _kl(final_lp, model.unembed(model.apply_final_norm(lens.translate(resid[l], l))).float().log_softmax(-1)).mean()
                for l in range(cfg.n_layers)
            ]).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return lens


@torch.no_grad()
def _layer_inputs(model: "Model", tokens: Tensor, pos: Tensor) -> tuple[Tensor, Tensor]:
    """(resid_pre of every layer [n_layers, batch, k, d_model], final log-probs [batch, k, vocab]) at ``pos``."""
    logits, cache = model.run_with_cache(tokens.to(model.device), names=_resid_names(model))
    resid = cache.accumulated_resid()[:-1]
    pick = pos.to(resid.device)
    resid = torch.stack([r.gather(1, pick[..., None].expand(-1, -1, r.shape[-1])) for r in resid])
    final_lp = logits.gather(1, pick[..., None].expand(-1, -1, logits.shape[-1])).float().log_softmax(-1)
    return resid, final_lp


@torch.no_grad()
def tuned_lens(model: "Model", lens: TunedLens, tokens, target=None, k: int = 5,
               attention_mask: Tensor | None = None) -> LensResult:
    """The tuned lens at every layer and position (the last entry is the model's own output)."""
    tokens, mask = _tokens(model, tokens, attention_mask)
    _, cache = model.run_with_cache(tokens, names=_resid_names(model), attention_mask=mask)
    resid, labels = cache.accumulated_resid(return_labels=True)
    translated = torch.stack([lens.translate(resid[l], l) for l in range(model.cfg.n_layers)] + [resid[-1]])
    return _read(model, model.apply_final_norm(translated), labels, k, target, "tuned", keep=True)


@torch.no_grad()
def lens_kl(model: "Model", tokens: Tensor, lens: TunedLens | None = None, batch_size: int = 8) -> dict[str, Tensor]:
    """Mean KL(final || lens) per layer [n_layers] on ``tokens``, for the logit lens and (if given) the tuned lens."""
    sums = {"logit": torch.zeros(model.cfg.n_layers)}
    if lens is not None:
        sums["tuned"] = torch.zeros(model.cfg.n_layers)
    count = 0
    for i in range(0, tokens.shape[0], batch_size):
        chunk = tokens[i: i + batch_size]
        pos = torch.arange(chunk.shape[1]).expand(chunk.shape[0], -1)
        resid, final_lp = _layer_inputs(model, chunk, pos)
        for l in range(model.cfg.n_layers):
            sums["logit"][l] += _kl(final_lp, model.unembed(model.apply_final_norm(resid[l])).float().log_softmax(-1)).sum().cpu()
            if lens is not None:
                tuned = model.unembed(model.apply_final_norm(lens.translate(resid[l], l))).float().log_softmax(-1)
                sums["tuned"][l] += _kl(final_lp, tuned).sum().cpu()
        count += chunk.numel()
    return {k: v / count for k, v in sums.items()}


# ---- direct logit attribution -------------------------------------------------------------------
def _unembed_direction(model: "Model", logits: Tensor, ids) -> tuple[Tensor, Tensor]:
    """(W_U direction [d_model, batch], real logit [batch]) of one id or answer set per prompt.

    ids: an int, [batch], or sets [batch, k] padded with -1 (the set's mean logit, as in the metrics).
    """
    from uncover.core.metrics import _as_sets

    b = logits.shape[0]
    ids = torch.as_tensor(ids, device=logits.device).long()
    ids = ids.reshape(1, -1).expand(b, -1) if ids.ndim == 0 or (ids.ndim == 1 and ids.numel() == 1) else ids
    sets, valid = _as_sets(ids)
    w = valid.float() / valid.sum(-1, keepdim=True).clamp(min=1)  # [b, k]
    W_U = model.W_U.detach().float()
    direction = torch.einsum("mbk,bk->mb", W_U[:, sets], w)
    actual = (logits.float().gather(-1, sets) * w).sum(-1)
    return direction, actual


@dataclass
class DLAResult(Result):
    """Each component's direct contribution to the logit (difference) at one position.

    values: [n_components, batch]; labels: "embed", "L{l} attn" (or "L{l}H{h}" and "L{l} attn other" per
    head), "L{l} mlp". actual: the model's real logit (difference) [batch]. ``values.sum(0)`` equals
    ``actual`` up to float rounding, plus the final LayerNorm's bias term for LayerNorm models (a constant
    that belongs to no component) and the final logit softcap (Gemma 2), which the linear split ignores.
    """

    values: Tensor
    labels: list[str]
    actual: Tensor
    meta: dict = field(default_factory=dict)

    def mean(self) -> Tensor:
        """Mean over prompts [n_components]."""
        return self.values.mean(-1)


@torch.no_grad()
def direct_logit_attribution(model: "Model", tokens, answers, wrong=None, pos: int = -1, per_head: bool = False,
                             attention_mask: Tensor | None = None) -> DLAResult:
    """Split the logit of ``answers`` (minus ``wrong``) at ``pos`` into embedding, attention (per head if
    ``per_head``) and MLP parts, with the final norm's scale frozen at the real residual.

    answers, wrong: a token id, one per prompt [batch], or sets [batch, k] padded with -1 (mean logit
    over the set, as in ``metrics.logit_diff``). Per head, each head's part is z_h @ W_O[h];
    "L{l} attn other" is the rest of that layer's attention output (the output bias; for post-norm models
    such as Gemma 2/3 also the post-norm's rescaling, so heads there are approximate).
    """
    tokens, mask = _tokens(model, tokens, attention_mask)
    cfg = model.cfg
    names = ["blocks.0.hook_resid_pre", f"blocks.{cfg.n_layers - 1}.hook_resid_post"]
    names += [f"blocks.{l}.{s}" for l in range(cfg.n_layers) for s in ("hook_attn_out", "hook_mlp_out")]
    if per_head:
        names += [f"blocks.{l}.attn.hook_z" for l in range(cfg.n_layers)]
    logits, cache = model.run_with_cache(tokens, names=names, attention_mask=mask)
    direction, actual = _unembed_direction(model, logits[:, pos], answers)
    if wrong is not None:
        d_wrong, a_wrong = _unembed_direction(model, logits[:, pos], wrong)
        direction, actual = direction - d_wrong, actual - a_wrong
    parts, labels = [cache["blocks.0.hook_resid_pre"][:, pos]], ["embed"]
    for l in range(cfg.n_layers):
        attn = cache[f"blocks.{l}.hook_attn_out"][:, pos]
        if per_head:
            z = cache[f"blocks.{l}.attn.hook_z"][:, pos]  # [b, head, d_head]
            heads = torch.einsum("bhd,hdm->hbm", z, model.W_O(l).to(z.dtype))
            parts += list(heads) + [attn - heads.sum(0)]
            labels += [f"L{l}H{h}" for h in range(cfg.n_heads)] + [f"L{l} attn other"]
        else:
            parts.append(attn)
            labels.append(f"L{l} attn")
        parts.append(cache[f"blocks.{l}.hook_mlp_out"][:, pos])
        labels.append(f"L{l} mlp")
    stack = torch.stack(parts).float()  # [C, b, d_model]
    normed = cache.apply_ln_to_stack(stack, pos_slice=pos)
    values = torch.einsum("cbm,mb->cb", normed.float(), direction)
    return DLAResult(values.cpu(), labels, actual.cpu(), {"pos": pos, "per_head": per_head})


def head_dla(result: DLAResult, n_layers: int, n_heads: int) -> Tensor:
    """Per-head direct effects [n_layers, n_heads] (mean over prompts) from a ``per_head=True`` result."""
    if not result.meta.get("per_head"):
        raise UncoverError("head_dla needs direct_logit_attribution(..., per_head=True).")
    mean = result.mean()
    index = {label: i for i, label in enumerate(result.labels)}
    return torch.tensor([[float(mean[index[f"L{l}H{h}"]]) for h in range(n_heads)] for l in range(n_layers)])
