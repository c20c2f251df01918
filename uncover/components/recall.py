"""Factual recall mechanics (Geva 2023): attention knockout and subject enrichment.

Attention knockout blocks attention from the last position to a set of tokens (the subject, the relation
words, or the last token itself) in a window of layers around each layer, and measures the relative change
of the attribute's probability. Geva et al. set the blocked attention logits to -inf; here a hook on the
attention pattern zeroes the blocked entries and renormalises the row, which is the same thing (softmax
over the remaining keys). Subject enrichment reads the last subject token with the logit lens: how likely
and how highly ranked the attribute already is there, layer by layer, against the last position.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import torch
from torch import Tensor

from uncover.core.interventions import block_attention
from uncover.core.names import act_name, check_layers
from uncover.core.results import Progress, Result, no_progress
from uncover.core.variants import base_run, run_variants
from uncover.errors import UncoverError

if TYPE_CHECKING:
    from uncover.core.model import Model
    from uncover.data.facts import Fact

TARGETS = ("subject", "relation", "last")


def subject_positions(model: "Model", fact: "Fact", template: int = 0) -> list[int]:
    """Token positions of the subject in ``fact.prompt(template)`` (unpadded, BOS counted)."""
    from uncover.data.facts import RELATIONS

    tmpl = RELATIONS[fact.relation].templates[template]
    before = tmpl.split("{}")[0].rstrip()
    prompt = model.to_tokens(fact.prompt(template))[0].tolist()
    start = len(model.to_tokens(before)[0]) if before else len(model.to_tokens("x")[0]) - 1
    upto = model.to_tokens(tmpl[: tmpl.index("{}")] + fact.subject)[0].tolist()
    if prompt[: len(upto)] != upto or len(upto) <= start:
        raise UncoverError(f"could not locate the subject {fact.subject!r} in the tokens of {fact.prompt(template)!r}.")
    return list(range(start, len(upto)))


def _facts(model: "Model", facts, n: int) -> list:
    from uncover.data.facts import known_facts

    facts = known_facts(model) if facts is None else list(facts)
    if not facts:
        raise UncoverError(f"no facts to study: {model.name} gets none of the given facts right (see known_facts).")
    return facts[:n]


def _block_masks(model: "Model", facts: Sequence["Fact"], tokens: Tensor, mask: Tensor | None) -> dict[str, Tensor]:
    """Per target, a bool [n, pos] of the keys the last position may not attend to (padded positions)."""
    n, pos = tokens.shape
    real = torch.ones(n, pos, dtype=torch.long) if mask is None else mask.cpu()
    n_bos = len(model.to_tokens("x")[0]) - len(model.tokenizer("x", add_special_tokens=False)["input_ids"])
    out = {t: torch.zeros(n, pos, dtype=torch.bool) for t in TARGETS}
    for i, fact in enumerate(facts):
        pad = int(pos - real[i].sum())
        subj = [pad + p for p in subject_positions(model, fact)]
        out["subject"][i, subj] = True
        out["last"][i, pos - 1] = True
        rel = [p for p in range(pad + n_bos, pos - 1) if p not in subj]
        out["relation"][i, rel] = True
    return out


@dataclass
class KnockoutResult(Result):
    """values: [n_targets, n_layers] mean relative change (%) of the attribute's probability when the last
    position cannot attend to ``targets[i]`` in layers ``windows[l]``; per_fact: [n_targets, n_layers, n]."""

    values: Tensor
    per_fact: Tensor
    targets: list[str]
    windows: list[tuple[int, int]]
    base_prob: Tensor
    subjects: list[str] = field(default_factory=list)


@torch.no_grad()
def attention_knockout(model: "Model", facts: Sequence["Fact"] | None = None, n: int = 8, window: int | None = None,
                       targets: Sequence[str] = TARGETS, layers: Sequence[int] | None = None, batch_size: int = 64,
                       progress: Progress = no_progress, max_bytes: int | None = None) -> KnockoutResult:
    """Geva 2023's attention knockout on ``n`` facts the model knows (default: ``known_facts``).

    window: layers blocked around each layer l, [l - window//2, l + window//2] clipped (default about a
    fifth of the depth). layers: the window centres (default: every layer). Runs on
    ``uncover.core.variants`` (``batch_size`` rows / ``max_bytes`` per forward, last-position logits only).
    """
    bad = [t for t in targets if t not in TARGETS]
    if bad:
        raise UncoverError(f"unknown knockout targets {bad}; choose from {', '.join(TARGETS)}.")
    facts = _facts(model, facts, n)
    L = model.cfg.n_layers
    window = window or max(1, round(L / 5))
    centres = list(range(L)) if layers is None else check_layers(layers, L, "knockout layers")
    windows = [(max(0, c - window // 2), min(L, c + window // 2 + 1)) for c in centres]
    tokens, mask = model.to_tokens([f.prompt() for f in facts], return_mask=True)
    mask = None if bool(mask.all()) else mask
    answers = torch.tensor([model.to_single_token(f.attribute) for f in facts], device=tokens.device)
    blocks = _block_masks(model, facts, tokens, mask)
    k = len(facts)

    def answer_prob(logits: Tensor, _=None) -> Tensor:
        return logits[:, -1].float().softmax(-1)[torch.arange(k), answers].cpu()

    base = base_run(model, tokens, mask, logits_to_keep=1)
    base_prob = answer_prob(base.output)
    variants = [[(act_name("pattern", l), block_attention(blocks[t])) for l in range(lo, hi)]
                for t in targets for lo, hi in windows]
    probs = run_variants(model, base, variants, answer_prob, logits_to_keep=1, batch_size=batch_size,
                         max_bytes=max_bytes, progress=progress, description="attention knockout")
    per_fact = torch.stack(probs).reshape(len(targets), len(windows), k)
    change = (per_fact - base_prob) / base_prob * 100
    return KnockoutResult(change.mean(-1), change, list(targets), windows, base_prob, [f.subject for f in facts])


@dataclass
class EnrichmentResult(Result):
    """The attribute read with the logit lens at the last subject token and at the last position.

    labels: the lens's layer labels; *_prob: mean probability [n_layers + 1]; *_rank: median rank
    [n_layers + 1] (0 = the top token).
    """

    labels: list[str]
    subject_prob: Tensor
    subject_rank: Tensor
    last_prob: Tensor
    last_rank: Tensor
    subjects: list[str] = field(default_factory=list)


@torch.no_grad()
def subject_enrichment(model: "Model", facts: Sequence["Fact"] | None = None, n: int = 8) -> EnrichmentResult:
    """Logit-lens probability and rank of the attribute at the last subject token vs the last position."""
    from uncover.components.lens import logit_lens

    facts = _facts(model, facts, n)
    tokens, mask = model.to_tokens([f.prompt() for f in facts], return_mask=True)
    mask = None if bool(mask.all()) else mask
    answers = torch.tensor([model.to_single_token(f.attribute) for f in facts])
    lens = logit_lens(model, tokens, target=answers, k=1, attention_mask=mask, keep_log_probs=False)
    pos = tokens.shape[1]
    pads = [0] * len(facts) if mask is None else (pos - mask.sum(-1)).tolist()
    subj_last = torch.tensor([int(p) + subject_positions(model, f)[-1] for p, f in zip(pads, facts)])
    rows = torch.arange(len(facts))
    sp = lens.target_prob[:, rows, subj_last]
    sr = lens.target_rank[:, rows, subj_last].float()
    lp, lr = lens.target_prob[:, :, -1], lens.target_rank[:, :, -1].float()
    return EnrichmentResult(lens.labels, sp.mean(-1).cpu(), sr.median(-1).values.cpu(), lp.mean(-1).cpu(),
                            lr.median(-1).values.cpu(), [f.subject for f in facts])
