"""Attention heads: behavioural scores, factored QK / OV circuits and composition (Elhage 2021; Olsson 2022).

``scores(model, kind)`` -> [n_layers, n_heads]:
  previous_token   mean attention from each token to the one before it
  duplicate_token  mean attention from a token in the repeated half to its earlier copy
  induction        mean attention from a token in the repeated half to the token after its earlier copy
                   (prefix matching), on random tokens repeated once
  copying          Elhage's eigenvalue score of the full OV circuit W_E W_V W_O W_U: sum(lambda)/sum(|lambda|),
                   in [-1, 1], 1 when every eigenvalue is positive (the head copies the token it attends to)
  direct_effect    each head's direct logit attribution to a task's metric (needs ``task=``)

Circuits are kept factored, ``W_QK = W_Q W_K^T`` and ``W_OV = W_V W_O`` (rank d_head), so SVDs, eigenvalues
and norms cost d_head-sized work; vocab x vocab matrices appear only when ``.materialize()`` is asked.
Under grouped-query attention query head h uses KV head h // (n_heads // n_kv_heads). The circuits read
the raw weights: the attention's input norm weights are not folded in; the final norm's weight is folded
into W_U for the full circuits.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from uncover.errors import UncoverError

if TYPE_CHECKING:
    from uncover.core.model import Model
    from uncover.data.tasks import Task

KINDS = ("previous_token", "duplicate_token", "induction", "copying", "direct_effect")


# ---- behavioural scores ------------------------------------------------------------------------
@torch.no_grad()
def attention_scores(model: "Model", tokens: Tensor | None = None, half_len: int | None = None,
                     batch: int = 4, seed: int = 0) -> dict[str, Tensor]:
    """previous_token, duplicate_token and induction scores [n_layers, n_heads] from one forward.

    tokens: [batch, prefix + 2 * half_len] repeated sequences (default: ``repeated_tokens`` with
    half_len=50 after the tokenizer's BOS, if any); half_len must then be given.
    """
    from uncover.data.induction import repeated_tokens
    from uncover.data.tasks import bos_prefix

    if tokens is None:
        half_len = half_len or 50
        tokens = repeated_tokens(model, batch, half_len, seed)
        prefix = len(bos_prefix(model))
    else:
        if half_len is None:
            raise UncoverError("attention_scores(tokens=...) needs half_len=, the length of the repeated sequence.")
        prefix = tokens.shape[1] - 2 * half_len
        if prefix < 0:
            raise UncoverError(f"tokens have {tokens.shape[1]} positions, fewer than 2 * half_len = {2 * half_len}.")
    pattern = attention_patterns(model, tokens).float()
    seq = tokens.shape[1]
    q_all = torch.arange(prefix + 1, seq)
    q_rep = torch.arange(prefix + half_len, seq)
    prev = diagonal_score(pattern, q_all, 1)
    dup = diagonal_score(pattern, q_rep, half_len)
    ind = diagonal_score(pattern, q_rep, half_len - 1)
    return {"previous_token": prev.cpu(), "duplicate_token": dup.cpu(), "induction": ind.cpu()}


@torch.no_grad()
def attention_patterns(model: "Model", tokens: Tensor) -> Tensor:
    """Every layer's attention pattern in one forward: tokens [batch, pos] -> [n_layers, batch, head, query, key]."""
    names = [f"blocks.{l}.attn.hook_pattern" for l in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(tokens, names=names)
    return torch.stack([cache[n] for n in names])


def diagonal_score(pattern: Tensor, queries: Tensor, offset: int) -> Tensor:
    """Mean attention from each query q to key q - offset, over the batch and ``queries``.

    pattern: [layer, batch, head, query, key] -> [layer, head] (any leading axes before batch are kept).
    The previous-token score is offset 1; the induction score on a sequence repeated with period P is
    offset P - 1 over the queries in the repeat.
    """
    return pattern[..., queries, queries - offset].mean(dim=(-3, -1))


def scores(model: "Model", kind: str, task: "Task | None" = None, **kwargs) -> Tensor:
    """One head score [n_layers, n_heads]; ``kind`` is one of ``KINDS`` (see the module docstring)."""
    if kind in ("previous_token", "duplicate_token", "induction"):
        return attention_scores(model, **kwargs)[kind]
    if kind == "copying":
        return copying_scores(model)
    if kind == "direct_effect":
        if task is None:
            raise UncoverError("scores(model, 'direct_effect') needs task= (e.g. uncover.data.tasks.make_task(model, 'ioi')).")
        return direct_effect(model, task)
    raise UncoverError(f"unknown head score {kind!r}; choose one of {', '.join(KINDS)}.")


def direct_effect(model: "Model", task: "Task") -> Tensor:
    """Each head's direct logit attribution to the task's answer minus wrong answer [n_layers, n_heads].

    For tasks with answer sets the mean logit over each set is used (as in the logit-difference metric).
    """
    from uncover.components.lens import direct_logit_attribution, head_dla

    dla = direct_logit_attribution(model, task.clean, task.answers, task.wrong, per_head=True,
                                   attention_mask=task.attention_mask)
    return head_dla(dla, model.cfg.n_layers, model.cfg.n_heads)


# ---- factored circuits -------------------------------------------------------------------------
@dataclass
class FactoredMatrix:
    """The product ``A @ B`` kept as its factors: A [..., m, r], B [..., r, n] (r small)."""

    A: Tensor
    B: Tensor

    @property
    def shape(self) -> tuple[int, ...]:
        return (*self.A.shape[:-1], self.B.shape[-1])

    def materialize(self) -> Tensor:
        """The full [..., m, n] matrix (only when asked: m, n may be the vocabulary)."""
        return self.A @ self.B

    @property
    def T(self) -> "FactoredMatrix":
        return FactoredMatrix(self.B.transpose(-1, -2), self.A.transpose(-1, -2))

    def __matmul__(self, other: Tensor) -> "FactoredMatrix":
        return FactoredMatrix(self.A, self.B @ other)

    def __rmatmul__(self, other: Tensor) -> "FactoredMatrix":
        return FactoredMatrix(other @ self.A, self.B)

    def svd(self) -> tuple[Tensor, Tensor, Tensor]:
        """Thin SVD of A B: (U [..., m, r], S [..., r], Vh [..., r, n]) from two QRs and an r x r SVD."""
        qa, ra = torch.linalg.qr(self.A.double())
        qb, rb = torch.linalg.qr(self.B.transpose(-1, -2).double())
        u, s, vh = torch.linalg.svd(ra @ rb.transpose(-1, -2))
        dt = self.A.dtype
        return (qa @ u).to(dt), s.to(dt), (vh @ qb.transpose(-1, -2)).to(dt)

    def eigenvalues(self) -> Tensor:
        """The r eigenvalues of A B that can be nonzero (those of B A) [..., r], complex. Needs m == n."""
        if self.A.shape[-2] != self.B.shape[-1]:
            raise UncoverError(f"eigenvalues need a square matrix; this one is {self.shape[-2]} x {self.shape[-1]}.")
        return torch.linalg.eigvals((self.B @ self.A).double())

    def norm(self) -> Tensor:
        """Frobenius norm of A B, from r x r Gram matrices: sqrt(tr(A^T A B B^T))."""
        ga = self.A.transpose(-1, -2) @ self.A
        gb = self.B @ self.B.transpose(-1, -2)
        return (ga * gb.transpose(-1, -2)).sum(dim=(-1, -2)).clamp(min=0).sqrt()


def _check_head(model: "Model", layer: int, head: int | None) -> None:
    cfg = model.cfg
    if not 0 <= layer < cfg.n_layers or (head is not None and not 0 <= head < cfg.n_heads):
        raise UncoverError(f"head ({layer}, {head}) is outside {cfg.n_layers} layers x {cfg.n_heads} heads.")


def _per_head(model: "Model", layer: int, kind: str) -> Tensor:
    """W_Q / W_O [n_heads, ...] or W_K / W_V expanded from KV heads to query heads [n_heads, ...]."""
    w = {"Q": model.W_Q, "K": model.W_K, "V": model.W_V, "O": model.W_O}[kind](layer).detach().float()
    if kind in ("K", "V") and w.shape[0] != model.cfg.n_heads:
        w = w.repeat_interleave(model.cfg.n_heads // w.shape[0], dim=0)
    return w


def qk_circuit(model: "Model", layer: int, head: int | None = None) -> FactoredMatrix:
    """W_QK = W_Q W_K^T [d_model, d_model] (query side x key side); all heads [n_heads, ...] if head is None."""
    _check_head(model, layer, head)
    q, k = _per_head(model, layer, "Q"), _per_head(model, layer, "K")
    m = FactoredMatrix(q, k.transpose(-1, -2))
    return m if head is None else FactoredMatrix(m.A[head], m.B[head])


def ov_circuit(model: "Model", layer: int, head: int | None = None) -> FactoredMatrix:
    """W_OV = W_V W_O [d_model, d_model] (row vector convention: x @ W_OV is what the head writes)."""
    _check_head(model, layer, head)
    m = FactoredMatrix(_per_head(model, layer, "V"), _per_head(model, layer, "O"))
    return m if head is None else FactoredMatrix(m.A[head], m.B[head])


def unembedding(model: "Model") -> Tensor:
    """W_U [d_model, d_vocab] with the final norm's weight folded in (LayerNorm: centring ignored)."""
    norm = model.adapter.final_norm(model.hf)
    w = model.adapter.norm_weight(norm).detach().float()
    return w[:, None] * model.W_U.detach().float()


def full_ov_circuit(model: "Model", layer: int, head: int) -> FactoredMatrix:
    """W_E W_OV W_U [d_vocab, d_vocab]: which token is written when a token is attended to."""
    ov = ov_circuit(model, layer, head)
    return FactoredMatrix(model.W_E.detach().float() @ ov.A, ov.B @ unembedding(model))


def full_qk_circuit(model: "Model", layer: int, head: int) -> FactoredMatrix:
    """W_E W_QK W_E^T [d_vocab, d_vocab]: attention score of query token (row) to key token (column)."""
    qk = qk_circuit(model, layer, head)
    W_E = model.W_E.detach().float()
    return FactoredMatrix(W_E @ qk.A, qk.B @ W_E.T)


@torch.no_grad()
def copying_scores(model: "Model") -> Tensor:
    """Elhage 2021's copying score per head [n_layers, n_heads]: sum(lambda) / sum(|lambda|) over the
    eigenvalues of the full OV circuit, computed as those of W_O W_U W_E W_V (d_head x d_head)."""
    UE = unembedding(model) @ model.W_E.detach().float()  # [d_model, d_model]
    out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    for l in range(model.cfg.n_layers):
        v, o = _per_head(model, l, "V"), _per_head(model, l, "O")
        eig = torch.linalg.eigvals((o @ UE @ v).double())  # [n_heads, d_head]
        out[l] = (eig.sum(-1).real / eig.abs().sum(-1).clamp(min=1e-30)).float()
    return out


@torch.no_grad()
def composition_scores(model: "Model", kind: str = "q") -> Tensor:
    """Elhage's composition scores [n_layers, n_heads, n_layers, n_heads] from writer head (l1, h1) to
    reader head (l2, h2), zero unless l1 < l2:  ||W_OV1 R|| / (||W_OV1|| ||R||) with R = W_QK2 (q),
    W_QK2^T (k) or W_OV2 (v). Norms are Frobenius, computed from d_head x d_head Gram matrices."""
    if kind not in ("q", "k", "v"):
        raise UncoverError(f"composition kind must be 'q', 'k' or 'v', not {kind!r}.")
    cfg = model.cfg
    ov = [ov_circuit(model, l) for l in range(cfg.n_layers)]
    readers = [ov[l] if kind == "v" else (qk_circuit(model, l) if kind == "q" else qk_circuit(model, l).T)
               for l in range(cfg.n_layers)]
    out = torch.zeros(cfg.n_layers, cfg.n_heads, cfg.n_layers, cfg.n_heads)
    for l1 in range(cfg.n_layers - 1):
        w = ov[l1]
        ga = w.A.transpose(-1, -2) @ w.A  # [h1, r, r]
        for l2 in range(l1 + 1, cfg.n_layers):
            r = readers[l2]
            gb = r.B @ r.B.transpose(-1, -2)  # [h2, r, r]
            mid = torch.einsum("ard,bds->abrs", w.B, r.A)  # W_O1 @ R_A: [h1, h2, r, r]
            x = ga[:, None] @ mid @ gb[None]
            num = (x * mid).sum(dim=(-1, -2)).clamp(min=0).sqrt()
            out[l1, :, l2, :] = num / (w.norm()[:, None] * r.norm()[None, :])
    return out


def top_heads(values: Tensor, k: int = 5, largest: bool = True) -> list[tuple[int, int, float]]:
    """The k heads with the largest values in a [n_layers, n_heads] score, as (layer, head, value)."""
    flat = values.flatten().nan_to_num(float("-inf") if largest else float("inf"))
    idx = flat.topk(min(k, flat.numel()), largest=largest).indices.tolist()
    n_heads = values.shape[1]
    return [(i // n_heads, i % n_heads, float(values.flatten()[i])) for i in idx]


@torch.no_grad()
def repeated_half_loss(model: "Model", tokens: Tensor, half_len: int, heads=(), kind: str = "zero") -> float:
    """Mean next-token loss (nats) over the repeated half of ``tokens`` [batch, prefix + 2 * half_len],
    with ``heads`` [(layer, head), ...] ablated together (zero or mean; see ``head_ablation_hooks``)."""
    from uncover.components.metrics import loss
    from uncover.components.patching import head_ablation_hooks
    from uncover.core.interventions import mean_activations

    values = None
    if kind == "mean" and heads:
        names = sorted({f"blocks.{l}.attn.hook_z" for l, _ in heads})
        values = mean_activations(model, tokens, names)
    hooks = head_ablation_hooks(model, list(heads), kind, values) if heads else []
    logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[:, tokens.shape[1] - half_len + 1:] = True  # the first repeated token is not yet predictable
    return float(loss(logits, tokens, mask))


def induction_ablation(model: "Model", k: int = 3, n_random: int = 3, half_len: int = 50, batch: int = 4,
                       seed: int = 0) -> dict:
    """Zero-ablate the top ``k`` induction heads, and ``n_random`` draws of ``k`` random other heads from
    the same layers (a layer-matched control: zero-ablating some early heads breaks any model).

    Returns the losses (nats) on the repeated half of random sequences: "clean", "top" (with the heads
    named in "top_heads"), "random" (list, one per draw) and the induction "scores" [n_layers, n_heads].
    """
    from uncover.data.induction import repeated_tokens

    tokens = repeated_tokens(model, batch, half_len, seed)
    score = attention_scores(model, tokens, half_len)["induction"]
    top = [(l, h) for l, h, _ in top_heads(score, k)]
    g = torch.Generator().manual_seed(seed)
    draws = []
    for _ in range(n_random):
        draw: list[tuple[int, int]] = []
        for l, _h in top:
            free = [h for h in range(model.cfg.n_heads) if (l, h) not in top and (l, h) not in draw]
            draw.append((l, free[int(torch.randint(len(free), (1,), generator=g))]))
        draws.append(draw)
    return {
        "clean": repeated_half_loss(model, tokens, half_len),
        "top": repeated_half_loss(model, tokens, half_len, top),
        "top_heads": top,
        "random": [repeated_half_loss(model, tokens, half_len, d) for d in draws],
        "random_heads": draws,
        "scores": score,
    }
