"""Causal tracing (Meng et al. 2022): where does the model recall a fact about a subject?

Three runs of the same prompt: clean; corrupted (Gaussian noise on the subject tokens' embeddings);
corrupted with one clean state restored (a residual state, or the MLP / attention outputs over a window
of layers, at one token). The indirect effect of a state is how much restoring it brings back the
probability of the correct attribute: P(restored) - P(corrupted).

    >>> result = trace(model, "The Eiffel Tower is located in the city of", "Eiffel Tower")
    >>> result.peak("mlp")   # (layer, position) with the largest MLP indirect effect

Scores are layer-first ([n_layers, n_tokens]), like every uncover result. The restored runs are variants of
the corrupted run on ``uncover.core.variants`` (each forward starts at its first restored layer).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import torch

from uncover.core import interventions as iv
from uncover.core.names import Positions, check_layers
from uncover.core.results import Progress, Result, no_progress
from uncover.core.variants import base_run, run_variants
from uncover.errors import UncoverError

if TYPE_CHECKING:
    from uncover.core.model import Model
    from uncover.data.facts import Fact

KINDS = ("resid", "mlp", "attn")
_HOOK = {"resid": "hook_resid_post", "mlp": "hook_mlp_out", "attn": "hook_attn_out"}
CATEGORIES = (
    "tokens before subject",
    "first subject token",
    "middle subject tokens",
    "last subject token",
    "first subsequent token",
    "further tokens",
    "last token",
)


def subject_span(model: "Model", prompt: str, subject: str, last: bool = False) -> tuple[int, int]:
    """Token positions [start, end) of the subject's first (or last) occurrence in ``model.to_tokens(prompt)``."""
    at = prompt.rfind(subject) if last else prompt.find(subject)
    if not subject or at < 0:
        raise UncoverError(f"subject {subject!r} does not occur in prompt {prompt!r}; pass the exact text")
    enc = model.tokenizer(prompt, add_special_tokens=True, return_offsets_mapping=True)
    n = model.to_tokens(prompt).shape[1]
    offsets = enc["offset_mapping"]
    if len(offsets) != n:
        raise UncoverError(f"tokenizer offsets ({len(offsets)}) disagree with to_tokens ({n}) for {prompt!r}")
    inside = [i for i, (a, b) in enumerate(offsets) if b > a and a < at + len(subject) and b > at]
    return inside[0], inside[-1] + 1


def token_categories(n_tokens: int, span: tuple[int, int]) -> list[str]:
    """Meng et al.'s token category of each position (see ``CATEGORIES``)."""
    start, end = span
    out = []
    for p in range(n_tokens):
        if p == n_tokens - 1:
            out.append("last token")
        elif p < start:
            out.append("tokens before subject")
        elif p == end - 1:
            out.append("last subject token")
        elif p == start:
            out.append("first subject token")
        elif p < end:
            out.append("middle subject tokens")
        elif p == end:
            out.append("first subsequent token")
        else:
            out.append("further tokens")
    return out


@torch.no_grad()
def embedding_noise_std(model: "Model", prompts_and_subjects: Sequence[tuple[str, str]]) -> float:
    """Standard deviation of the subject tokens' embeddings (rows of ``model.W_E``, what hook_embed gives)."""
    ids = []
    for prompt, subject in prompts_and_subjects:
        start, end = subject_span(model, prompt, subject)
        ids += model.to_tokens(prompt)[0, start:end].tolist()
    return model.W_E[torch.tensor(ids, device=model.W_E.device)].float().std().item()


def default_noise_std(model: "Model", n_facts: int = 100) -> float:
    """Embedding std over the subjects of the first ``n_facts`` built-in facts (Meng et al.'s choice)."""
    from uncover.data.facts import FACTS

    step = max(1, len(FACTS) // n_facts)
    facts = FACTS[::step][:n_facts]
    return embedding_noise_std(model, [(f.prompt(), f.subject) for f in facts])


@dataclass
class TraceResult(Result):
    """Causal trace of one prompt.

    scores[kind]: P(target) with that state restored, [n_layers, n_tokens] (probabilities, mean over
    noise samples). Layer l of "mlp"/"attn" restores layers [l - window//2, l + window - window//2).
    """

    prompt: str
    subject: str
    target: str
    tokens: list[str]
    span: tuple[int, int]
    clean_prob: float
    corrupt_prob: float
    scores: dict[str, torch.Tensor]
    window: int
    noise_std: float
    n_samples: int

    def indirect_effect(self, kind: str) -> torch.Tensor:
        """[n_layers, n_tokens]: P(restored) - P(corrupted)."""
        return self.scores[_check_kind(kind)] - self.corrupt_prob

    def peak(self, kind: str = "mlp", position: int | None = None) -> tuple[int, int]:
        """(layer, position) of the largest indirect effect (at ``position`` if given)."""
        effect = self.indirect_effect(kind).nan_to_num(float("-inf"))
        if position is not None:
            return int(effect[:, position].argmax()), position
        flat = int(effect.argmax())
        return flat // effect.shape[1], flat % effect.shape[1]

    def categories(self) -> list[str]:
        return token_categories(len(self.tokens), self.span)


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise UncoverError(f"unknown trace kind {kind!r}; choose from {list(KINDS)}")
    return kind


def _window(layer: int, window: int, n_layers: int) -> range:
    return range(max(0, layer - window // 2), min(n_layers, layer + window - window // 2))


@torch.no_grad()
def trace(
    model: "Model",
    prompt: str,
    subject: str,
    target: str | None = None,
    kinds: Sequence[str] = KINDS,
    window: int = 10,
    n_samples: int = 10,
    noise: float = 3.0,
    noise_std: float | None = None,
    positions: "Positions | Sequence[int] | None" = None,
    layers: Sequence[int] | None = None,
    seed: int = 0,
    batch_size: int = 128,
    progress: Progress = no_progress,
    max_bytes: int | None = None,
) -> TraceResult:
    """Causal trace of ``prompt`` about ``subject``.

    target: the attribute whose probability is measured (default: the model's greedy next token;
    only its first token counts). Noise: ``noise`` x ``noise_std`` (default: the std of subject
    embeddings over built-in facts), ``n_samples`` samples, the same for every restoration.
    positions (ints, negatives from the end, or a ``Positions``), layers: restrict restorations to these
    token positions / layers (the rest stay NaN). Cost: len(layers) x len(positions) x n_samples sequences
    per kind, ``batch_size`` rows (and ``max_bytes``) per forward.
    """
    kinds = [_check_kind(k) for k in kinds]
    if window < 1 or n_samples < 1:
        raise UncoverError(f"window and n_samples must be >= 1 (got window={window}, n_samples={n_samples})")
    tokens = model.to_tokens(prompt)
    n_tokens, n_layers = tokens.shape[1], model.cfg.n_layers
    span = subject_span(model, prompt, subject)
    positions = Positions.coerce(positions).resolve(n_tokens)[0]
    layers = list(range(n_layers)) if layers is None else check_layers(layers, n_layers)

    names = [f"blocks.{l}.{_HOOK[k]}" for k in kinds for l in range(n_layers)]
    logits, cache = model.run_with_cache(tokens, names=names)
    clean_probs = logits[0, -1].float().softmax(-1)
    target_id = int(clean_probs.argmax()) if target is None else model.tokenizer.encode(
        target, add_special_tokens=False)[0]
    target = target if target is not None else model.tokenizer.decode([target_id])

    sigma = noise * (noise_std if noise_std is not None else default_noise_std(model))
    gen = torch.Generator().manual_seed(seed)
    d_model = model.cfg.d_model
    noise_samples = torch.randn(n_samples, span[1] - span[0], d_model, generator=gen) * sigma

    def corrupt(x: torch.Tensor, hook) -> torch.Tensor:  # sample i on rows i, i + n_samples, ...
        x = x.clone()
        x[:, span[0]:span[1]] += noise_samples.repeat(x.shape[0] // n_samples, 1, 1).to(x.device, x.dtype)
        return x

    def target_prob(out: torch.Tensor, _=None) -> torch.Tensor:
        return out[:, -1].float().softmax(-1)[:, target_id].mean().cpu()

    base = base_run(model, tokens.expand(n_samples, -1), hooks=[("hook_embed", corrupt)], logits_to_keep=1)
    corrupt_prob = target_prob(base.output).item()

    jobs = [(k, l, p) for k in kinds for l in layers for p in positions]
    variants = []
    for kind, layer, pos in jobs:
        restored = [layer] if kind == "resid" else _window(layer, window, n_layers)
        names = [f"blocks.{m}.{_HOOK[kind]}" for m in restored]
        variants.append([(name, iv.patch(cache[name].expand(n_samples, -1, -1), positions=[pos])) for name in names])
    probs = run_variants(model, base, variants, target_prob, logits_to_keep=1, batch_size=batch_size,
                         max_bytes=max_bytes, progress=progress, description="causal tracing")
    scores = {k: torch.full((n_layers, n_tokens), float("nan")) for k in kinds}
    for (kind, layer, pos), value in zip(jobs, probs):
        scores[kind][layer, pos] = value
    return TraceResult(
        prompt=prompt, subject=subject, target=target, tokens=model.to_str_tokens(tokens[0]), span=span,
        clean_prob=clean_probs[target_id].item(), corrupt_prob=corrupt_prob, scores=scores,
        window=window, noise_std=sigma, n_samples=n_samples,
    )


@dataclass
class AverageTrace(Result):
    """Indirect effects averaged over facts by token category: effects[kind] [n_layers, n_categories].

    A category's row averages the facts that have such a token (mean over its tokens within a fact);
    layers or categories that were not traced are NaN.
    """

    effects: dict[str, torch.Tensor]
    categories: list[str]
    n_facts: int
    mean_clean_prob: float
    mean_corrupt_prob: float
    window: int
    traces: list[TraceResult] = field(default_factory=list, repr=False)

    def peak(self, kind: str = "mlp", category: str | None = "last subject token") -> tuple[int, str]:
        """(layer, category) of the largest averaged indirect effect (within ``category`` if given)."""
        effect = self.effects[_check_kind(kind)]
        if category is not None:
            column = self.categories.index(category)
            return int(effect[:, column].nan_to_num(float("-inf")).argmax()), category
        flat = int(effect.nan_to_num(float("-inf")).argmax())
        return flat // effect.shape[1], self.categories[flat % effect.shape[1]]


def average_traces(traces: Sequence[TraceResult]) -> AverageTrace:
    """Average the indirect effects of several traces by Meng et al.'s token categories."""
    if not traces:
        raise UncoverError("no traces to average; pass at least one TraceResult")
    kinds = list(traces[0].scores)
    n_layers = traces[0].scores[kinds[0]].shape[0]
    effects = {}
    for kind in kinds:
        total = torch.zeros(n_layers, len(CATEGORIES))
        count = torch.zeros(1, len(CATEGORIES))
        for t in traces:
            effect, cats = t.indirect_effect(kind), t.categories()
            for c, name in enumerate(CATEGORIES):
                cols = [p for p, cat in enumerate(cats) if cat == name and not effect[:, p].isnan().all()]
                if cols:
                    total[:, c] += effect[:, cols].nanmean(1)
                    count[0, c] += 1
        effects[kind] = total / count.clamp(min=1)
        effects[kind][:, count[0] == 0] = float("nan")
    return AverageTrace(
        effects=effects, categories=list(CATEGORIES), n_facts=len(traces),
        mean_clean_prob=sum(t.clean_prob for t in traces) / len(traces),
        mean_corrupt_prob=sum(t.corrupt_prob for t in traces) / len(traces),
        window=traces[0].window, traces=list(traces),
    )


def trace_facts(model: "Model", facts: Sequence["Fact"], progress: Progress = no_progress,
                **trace_kwargs) -> AverageTrace:
    """Trace each fact's canonical prompt (target = its attribute) and average by token category."""
    if "noise_std" not in trace_kwargs:
        trace_kwargs["noise_std"] = default_noise_std(model)
    traces = [trace(model, f.prompt(), f.subject, f.attribute, **trace_kwargs)
              for f in progress(list(facts), "causal tracing")]
    return average_traces(traces)
