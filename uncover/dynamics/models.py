"""Toy models for training-dynamics experiments.

``ToyTransformer`` is a small decoder-only transformer (Nanda et al. 2023's grokking model, or Olsson et
al. 2022's attention-only model) whose submodules are named like the standard hook names: every
``hook_*`` attribute is an identity ``HookModule`` whose forward hook can read or replace the tensor, so
``uc.load(toy_model)`` exposes ``hook_embed``, ``blocks.{l}.hook_resid_pre`` ... ``blocks.{l}.attn.hook_pattern``
by module path. ``ModularMLP`` is the two-layer MLP of Doshi et al. 2023 (memorisation with corrupted labels).

Shapes: tokens ``[batch, pos]``; residual ``[batch, pos, d_model]``; q/k/v/z ``[batch, pos, head, d_head]``;
pattern ``[batch, head, query, key]``; mlp ``[batch, pos, d_mlp]``; logits ``[batch, pos, d_vocab]``.
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from uncover.core.scoped import seeded
from uncover.errors import UncoverError

if TYPE_CHECKING:
    from uncover.core.model import Model

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "quadratic": None}


@dataclass
class ToyOutput:
    """What a ToyTransformer returns: ``logits`` [batch, pos, d_vocab_out] (like a transformers output)."""

    logits: torch.Tensor


class HookModule(nn.Identity):
    """An identity module marking a named activation; attach forward hooks to read or replace it."""


class Quadratic(nn.Module):
    """x -> x**2, the activation used by Doshi et al. (2023) and Gromov (2023)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


def make_activation(name: str) -> nn.Module:
    if name == "quadratic":
        return Quadratic()
    if name not in ACTIVATIONS:
        raise UncoverError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


@dataclass
class ToyConfig:
    """Hyper-parameters of a ToyTransformer. ``d_mlp=0`` makes it attention-only."""

    d_vocab: int
    n_ctx: int
    d_vocab_out: int | None = None  # output classes; defaults to d_vocab
    d_model: int = 128
    n_heads: int = 4
    d_head: int = 32
    d_mlp: int = 512
    n_layers: int = 1
    act_fn: str = "relu"
    layer_norm: bool = False
    init_scale: float = 1.0  # multiplies every initial weight (Liu et al. 2022's alpha)

    def __post_init__(self) -> None:
        if self.d_vocab_out is None:
            self.d_vocab_out = self.d_vocab

    def to_dict(self) -> dict:
        return asdict(self)


def nanda_config(p: int = 113) -> ToyConfig:
    """The one-layer grokking transformer of Nanda et al. (2023): inputs a, b, '=' (token p); p output classes."""
    return ToyConfig(d_vocab=p + 1, d_vocab_out=p, n_ctx=3, d_model=128, n_heads=4, d_head=32, d_mlp=512, n_layers=1)


class Attention(nn.Module):
    """Multi-head causal self-attention without biases; weights per head like TransformerLens.

    W_Q, W_K, W_V: [n_heads, d_model, d_head]; W_O: [n_heads, d_head, d_model].
    """

    def __init__(self, cfg: ToyConfig):
        super().__init__()
        h, d, dh = cfg.n_heads, cfg.d_model, cfg.d_head
        self.W_Q = nn.Parameter(torch.randn(h, d, dh) / math.sqrt(d))
        self.W_K = nn.Parameter(torch.randn(h, d, dh) / math.sqrt(d))
        self.W_V = nn.Parameter(torch.randn(h, d, dh) / math.sqrt(d))
        self.W_O = nn.Parameter(torch.randn(h, dh, d) / math.sqrt(h * dh))
        self.scale = 1.0 / math.sqrt(dh)
        self.hook_q, self.hook_k, self.hook_v = HookModule(), HookModule(), HookModule()
        self.hook_pattern, self.hook_z = HookModule(), HookModule()

    def forward(self, x: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """x: [batch, pos, d_model] -> [batch, pos, d_model] (or [batch, 1, d_model] when ``last_only``:
        only the final query is computed, the only one whose output a last-token loss reads)."""
        x_q = x[:, -1:] if last_only else x
        q = self.hook_q(torch.einsum("bpd,hde->bphe", x_q, self.W_Q))
        k = self.hook_k(torch.einsum("bpd,hde->bphe", x, self.W_K))
        v = self.hook_v(torch.einsum("bpd,hde->bphe", x, self.W_V))
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) * self.scale
        if not last_only and x.shape[1] > 1:
            n = x.shape[1]
            causal = torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1)
            scores = scores.masked_fill(causal, float("-inf"))
        pattern = self.hook_pattern(scores.softmax(dim=-1))
        z = self.hook_z(torch.einsum("bhqk,bkhe->bqhe", pattern, v))
        return torch.einsum("bqhe,hed->bqd", z, self.W_O)


class MLP(nn.Module):
    """fc_in -> act -> fc_out, with hook_pre (before act) and hook_post (after act): [batch, pos, d_mlp]."""

    def __init__(self, cfg: ToyConfig):
        super().__init__()
        self.fc_in = nn.Linear(cfg.d_model, cfg.d_mlp)
        self.act = make_activation(cfg.act_fn)
        self.fc_out = nn.Linear(cfg.d_mlp, cfg.d_model)
        self.hook_pre, self.hook_post = HookModule(), HookModule()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(self.hook_post(self.act(self.hook_pre(self.fc_in(x)))))


class Block(nn.Module):
    """Pre-norm residual block (norms are identities when ``layer_norm`` is off)."""

    def __init__(self, cfg: ToyConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model) if cfg.layer_norm else nn.Identity()
        self.attn = Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model) if cfg.layer_norm and cfg.d_mlp else nn.Identity()
        self.mlp = MLP(cfg) if cfg.d_mlp else None
        self.hook_resid_pre, self.hook_resid_mid, self.hook_resid_post = HookModule(), HookModule(), HookModule()
        self.hook_attn_out, self.hook_mlp_out = HookModule(), HookModule()

    def forward(self, resid: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        resid = self.hook_resid_pre(resid)
        attn_out = self.hook_attn_out(self.attn(self.ln1(resid), last_only=last_only))
        resid = (resid[:, -1:] if last_only else resid) + attn_out
        if self.mlp is None:
            return self.hook_resid_post(resid)
        resid = self.hook_resid_mid(resid)
        resid = resid + self.hook_mlp_out(self.mlp(self.ln2(resid)))
        return self.hook_resid_post(resid)


class ToyTransformer(nn.Module):
    """A small decoder-only transformer with standard-named hook points.

    Submodules: ``embed`` (token embedding, W_E = embed.weight [d_vocab, d_model]), ``pos_embed``,
    ``blocks[l].attn`` (W_Q/W_K/W_V/W_O), ``blocks[l].mlp`` (fc_in, act, fc_out), ``ln_final``, ``unembed``
    (W_U = unembed.weight.T [d_model, d_vocab]).
    """

    def __init__(self, cfg: ToyConfig, seed: int | None = None):
        """``seed`` makes the initial weights reproducible without touching the global RNG stream."""
        super().__init__()
        with seeded(seed) if seed is not None else nullcontext():
            self._build(cfg)

    def _build(self, cfg: ToyConfig) -> None:
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.d_vocab, cfg.d_model)
        self.pos_embed = nn.Embedding(cfg.n_ctx, cfg.d_model)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layers)])
        self.ln_final = nn.LayerNorm(cfg.d_model) if cfg.layer_norm else nn.Identity()
        self.unembed = nn.Linear(cfg.d_model, cfg.d_vocab_out, bias=False)
        self.hook_embed, self.hook_pos_embed = HookModule(), HookModule()
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        d = self.cfg.d_model
        nn.init.normal_(self.embed.weight, std=1 / math.sqrt(d))
        nn.init.normal_(self.pos_embed.weight, std=1 / math.sqrt(d))
        nn.init.normal_(self.unembed.weight, std=1 / math.sqrt(d))
        for block in self.blocks:
            if block.mlp is not None:
                nn.init.normal_(block.mlp.fc_in.weight, std=1 / math.sqrt(d))
                nn.init.normal_(block.mlp.fc_out.weight, std=1 / math.sqrt(self.cfg.d_mlp))
                nn.init.zeros_(block.mlp.fc_in.bias)
                nn.init.zeros_(block.mlp.fc_out.bias)
        if self.cfg.init_scale != 1.0:
            for p in self.parameters():
                p.mul_(self.cfg.init_scale)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, use_cache: bool | None = None,
                last_only: bool = False, logits_to_keep: int = 0) -> ToyOutput:
        """input_ids [batch, pos] -> ``ToyOutput(logits=[batch, pos, d_vocab_out])`` (the HF calling convention,
        so ``uc.load(toy_model)`` wraps it like any causal LM; ``use_cache`` is accepted and ignored).

        ``last_only=True`` returns logits [batch, 1, d_vocab_out] for the final position only, skipping the
        final layer's queries, MLP and unembedding at every other position (their outputs are never read
        by a last-token loss); the result equals ``forward(input_ids).logits[:, -1:]``.
        ``logits_to_keep=k`` (HF's convention) unembeds only the last k positions.
        """
        tokens = input_ids
        if tokens.ndim != 2:
            raise UncoverError(f"tokens must be [batch, pos], got shape {tuple(tokens.shape)}")
        if tokens.shape[1] > self.cfg.n_ctx:
            raise UncoverError(f"sequence length {tokens.shape[1]} exceeds n_ctx={self.cfg.n_ctx}")
        if attention_mask is not None and not bool(attention_mask.all()):
            raise UncoverError("toy models have no padding support: pass equal-length sequences without a mask")
        table_size = self.cfg.d_vocab**2 * tokens.shape[1] * self.cfg.n_heads  # entries of the score table
        if last_only and len(self.blocks) == 1 and position_ids is None and table_size <= 2**24:
            return ToyOutput(self._one_layer_last_logits(tokens))
        positions = torch.arange(tokens.shape[1], device=tokens.device) if position_ids is None else position_ids
        resid = self.hook_embed(self.embed(tokens)) + self.hook_pos_embed(self.pos_embed(positions))
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            resid = block(resid, last_only=last_only and i == last)
        return ToyOutput(self.unembed(self.ln_final(resid[:, -logits_to_keep:] if logits_to_keep else resid)))

    @property
    def config(self) -> ToyConfig:
        """The HF-style name for ``cfg``."""
        return self.cfg

    @property
    def uncover_adapter(self):
        """The adapter ``uc.load`` uses to give this model the standard hook names."""
        from uncover.core.adapters.toy import ToyAdapter

        return ToyAdapter()

    def _one_layer_last_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Exact final-position logits [batch, 1, d_vocab] of a one-layer model, computed cheaply.

        Before layer 0 the residual at each position is embed[token] + pos_embed[position], so attention
        scores and values are evaluated once per (token, position) pair (small tables) and gathered per
        example with ``F.embedding`` (whose backward is a fast dense accumulation); only the final query
        is used, and the MLP and unembedding run at the final position only. The hook points on the
        pattern [batch, head, 1, pos], z [batch, 1, head, d_head] and everything after (at the final
        position) still fire; q, k, v and resid_pre do not exist as tensors here.
        """
        block, (batch, n) = self.blocks[0], tokens.shape
        attn, V, h = block.attn, self.cfg.d_vocab, self.cfg.n_heads
        table = self.embed.weight[:, None, :] + self.pos_embed.weight[None, :n, :]  # [V, pos, d_model]
        normed = block.ln1(table)
        rows = normed.reshape(V * n, -1)  # one row per (token, position)
        last, which = tokens[:, -1].unique(return_inverse=True)  # distinct final tokens (one for "a b =")
        q_table = torch.einsum("ud,hde->uhe", normed[last, -1], attn.W_Q)  # [U, head, d_head]
        k_table = torch.einsum("rd,hde->rhe", rows, attn.W_K)  # [V * pos, head, d_head]
        v_table = torch.einsum("rd,hde->rhe", rows, attn.W_V)
        score_table = torch.einsum("uhe,rhe->urh", q_table, k_table) * attn.scale  # [U, V * pos, head]
        positions = torch.arange(n, device=tokens.device)
        pair = tokens * n + positions  # row of (token, position) in the flattened tables, [batch, pos]
        scores = F.embedding(which[:, None] * (V * n) + pair, score_table.reshape(-1, h))  # [batch, pos, head]
        weights = scores.softmax(dim=1)
        view = weights.transpose(1, 2)[:, :, None, :]
        pattern = attn.hook_pattern(view)  # [batch, head, 1, pos]
        if pattern is not view:  # a hook replaced the pattern
            weights = pattern[:, :, 0, :].transpose(1, 2)
        v = F.embedding(pair, v_table.reshape(V * n, -1)).view(batch, n, h, -1)  # [batch, pos, head, d_head]
        z = attn.hook_z((weights[..., None] * v).sum(1)[:, None])  # [batch, 1, head, d_head]
        attn_out = block.hook_attn_out(z.flatten(2) @ attn.W_O.flatten(0, 1))  # [batch, 1, d_model]
        resid = F.embedding(tokens[:, -1:], table[:, n - 1]) + attn_out
        if block.mlp is not None:
            resid = block.hook_resid_mid(resid)
            resid = resid + block.hook_mlp_out(block.mlp(block.ln2(resid)))
        return self.unembed(self.ln_final(block.hook_resid_post(resid)))

    @property
    def W_E(self) -> torch.Tensor:
        return self.embed.weight

    @property
    def W_U(self) -> torch.Tensor:
        return self.unembed.weight.T


class ModularMLP(nn.Module):
    """Two-layer MLP on one-hot (a, b) inputs (Doshi et al. 2023; Gromov 2023).

    ``fc_in``: [2p -> width] (columns 0..p-1 read a, p..2p-1 read b), ``act``, ``fc_out``: [width -> p].
    Hidden activations go through ``hook_post`` [batch, width].
    """

    def __init__(self, p: int, width: int = 512, act_fn: str = "quadratic", init_scale: float = 1.0,
                 seed: int | None = None):
        super().__init__()
        with seeded(seed) if seed is not None else nullcontext():
            self._build(p, width, act_fn, init_scale)

    def _build(self, p: int, width: int, act_fn: str, init_scale: float) -> None:
        self.p, self.width = p, width
        self.fc_in = nn.Linear(2 * p, width, bias=False)
        self.act = make_activation(act_fn)
        self.fc_out = nn.Linear(width, p, bias=False)
        self.hook_post = HookModule()
        with torch.no_grad():
            nn.init.normal_(self.fc_in.weight, std=init_scale / math.sqrt(2 * p))
            nn.init.normal_(self.fc_out.weight, std=init_scale / math.sqrt(width))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [batch, 2] (a, b) or [batch, 3] (a, b, '=') -> logits [batch, p]."""
        w = self.fc_in.weight  # [width, 2p]
        pre = w[:, tokens[:, 0]].T + w[:, self.p + tokens[:, 1]].T  # one-hot matmul as a gather
        return self.fc_out(self.hook_post(self.act(pre)))

    def neuron_input_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W_a, W_b): each [width, p], the weights each hidden neuron gives to a and to b."""
        w = self.fc_in.weight
        return w[:, : self.p], w[:, self.p :]


def as_model(model: ToyTransformer) -> "Model":
    """The toy model through uncover's one door (``uc.load(model)``), so every technique (head scores,
    lenses, patching, interventions) reads it by standard hook names; its train/eval mode is kept."""
    from uncover.core.loading import load

    training = model.training
    wrapped = load(model)
    model.train(training)
    return wrapped
