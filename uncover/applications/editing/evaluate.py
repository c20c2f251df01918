"""CounterFact-style evaluation of fact edits, built from the built-in fact table.

A record rewrites a fact the unedited model gets right ("The Eiffel Tower is located in the city of"
Paris -> Rome) and carries paraphrase prompts (the relation's other templates), neighbourhood prompts
(other subjects of the relation the model knows, with their own true attribute, preferring those that
share the old attribute) and generation prompts.

Scores (fractions, Meng et al. 2022): efficacy P(new) > P(old) on the rewrite prompt; paraphrase the
same on paraphrases; neighbourhood P(true) > P(new) on neighbour prompts; their harmonic mean; fluency
= n-gram entropy of sampled generations (bits). Token-level accuracies (the greedy next token is the
expected one) are reported too, labelled as such, since tools disagree on which to use.
"""
from __future__ import annotations

import math
import random
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Sequence

import torch

from uncover.applications.editing.rome import EditRequest, WeightEdit
from uncover.core.results import Progress, Result, no_progress
from uncover.data.facts import Fact, known_facts, predict_next
from uncover.errors import UncoverError

if TYPE_CHECKING:
    from uncover.core.model import Model


@dataclass
class EditRecord(Result):
    """One counterfactual: request (canonical prompt -> new target), the old attribute, and probes."""

    request: EditRequest
    old: str
    paraphrases: list[str]
    neighbours: list[tuple[str, str]]  # (prompt, that subject's true attribute)
    generation_prompts: list[str]


def build_records(model: "Model", facts: Sequence[Fact] | None = None, n: int | None = None, seed: int = 0,
                  n_neighbours: int = 5, known: Sequence[Fact] | None = None) -> list[EditRecord]:
    """Records for up to ``n`` facts the model knows (``known``: precomputed ``known_facts``).

    facts: the facts to rewrite (default: all known facts, shuffled with ``seed``). The new target is
    another known attribute of the same relation; neighbours are known facts of the relation whose
    attribute is not the new target. Each subject is rewritten once (so records can be edited together).
    """
    known = list(known_facts(model) if known is None else known)
    rng = random.Random(seed)
    pool = list(known) if facts is None else [f for f in facts if f in set(known)]
    if facts is None:
        rng.shuffle(pool)
    records, used = [], set()
    for fact in pool:
        if fact.subject in used:
            continue
        same_relation = [f for f in known if f.relation == fact.relation and f.subject != fact.subject]
        targets = sorted({f.attribute for f in same_relation if f.attribute != fact.attribute})
        if not targets:
            continue
        new = rng.choice(targets)
        candidates = [f for f in same_relation if f.attribute != new]
        rng.shuffle(candidates)
        candidates.sort(key=lambda f: f.attribute != fact.attribute)  # same old attribute first
        neighbours = [(f.prompt(), f.attribute) for f in candidates[:n_neighbours]]
        if not neighbours:
            continue
        prompts = fact.prompts()
        used.add(fact.subject)
        records.append(EditRecord(
            request=EditRequest.from_fact(fact, new), old=fact.attribute, paraphrases=prompts[1:],
            neighbours=neighbours, generation_prompts=prompts[:2],
        ))
        if n is not None and len(records) >= n:
            break
    return records


def n_gram_entropy(text: str, ns: Sequence[int] = (2, 3), weights: Sequence[float] = (2 / 3, 4 / 3)) -> float:
    """Weighted mean of the n-gram entropies (bits) of a text's words (Meng et al.'s fluency)."""
    words = re.findall(r"\w+|[^\w\s]", text.lower())
    total = 0.0
    for n, w in zip(ns, weights):
        counts = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
        size = sum(counts.values())
        total += w * (-sum(c / size * math.log2(c / size) for c in counts.values()) if size else 0.0)
    return total / len(ns)


@torch.no_grad()
def pair_logprobs(model: "Model", prompts: Sequence[str], continuations: Sequence[str]) -> torch.Tensor:
    """log P(continuation | prompt) for each pair [n] (sum over the continuation's tokens)."""
    out = torch.empty(len(prompts), dtype=torch.float64)
    ids = [model.tokenizer.encode(c, add_special_tokens=False) for c in continuations]
    single = [i for i, t in enumerate(ids) if len(t) == 1]
    if single:
        unique = sorted({prompts[i] for i in single})
        probs = predict_next(model, unique)
        row = {p: r for r, p in enumerate(unique)}
        for i in single:
            out[i] = probs[row[prompts[i]], ids[i][0]].clamp(min=1e-30).log().item()
    for i in (i for i, t in enumerate(ids) if len(t) != 1):
        if not ids[i]:
            raise UncoverError(f"continuation {continuations[i]!r} has no tokens")
        tokens = torch.cat([model.to_tokens(prompts[i]), torch.tensor([ids[i]], device=model.device)], 1)
        logp = model(tokens)[0].float().log_softmax(-1)
        n = len(ids[i])
        positions = torch.arange(tokens.shape[1] - n - 1, tokens.shape[1] - 1)
        out[i] = logp[positions, torch.tensor(ids[i])].sum().item()
    return out


def _first_token(model: "Model", text: str) -> int:
    return model.tokenizer.encode(text, add_special_tokens=False)[0]


@torch.no_grad()
def score_records(model: "Model", records: Sequence[EditRecord], generate: bool = True,
                  max_new_tokens: int = 30, seed: int = 0) -> list[dict]:
    """Per-record scores of the model as it is now (edited or not), see the module docstring."""
    prompts, conts, slots = [], [], []
    for r, rec in enumerate(records):
        for kind, ps in (("rewrite", [rec.request.text]), ("paraphrase", rec.paraphrases)):
            for p in ps:
                prompts += [p, p]
                conts += [rec.request.target, rec.old]
                slots.append((r, kind, p, rec.request.target))
        for p, true in rec.neighbours:
            prompts += [p, p]
            conts += [true, rec.request.target]
            slots.append((r, "neighbourhood", p, true))
    logp = pair_logprobs(model, prompts, conts).view(-1, 2)
    greedy_prompts = sorted({s[2] for s in slots})
    greedy = dict(zip(greedy_prompts, predict_next(model, greedy_prompts).argmax(-1).tolist()))
    results = [{"rewrite": [], "paraphrase": [], "neighbourhood": [], "rewrite_acc": [], "paraphrase_acc": [],
                "neighbourhood_acc": []} for _ in records]
    for (r, kind, p, expected), (a, b) in zip(slots, logp.tolist()):
        results[r][kind].append(float(a > b))
        results[r][kind + "_acc"].append(float(greedy[p] == _first_token(model, expected)))
    out = []
    for rec, res in zip(records, results):
        row = {k: sum(v) / len(v) if v else float("nan") for k, v in res.items()}
        row["subject"], row["target"], row["old"] = rec.request.subject, rec.request.target, rec.old
        out.append(row)
    if generate:
        texts = model.generate([p for rec in records for p in rec.generation_prompts], max_new_tokens=max_new_tokens,
                               do_sample=True, top_k=5, seed=seed)
        i = 0
        for rec, row in zip(records, out):
            gens = texts[i:i + len(rec.generation_prompts)]
            i += len(gens)
            row["fluency"] = sum(n_gram_entropy(g) for g in gens) / len(gens)
            row["generations"] = gens
    return out


def summarise(rows: Sequence[dict]) -> dict:
    """Mean of each score over records, in percent (fluency in bits), plus the harmonic mean ``score``."""
    keys = ["rewrite", "paraphrase", "neighbourhood", "rewrite_acc", "paraphrase_acc", "neighbourhood_acc"]
    summary = {}
    for k in keys:
        vals = [r[k] for r in rows if not math.isnan(r[k])]
        summary[k] = 100 * sum(vals) / len(vals) if vals else float("nan")
    parts = [summary["rewrite"], summary["paraphrase"], summary["neighbourhood"]]
    summary["score"] = len(parts) / sum(1 / p for p in parts) if all(p > 0 for p in parts) else 0.0
    if rows and "fluency" in rows[0]:
        summary["fluency"] = sum(r["fluency"] for r in rows) / len(rows)
    summary["n_records"] = len(rows)
    return summary


@dataclass
class EditEvaluation(Result):
    """Scores before and after editing (summaries in percent) with per-record rows and timings."""

    method: str
    before: dict
    after: dict
    rows_before: list[dict] = field(repr=False)
    rows_after: list[dict] = field(repr=False)
    seconds_per_edit: float = 0.0
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate_rome(model: "Model", records: Sequence[EditRecord], cfg=None, generate: bool = True,
                  covariance: torch.Tensor | None = None,
                  progress: Progress = no_progress) -> EditEvaluation:
    """Edit each record alone with ROME, score it, restore; returns the before/after scores."""
    from uncover.applications.editing.rome import rome

    before = score_records(model, records, generate)
    after, seconds, layers = [], [], []
    for rec in progress(list(records), "ROME edits"):
        start = time.perf_counter()
        edit = rome(model, rec.request, cfg, covariance=covariance)
        seconds.append(time.perf_counter() - start)
        layers.append(edit.info["layer"])
        try:
            after += score_records(model, [rec], generate)
        finally:
            edit.restore(model)
    return EditEvaluation("rome", summarise(before), summarise(after), before, after,
                          sum(seconds) / len(seconds), {"layers": layers})


def evaluate_memit(model: "Model", records: Sequence[EditRecord], cfg=None, generate: bool = True,
                   covariances: dict[int, torch.Tensor] | None = None,
                   progress: Progress = no_progress) -> EditEvaluation:
    """Edit all records at once with MEMIT, score them, restore."""
    from uncover.applications.editing.memit import memit

    before = score_records(model, records, generate)
    start = time.perf_counter()
    edit: WeightEdit = memit(model, [r.request for r in records], cfg, covariances=covariances, progress=progress)
    seconds = time.perf_counter() - start
    try:
        after = score_records(model, records, generate)
    finally:
        edit.restore(model)
    return EditEvaluation("memit", summarise(before), summarise(after), before, after,
                          seconds / len(records), {"layers": edit.info["layers"], "cov_weight": edit.info["cov_weight"],
                                                   "total_seconds": seconds})
