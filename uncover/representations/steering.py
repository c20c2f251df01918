"""Steering: add a concept direction to the residual stream during forward passes and generation.

* CAA (Rimsky 2024): the mean difference of many contrast pairs at one layer, added at every position.
* RepE control (Zou 2023): the PCA reading vector added at several layers at once.
* ActAdd (Turner 2023): the activation difference of a single prompt pair, position by position,
  added to the first positions of the prompt.

All of them are the core's ``add_vector`` hooks on ``blocks.{l}.hook_resid_post``. ``measure_steering``
reports, for each coefficient, the shift of the concept's next-word log-odds on neutral prompts (the
behaviour) and the perplexity on neutral corpus text (the cost).

    >>> d = caa_direction(model, "sentiment", layer=12)
    >>> result = measure_steering(model, lambda c: steering_hooks(d, c), concept("sentiment"), [-4, 0, 4])
    >>> model.generate("I think that", fwd_hooks=steering_hooks(d, 4.0))
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import torch

from uncover.core.hooks import Fn, HookPoint
from uncover.core.interventions import add_vector
from uncover.core.results import Progress, no_progress
from uncover.core.results import Result
from uncover.data.contrast import NEUTRAL_PROMPTS, Concept, concept, contrast_pairs
from uncover.data.corpus import corpus_tokens
from uncover.errors import UncoverError
from uncover.representations.directions import Direction, concept_direction

if TYPE_CHECKING:
    from uncover.core.model import Model

Hooks = list[tuple[str, Fn]]


def steering_hooks(direction: Direction, coeff: float, layers: Sequence[int] | None = None,
                   positions: Sequence[int] | None = None) -> Hooks:
    """Hooks adding ``coeff * direction.at(l)`` to ``blocks.{l}.hook_resid_post`` for each layer
    (default: all of the direction's layers), at every position or the given ones."""
    layers = direction.layers if layers is None else list(layers)
    return [(f"blocks.{l}.hook_resid_post", add_vector(direction.at(l), coeff, positions)) for l in layers]


def caa_direction(model: "Model", concept_name: str = "sentiment", layer: int | None = None,
                  n_pairs: int | None = 64, seed: int = 0) -> Direction:
    """CAA: mean difference of ``n_pairs`` contrast pairs at the last token of ``layer``
    (default: the middle layer)."""
    layer = model.cfg.n_layers // 2 if layer is None else layer
    return concept_direction(model, contrast_pairs(concept_name, n_pairs, seed), [layer], "mean_diff",
                             concept=concept_name)


def repe_direction(model: "Model", concept_name: str = "sentiment", layers: Sequence[int] | None = None,
                   n_pairs: int | None = 64, seed: int = 0) -> Direction:
    """RepE: PCA reading vectors of ``n_pairs`` contrast pairs at several layers (default: the middle
    third of the network); steer with all of them at once."""
    n = model.cfg.n_layers
    layers = list(range(n // 3, 2 * n // 3, 2)) if layers is None else list(layers)
    return concept_direction(model, contrast_pairs(concept_name, n_pairs, seed), layers, "pca",
                             concept=concept_name, seed=seed)


@dataclass
class ActAddVector(Result):
    """ActAdd's steering vector: per-position differences [n_pos, d_model] at one layer."""

    delta: torch.Tensor
    layer: int
    positive: str
    negative: str


@torch.no_grad()
def actadd_vector(model: "Model", positive: str, negative: str, layer: int) -> ActAddVector:
    """resid_post(positive) - resid_post(negative) at ``layer``, position by position; the shorter
    prompt is padded on the right with its own end-of-text padding token."""
    name = f"blocks.{layer}.hook_resid_post"
    tokens, mask = model.to_tokens([positive, negative], return_mask=True, padding_side="right")
    _, cache = model.run_with_cache(tokens, names=[name], attention_mask=mask)
    acts = cache[name].float().cpu()
    return ActAddVector(acts[0] - acts[1], layer, positive, negative)


def actadd_hooks(vector: ActAddVector, coeff: float) -> Hooks:
    """Add ``coeff * delta`` to the first ``n_pos`` positions of the prompt (as many as it has).
    In generation with the KV cache only the prompt pass is changed; prompts must not be
    left-padded (``measure_steering`` pads on the right)."""
    k = vector.delta.shape[0]

    def fn(t: torch.Tensor, hook: HookPoint) -> torch.Tensor | None:
        if hook.ctx.get("prompt_done") and t.shape[1] == 1:
            return None  # a generated token
        hook.ctx["prompt_done"] = True
        n = min(k, t.shape[1])
        padded = torch.zeros(t.shape[1], t.shape[-1])
        padded[:n] = vector.delta[:n]
        return add_vector(padded, coeff)(t, hook)

    return [(f"blocks.{vector.layer}.hook_resid_post", fn)]


# ---- measuring ------------------------------------------------------------------------------------------
def word_ids(model: "Model", words: Iterable[str]) -> list[int]:
    """Token ids of the words that are a single token for this model (others are skipped)."""
    ids = [model.tokenizer.encode(w, add_special_tokens=False) for w in words]
    return [i[0] for i in ids if len(i) == 1]


@torch.no_grad()
def concept_log_odds(model: "Model", prompts: Sequence[str], c: Concept, hooks: Hooks = ()) -> torch.Tensor:
    """Per prompt, log P(any positive word) - log P(any negative word) for the next token [n] (nats)."""
    pos, neg = word_ids(model, c.positive_words), word_ids(model, c.negative_words)
    if not pos or not neg:
        raise UncoverError(f"concept {c.name!r} has no single-token words for {model.name}")
    tokens, mask = model.to_tokens(list(prompts), return_mask=True, padding_side="right")
    logits = model.run_with_hooks(tokens, list(hooks), attention_mask=mask)
    last = logits[torch.arange(len(tokens)), mask.sum(1) - 1].float().log_softmax(-1)
    return (last[:, pos].logsumexp(-1) - last[:, neg].logsumexp(-1)).cpu()


@torch.no_grad()
def perplexity(model: "Model", tokens: torch.Tensor, hooks: Hooks = ()) -> float:
    """exp(mean next-token cross-entropy) on ``tokens [batch, pos]`` with ``hooks`` active."""
    logits = model.run_with_hooks(tokens.to(model.device), list(hooks)).float()
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten().to(logits.device))
    return float(loss.exp())


@dataclass
class SteeringResult(Result):
    """Behaviour and cost per coefficient.

    behaviour [k]: mean concept log-odds (nats) on neutral prompts; perplexity [k]: on neutral text;
    samples: a short greedy continuation per coefficient.
    """

    method: str
    concept: str
    coefficients: torch.Tensor
    behaviour: torch.Tensor
    perplexity: torch.Tensor
    samples: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def baseline(self) -> tuple[float, float]:
        """(behaviour, perplexity) at coefficient 0 (the nearest coefficient to 0)."""
        i = int(self.coefficients.abs().argmin())
        return float(self.behaviour[i]), float(self.perplexity[i])

    def is_monotone(self) -> bool:
        """True when behaviour never decreases as the coefficient grows."""
        b = self.behaviour[self.coefficients.argsort()]
        return bool((b[1:] >= b[:-1]).all())



def measure_steering(model: "Model", hooks_for: Callable[[float], Hooks], c: Concept,
                     coefficients: Sequence[float], method: str = "", prompts: Sequence[str] = NEUTRAL_PROMPTS,
                     n_text: int = 8, text_len: int = 64, sample_prompt: str | None = "I think that",
                     sample_tokens: int = 12, progress: Progress = no_progress) -> SteeringResult:
    """Behaviour (concept log-odds on ``prompts``) and cost (perplexity on ``n_text`` corpus windows of
    ``text_len`` tokens) for each coefficient; ``hooks_for(coeff)`` builds the steering hooks."""
    if not coefficients:
        raise UncoverError("pass at least one steering coefficient")
    text = corpus_tokens(model, n_text, text_len)
    behaviour, ppl, samples = [], [], []
    coeffs = progress(list(coefficients), f"steering ({method})")
    for coeff in coeffs:
        hooks = hooks_for(float(coeff))
        behaviour.append(float(concept_log_odds(model, prompts, c, hooks).mean()))
        ppl.append(perplexity(model, text, hooks))
        if sample_prompt is not None:
            samples.append(model.generate(sample_prompt, max_new_tokens=sample_tokens, fwd_hooks=hooks))
    return SteeringResult(method, c.name, torch.tensor([float(x) for x in coefficients]), torch.tensor(behaviour),
                          torch.tensor(ppl), samples)


def steer(model: "Model", method: str = "caa", concept_name: str = "sentiment", layer: int | None = None,
          coefficients: Sequence[float] = (-8, -4, -2, 0, 2, 4, 8), n_pairs: int = 64,
          progress: Progress = no_progress, **measure: Any) -> SteeringResult:
    """Build a ``method`` ("caa", "repe" or "actadd") steering vector for a concept and measure it.

    layer: the steering layer (CAA, ActAdd; default the middle layer); RepE uses the middle third.
    ActAdd uses the concept's first contrast pair only.
    """
    c = concept(concept_name)
    layer = model.cfg.n_layers // 2 if layer is None else layer
    if method == "caa":
        d = caa_direction(model, concept_name, layer, n_pairs)
        hooks_for = lambda coeff: steering_hooks(d, coeff)
    elif method == "repe":
        d = repe_direction(model, concept_name, None, n_pairs)
        hooks_for = lambda coeff: steering_hooks(d, coeff / len(d.layers))
    elif method == "actadd":
        pair = c.pairs[0]
        v = actadd_vector(model, pair.positive, pair.negative, layer)
        hooks_for = lambda coeff: actadd_hooks(v, coeff)
    else:
        raise UncoverError(f"unknown steering method {method!r}; choose 'caa', 'repe' or 'actadd'")
    result = measure_steering(model, hooks_for, c, coefficients, method, progress=progress, **measure)
    result.meta["layer"] = layer
    return result
