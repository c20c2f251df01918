"""The common shape of a patching task: clean / corrupted prompts, answers, and the task's metric.

Every generator (``ioi``, ``induction``, ``greater_than``, ``docstring``, ``facts``) returns a ``Task``.
Clean and corrupted prompts of one pair always have the same number of tokens, so activations line up
position by position; prompts of different pairs may differ and are left padded (``attention_mask``),
so position -1 is every prompt's final token.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import torch
from torch import Tensor

from uncover.core import metrics
from uncover.core.results import Result
from uncover.errors import UncoverError

if TYPE_CHECKING:
    from uncover.core.model import Model

TASK_NAMES = ("ioi", "induction", "greater-than", "docstring", "facts")


@dataclass
class Task(Result):
    """Clean / corrupted prompt pairs with their answers (``save`` / ``load``: an uncover result folder).

    clean, corrupt: LongTensor [n, pos] (same padding for both).  attention_mask: [n, pos] or None.
    answers, wrong: LongTensor [n] (one token each) or [n, k] answer sets padded with -1.
    metric_kind: "logit_diff" (nats) or "prob_diff" (probability), read at the last position.
    """

    name: str
    clean: Tensor
    corrupt: Tensor
    answers: Tensor
    wrong: Tensor
    metric_kind: str = "logit_diff"
    attention_mask: Tensor | None = None
    clean_prompts: list[str] = field(default_factory=list)
    corrupt_prompts: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.clean.shape[0]

    def metric(self, logits: Tensor, per_prompt: bool = False) -> Tensor:
        """The task's metric on logits [n, pos, vocab] (mean over prompts unless ``per_prompt``)."""
        fn = metrics.prob_diff if self.metric_kind == "prob_diff" else metrics.logit_diff
        return fn(logits, self.answers, self.wrong, per_prompt=per_prompt)

    @property
    def metric_unit(self) -> str:
        return "probability difference" if self.metric_kind == "prob_diff" else "logit difference (nats)"

    def subset(self, idx: Sequence[int] | slice) -> "Task":
        """The task restricted to some prompt pairs."""
        ids = list(range(len(self)))[idx] if isinstance(idx, slice) else list(idx)
        pick = lambda t: None if t is None else t[ids]  # noqa: E731
        return Task(
            self.name, pick(self.clean), pick(self.corrupt), pick(self.answers), pick(self.wrong),
            self.metric_kind, pick(self.attention_mask),
            [self.clean_prompts[i] for i in ids] if self.clean_prompts else [],
            [self.corrupt_prompts[i] for i in ids] if self.corrupt_prompts else [], dict(self.info),
        )


def _token_ids(model: "Model", text: str) -> list[int]:
    """The ids of ``text`` without special tokens (BOS); a model without a tokenizer is a clear error.
    Only their count decides "single token": anything the tokenizer itself raises propagates."""
    if model.tokenizer is None:
        raise UncoverError(f"{model.name} has no tokenizer; pass tokenizer=... to uc.load to build tasks from text")
    return list(model.tokenizer(text, add_special_tokens=False)["input_ids"])


def single_token(model: "Model", text: str, what: str = "word") -> int:
    """The id of ``text`` as one token for this model, or a clear error saying which text is not."""
    ids = _token_ids(model, text)
    if len(ids) != 1:
        pieces = [model.tokenizer.decode([i]) for i in ids]
        raise UncoverError(
            f"The {what} {text!r} is not a single token for {model.name} (it splits into {pieces}); "
            f"choose {what}s that are one token for this model."
        )
    return ids[0]


def single_token_pool(model: "Model", words: Sequence[str], need: int, what: str) -> list[str]:
    """The words (given with their leading space) that are one token for the model; at least ``need``."""
    keep = [w for w in words if len(_token_ids(model, w)) == 1]
    if len(keep) < need:
        raise UncoverError(
            f"Only {len(keep)} of the {len(words)} built-in {what}s are single tokens for {model.name}, "
            f"{need} are needed; pass your own list of single-token {what}s."
        )
    return keep


def bos_prefix(model: "Model") -> list[int]:
    """The ids the model's tokenizer puts before any text (``[bos]`` or ``[]``; ``[]`` without a tokenizer)."""
    if model.tokenizer is None:
        return []
    with_special = model.to_tokens("x")[0].tolist()
    plain = model.tokenizer("x", add_special_tokens=False)["input_ids"]
    return with_special[: len(with_special) - len(plain)]


def tokenize_pairs(model: "Model", clean: list[str], corrupt: list[str]) -> tuple[Tensor, Tensor, Tensor | None]:
    """Tokenise prompt pairs (left padded); raises if a pair's token counts differ."""
    lengths = [(model.to_tokens(c).shape[1], model.to_tokens(k).shape[1]) for c, k in zip(clean, corrupt)]
    bad = [(i, a, b) for i, (a, b) in enumerate(lengths) if a != b]
    if bad:
        i, a, b = bad[0]
        raise UncoverError(
            f"{len(bad)} clean/corrupt pairs differ in token length, e.g. pair {i}: {clean[i]!r} has {a} tokens "
            f"and {corrupt[i]!r} has {b}; corrupted prompts must keep every token position."
        )
    clean_t, mask = model.to_tokens(clean, return_mask=True)
    corrupt_t, _ = model.to_tokens(corrupt, return_mask=True)
    if bool(mask.all()):
        mask = None
    return clean_t, corrupt_t, mask


def make_task(model: "Model", name: str, n: int = 32, seed: int = 0, **kwargs) -> Task:
    """Build a task by name: one of ``TASK_NAMES`` (``greater_than`` is accepted for ``greater-than``)."""
    key = name.replace("_", "-").lower()
    if key == "ioi":
        from uncover.data.ioi import ioi_task as build
    elif key == "induction":
        from uncover.data.induction import induction_task as build
    elif key == "greater-than":
        from uncover.data.greater_than import greater_than_task as build
    elif key == "docstring":
        from uncover.data.docstring import docstring_task as build
    elif key == "facts":
        build = facts_task
    else:
        raise UncoverError(f"Unknown task {name!r}; choose one of {', '.join(TASK_NAMES)}.")
    return build(model, n=n, seed=seed, **kwargs)


def facts_task(model: "Model", n: int = 32, seed: int = 0, facts=None, relation: str | None = None) -> Task:
    """Factual recall: "The Eiffel Tower is located in the city of" -> " Paris".

    Only facts the model gets right (greedy next token, ``known_facts``) are used. The corrupted prompt asks
    the same relation about another known subject whose prompt has the same token length; the wrong answer
    is that subject's attribute.
    """
    import random

    from uncover.data.facts import known_facts

    known = known_facts(model, facts)
    if relation is not None:
        known = [f for f in known if f.relation == relation]
    groups: dict[tuple[str, int], list] = {}
    for f in known:
        groups.setdefault((f.relation, model.to_tokens(f.prompt()).shape[1]), []).append(f)
    rng = random.Random(seed)
    pairs = []
    for group in groups.values():
        for f in group:
            others = [g for g in group if g.attribute != f.attribute]
            if others:
                pairs.append((f, rng.choice(others)))
    if not pairs:
        raise UncoverError(
            f"{model.name} knows {len(known)} facts but no two of one relation share a prompt length with "
            "different attributes; pass more facts (uncover.data.facts.FACTS) to build a corruption."
        )
    rng.shuffle(pairs)
    pairs = pairs[:n]
    clean = [f.prompt() for f, _ in pairs]
    corrupt = [g.prompt() for _, g in pairs]
    clean_t, corrupt_t, mask = tokenize_pairs(model, clean, corrupt)
    answers = torch.tensor([single_token(model, f.attribute, "attribute") for f, _ in pairs])
    wrong = torch.tensor([single_token(model, g.attribute, "attribute") for _, g in pairs])
    subjects = [f.subject for f, _ in pairs]
    return Task("facts", clean_t, corrupt_t, answers, wrong, "logit_diff", mask, clean, corrupt,
                {"subjects": subjects, "relations": [f.relation for f, _ in pairs]})
