"""Unwanted directions (Geva et al. 2022; Lee et al. 2024): value vectors that promote a word list.

- ``value_scores``: every MLP value vector ``W_out[l][i]`` through the unembedding, scored by how far the
  listed words' logits sit above the vocabulary's mean, in vocabulary standard deviations:
  z = w . (mean_list u - mean_vocab u) / sqrt(w^T C w), C the covariance of the unembedding columns
  (exactly the z-score of the listed words' mean logit in ``w @ W_U``, without building [d_mlp, d_vocab]).
- ``probe_direction``: a logistic probe on the mean final residual (``blocks.{L-1}.hook_resid_post``) of
  contrast sentences with and without the listed words; its unit weight is the direction.
- ``aligned_vectors``: value vectors by cosine with the probe direction, and the SVD of the top ones.
- Interventions (hooks): ``scale_vectors`` multiplies chosen neurons' activations by ``factor`` (0 removes
  them); ``subtract_direction`` subtracts ``alpha * mean_norm * direction`` from a layer's residual output.
- ``listed_prob``: the total next-token probability of the listed words after each prompt.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from uncover.core.results import Result
from uncover.core.vocab import vocab_slices
from uncover.errors import UncoverError

if TYPE_CHECKING:
    from uncover.core.model import Model

Hook = tuple[str, Callable]


@torch.no_grad()
def value_scores(model: "Model", word_ids: Sequence[int]) -> torch.Tensor:
    """z-score of the listed words' mean logit in each value vector's vocabulary projection: [n_layers, d_mlp]."""
    if not len(word_ids):
        raise UncoverError("value_scores needs at least one word id")
    U = model.W_U.detach().float()  # [d_model, d_vocab]
    mean_all = U.mean(1)
    target = U[:, torch.as_tensor(list(word_ids))].mean(1) - mean_all
    C = torch.zeros(U.shape[0], U.shape[0], device=U.device)  # [d_model, d_model], a vocabulary slice at a time
    for cols in vocab_slices(model, U.shape[0]):
        centred = U[:, cols] - mean_all[:, None]
        C += centred @ centred.T
    C /= U.shape[1]
    rows = []
    for l in range(model.cfg.n_layers):
        W = model.W_out(l).detach().float()  # [d_mlp, d_model]
        rows.append((W @ target) / ((W @ C) * W).sum(1).clamp(min=1e-12).sqrt())
    return torch.stack(rows).cpu()


@torch.no_grad()
def mean_residual(model: "Model", texts: Sequence[str], layer: int | None = None) -> torch.Tensor:
    """Mean over each text's real tokens of ``blocks.{layer}.hook_resid_post`` (default: last layer): [n, d]."""
    layer = model.cfg.n_layers - 1 if layer is None else layer
    name = f"blocks.{layer}.hook_resid_post"
    tokens, mask = model.to_tokens(list(texts), return_mask=True)
    _, cache = model.run_with_cache(tokens, names=[name], attention_mask=mask)
    m = mask.to(cache[name].dtype)[..., None]
    return ((cache[name] * m).sum(1) / m.sum(1)).float().cpu()


@dataclass
class ProbeDirection(Result):
    """direction [d_model] (unit); train/test accuracy of the probe; mean residual norm at ``layer``."""

    direction: torch.Tensor
    layer: int
    train_accuracy: float
    test_accuracy: float
    mean_norm: float


def probe_direction(model: "Model", pairs: Sequence[tuple[str, str]], layer: int | None = None,
                    test_share: float = 0.25, seed: int = 0) -> ProbeDirection:
    """A logistic probe separating (listed-word sentence, matched sentence) pairs; pairs split train/test."""
    from uncover.representations.probes import LogisticProbe

    if len(pairs) < 4:
        raise UncoverError(f"probe_direction needs at least 4 contrast pairs, got {len(pairs)}")
    layer = model.cfg.n_layers - 1 if layer is None else layer
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed)).tolist()
    n_test = max(1, int(len(pairs) * test_share))
    split = {"test": [pairs[i] for i in order[:n_test]], "train": [pairs[i] for i in order[n_test:]]}
    data = {}
    for part, ps in split.items():
        X = mean_residual(model, [a for a, _ in ps] + [b for _, b in ps], layer)
        y = torch.tensor([1] * len(ps) + [0] * len(ps))
        data[part] = (X, y)
    probe = LogisticProbe(C=0.1).fit(*data["train"])
    norm = float(data["train"][0].norm(dim=1).mean())
    return ProbeDirection(probe.direction, layer, probe.score(*data["train"]), probe.score(*data["test"]), norm)


@torch.no_grad()
def aligned_vectors(model: "Model", direction: torch.Tensor, k: int = 32) -> dict:
    """The ``k`` value vectors with the highest cosine to ``direction``, and the SVD of their unit vectors.

    Returns {"neurons": [(layer, index)], "cosines": [k], "singular_values": [min(k, d)],
    "svd_cosines": cosine of each right singular vector (sign-aligned) with ``direction``,
    "components": [3, d_model] the first right singular vectors}.
    """
    d = direction.float() / direction.float().norm()
    cos = torch.stack([torch.nn.functional.cosine_similarity(model.W_out(l).detach().float(), d[None], dim=1)
                       for l in range(model.cfg.n_layers)])
    top = cos.flatten().topk(k)
    neurons = [divmod(int(i), model.cfg.d_mlp) for i in top.indices]
    V = torch.stack([model.W_out(l)[i].detach().float() for l, i in neurons])
    V = V / V.norm(dim=1, keepdim=True)
    _, S, Vh = torch.linalg.svd(V, full_matrices=False)
    signs = torch.sign(Vh @ d)
    comps = Vh * signs[:, None]
    return {"neurons": neurons, "cosines": top.values.tolist(), "singular_values": S.tolist(),
            "svd_cosines": (comps @ d).tolist(), "components": comps[:3]}


def scale_vectors(neurons: Sequence[tuple[int, int]], factor: float = 0.0) -> list[Hook]:
    """Hooks multiplying the activations of (layer, neuron) pairs by ``factor`` (their value vectors' output)."""
    by_layer: dict[int, list[int]] = {}
    for l, i in neurons:
        by_layer.setdefault(int(l), []).append(int(i))
    hooks = []
    for l, ids in sorted(by_layer.items()):
        idx = torch.tensor(ids)

        def fn(t: torch.Tensor, hook, idx=idx) -> torch.Tensor:
            out = t.clone()
            out[..., idx.to(t.device)] *= factor
            return out

        hooks.append((f"blocks.{l}.mlp.hook_post", fn))
    return hooks


def subtract_direction(direction: torch.Tensor, layer: int, alpha: float, mean_norm: float) -> list[Hook]:
    """A hook subtracting ``alpha * mean_norm * direction`` (unit) from ``blocks.{layer}.hook_resid_post``."""
    d = direction.float() / direction.float().norm()
    return [(f"blocks.{layer}.hook_resid_post",
             lambda t, hook: t - (alpha * mean_norm) * d.to(t.device, t.dtype))]


@torch.no_grad()
def listed_prob(model: "Model", prompts: Sequence[str], word_ids: Sequence[int], hooks: Sequence[Hook] = ()
                ) -> torch.Tensor:
    """Total next-token probability of ``word_ids`` after each prompt: [len(prompts)]."""
    tokens, mask = model.to_tokens(list(prompts), return_mask=True)
    with model.hooks(list(hooks)):
        probs = model(tokens, attention_mask=mask, logits_to_keep=1)[:, -1].float().softmax(-1)
    return probs[:, torch.as_tensor(list(word_ids), device=probs.device)].sum(-1).cpu()


@dataclass
class DirectionEffects(Result):
    """Interventions against a word list: each row of ``rows`` is one intervention at one strength.

    rows: {"kind": "none" | "scale" | "subtract", "strength": factor or alpha, "neutral": mean listed-word
    probability on neutral prompts, "provoking": the same on provoking prompts, "perplexity": held-out}.
    """

    list_name: str
    words: list[str]
    skipped: list[str]
    top_vectors: list[dict]
    probe: ProbeDirection
    aligned: dict
    rows: list[dict] = field(default_factory=list)

    def baseline(self) -> dict:
        return next(r for r in self.rows if r["kind"] == "none")

    def best(self, max_ppl_rise: float = 0.10, on: str = "provoking") -> dict | None:
        """The intervention with the lowest listed-word probability on ``on`` prompts whose perplexity
        rises by less than ``max_ppl_rise`` (and that lowers it at all), or None."""
        base = self.baseline()
        ok = [r for r in self.rows if r["kind"] != "none" and r["perplexity"] < (1 + max_ppl_rise) * base["perplexity"]
              and r[on] < base[on]]
        return min(ok, key=lambda r: r[on]) if ok else None


def unwanted_directions(model: "Model", list_name: str, heldout: torch.Tensor, n_vectors: Sequence[int] = (16, 64),
                        n_aligned: Sequence[int] = (16, 64), alphas: Sequence[float] = (0.05, 0.1, 0.2),
                        progress=None) -> DirectionEffects:
    """The whole experiment for one built-in word list (``uncover.data.wordlists``): find the value vectors
    and the probe direction, then measure each intervention on held-out neutral and provoking prompts and
    on held-out corpus windows ``heldout`` [n, pos] (perplexity)."""
    import logging

    from uncover.applications.pruning.curves import perplexity
    from uncover.data.wordlists import CONTRAST, NEUTRAL_PROMPTS, PROVOKING_PROMPTS, single_token_words, word_list
    from uncover.features.analysis import logit_effects

    words, ids, skipped = single_token_words(model, word_list(list_name))
    if skipped:
        logging.getLogger("uncover").warning("uncover: %d words of %r are not single tokens and are skipped: %s",
                                             len(skipped), list_name, ", ".join(repr(w) for w in skipped))
    scores = value_scores(model, ids)
    top = scores.flatten().topk(max(n_vectors))
    ranked = [divmod(int(i), model.cfg.d_mlp) for i in top.indices]
    shown = logit_effects(model, torch.stack([model.W_out(l)[i].detach() for l, i in ranked[:8]]), 8)
    top_vectors = [{"layer": l, "neuron": i, "score": float(s), "tokens": toks}
                   for (l, i), s, toks in zip(ranked[:8], top.values, shown["top_tokens"])]
    probe = probe_direction(model, CONTRAST[list_name])
    aligned = aligned_vectors(model, probe.direction, max(n_aligned))
    result = DirectionEffects(list_name, words, skipped, top_vectors, probe, aligned)
    settings = [("none", 0, [])]
    settings += [("scale", n, scale_vectors(ranked[:n], 0.0)) for n in n_vectors]
    settings += [("scale_aligned", n, scale_vectors(aligned["neurons"][:n], 0.0)) for n in n_aligned]
    settings += [("subtract", a, subtract_direction(probe.direction, probe.layer, a, probe.mean_norm)) for a in alphas]
    for kind, strength, hooks in (progress or (lambda x, d="": x))(settings, f"{list_name} interventions"):
        result.rows.append({
            "kind": kind, "strength": strength,
            "neutral": float(listed_prob(model, NEUTRAL_PROMPTS, ids, hooks).mean()),
            "provoking": float(listed_prob(model, PROVOKING_PROMPTS, ids, hooks).mean()),
            "perplexity": perplexity(model, heldout, hooks),
        })
    return result
