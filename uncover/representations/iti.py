"""Inference-time intervention (Li 2024): probe every attention head for truth, keep the top-K heads,
and shift each of them by ``alpha * sigma * direction`` at every position.

direction: the head's unit mass-mean direction (mean z of true statements minus false ones);
sigma: the standard deviation of the heads' activations along it. The shift is an ``add_vector``
hook on ``blocks.{l}.attn.hook_z`` (per head, [batch, pos, head, d_head]).

The effect is measured on fact prompts as the log-probability margin of the true attribute over a
false one (and how often the true one wins), the cost as perplexity on neutral text.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import torch

from uncover.core.interventions import add_vector
from uncover.core.results import Progress, no_progress
from uncover.core.results import Result
from uncover.data.facts import Fact
from uncover.errors import UncoverError
from uncover.representations.activations import collect_activations
from uncover.representations.probes import LogisticProbe, split_indices

if TYPE_CHECKING:
    from uncover.core.model import Model


# Fact relations used to measure ITI: the true attribute against another one of the same relation.
ITI_RELATIONS = ("city_country", "capital", "continent", "language", "currency", "animal_class")


@dataclass
class ITI(Result):
    """Per-head probe accuracies [n_layers, n_heads], the chosen heads, and their shift vectors
    ``sigma * direction`` [K, d_head] (multiply by alpha when steering)."""

    accuracy: torch.Tensor
    heads: list[tuple[int, int]]  # (layer, head)
    shifts: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    def hooks(self, alpha: float, n_heads: int) -> list:
        """``add_vector`` hooks on hook_z adding ``alpha * shift`` to each chosen head at every position."""
        by_layer: dict[int, torch.Tensor] = {}
        for (l, h), s in zip(self.heads, self.shifts):
            v = by_layer.setdefault(l, torch.zeros(n_heads, s.shape[-1]))
            v[h] += s
        return [(f"blocks.{l}.attn.hook_z", add_vector(v, alpha)) for l, v in by_layer.items()]


def head_probe_accuracy(z: torch.Tensor, labels: Sequence[int], test_frac: float = 0.3, seed: int = 0,
                        progress: Progress = no_progress) -> torch.Tensor:
    """Held-out logistic-probe accuracy of each head from ``z [n_layers, n, n_heads, d_head]`` -> [n_layers, n_heads]."""
    y = torch.as_tensor(labels).long()
    train, test = split_indices(y, test_frac, seed)
    L, _, H, _ = z.shape
    acc = torch.zeros(L, H)
    layers = progress(range(L), "ITI head probes")
    for l in layers:
        for h in range(H):
            acc[l, h] = LogisticProbe(C=0.1).fit(z[l, train, h], y[train]).score(z[l, test, h], y[test])
    return acc


def fit_iti(model: "Model", texts: Sequence[str], labels: Sequence[int], top_k: int = 16, seed: int = 0,
            progress: Progress = no_progress) -> ITI:
    """Probe every head on true/false statements (last token), keep the ``top_k`` most accurate."""
    if not 1 <= top_k <= model.cfg.n_layers * model.cfg.n_heads:
        raise UncoverError(f"top_k must be between 1 and {model.cfg.n_layers * model.cfg.n_heads}, got {top_k}")
    z = collect_activations(model, texts, site="attn.hook_z")  # [L, n, H, d_head]
    acc = head_probe_accuracy(z, labels, seed=seed, progress=progress)
    y = torch.as_tensor(labels).bool()
    top = torch.topk(acc.flatten(), top_k).indices
    heads = [(int(i) // model.cfg.n_heads, int(i) % model.cfg.n_heads) for i in top]
    shifts = []
    for l, h in heads:
        u = z[l, y, h].mean(0) - z[l, ~y, h].mean(0)
        u = u / u.norm().clamp_min(1e-12)
        sigma = (z[l, :, h] @ u).std()
        shifts.append(sigma * u)
    return ITI(acc, heads, torch.stack(shifts), {"top_k": top_k, "n_statements": len(texts)})


@torch.no_grad()
def truth_margin(model: "Model", facts: Sequence[Fact], hooks: list = (), seed: int = 0) -> tuple[float, float]:
    """(mean log P(true attribute) - log P(false attribute) in nats, fraction where the true one wins)
    on each fact's canonical prompt; the false attribute is another fact's of the same relation."""
    rng = random.Random(seed)
    prompts, right, wrong = [], [], []
    for f in facts:
        others = sorted({g.attribute for g in facts if g.relation == f.relation and g.attribute != f.attribute})
        if not others:
            continue
        prompts.append(f.prompt())
        right.append(model.tokenizer.encode(f.attribute, add_special_tokens=False)[0])
        wrong.append(model.tokenizer.encode(rng.choice(others), add_special_tokens=False)[0])
    if not prompts:
        raise UncoverError("need facts of relations with at least two different attributes")
    tokens, mask = model.to_tokens(prompts, return_mask=True)
    logp = model.run_with_hooks(tokens, list(hooks), attention_mask=mask)[:, -1].float().log_softmax(-1).cpu()
    rows = torch.arange(len(prompts))
    margin = logp[rows, torch.tensor(right)] - logp[rows, torch.tensor(wrong)]
    return float(margin.mean()), float((margin > 0).float().mean())
