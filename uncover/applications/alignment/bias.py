"""Bias heads (Yang et al. 2023): heads whose masking removes a gender-occupation stereotype.

Bias score (nats): the mean over prompts of stereotype * (log P(" he") - log P(" she")) at the last
position, stereotype +1 for male-dominated and -1 for female-dominated occupations
(``uncover.data.bias``). 0 means the model's pronoun preference does not follow the stereotype; with
balanced prompts a global he/she preference cancels out. Each head's contribution is the gradient of the
bias score with respect to a mask on its output (at mask 1: the sum of hook_z . d bias / d hook_z), on the
train split; the heads with the largest positive contributions are masked (output zeroed) one by one, and
the bias on the held-out split and the held-out corpus perplexity are measured after each.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch

from uncover.applications.pruning.curves import perplexity
from uncover.applications.pruning.plan import PruningPlan
from uncover.core.results import Progress, Result, no_progress
from uncover.data.bias import BiasPrompts, bias_split, pronoun_ids, tokenize

if TYPE_CHECKING:
    from uncover.core.model import Model


def _gap(model: "Model", logits: torch.Tensor) -> torch.Tensor:
    he, she = pronoun_ids(model)
    lp = logits[:, -1].float().log_softmax(-1)
    return lp[:, he] - lp[:, she]


def bias_score(model: "Model", data: BiasPrompts, hooks: Sequence = (), per_prompt: bool = False) -> torch.Tensor:
    """Stereotype-signed log P(he) - log P(she) (nats): mean over prompts, or [n] with per_prompt."""
    tokens, mask, stereo = tokenize(model, data)
    with torch.no_grad(), model.hooks(list(hooks)):
        signed = stereo * _gap(model, model(tokens, attention_mask=mask, logits_to_keep=1)).cpu()
    return signed if per_prompt else signed.mean()


def head_bias_gradients(model: "Model", data: BiasPrompts) -> torch.Tensor:
    """d bias / d mask_h for every head: [n_layers, n_heads] (positive: the head pushes the stereotype)."""
    tokens, mask, stereo = tokenize(model, data)
    names = [f"blocks.{l}.attn.hook_z" for l in range(model.cfg.n_layers)]
    metric = lambda logits: (stereo.to(logits.device) * _gap(model, logits)).mean()  # noqa: E731
    _, acts, grads = model.grad_cache(tokens, metric, names, attention_mask=mask, logits_to_keep=1)
    return torch.stack([(acts[n].float() * grads[n].float()).sum(dim=(0, 1, 3)).cpu() for n in names])


@dataclass
class BiasHeads(Result):
    """Masking the top bias heads one by one.

    scores [n_layers, n_heads]: d bias / d mask on the train split. order: heads by decreasing score.
    counts: heads masked (0 first); bias_train, bias_test (nats), agreement_test (share of held-out
    prompts whose he/she preference follows the stereotype) and perplexity (held-out corpus), per count.
    """

    scores: torch.Tensor
    order: list[tuple[int, int]]
    counts: list[int]
    bias_train: list[float]
    bias_test: list[float]
    agreement_test: list[float]
    perplexity: list[float]

    def crossing(self, bias_factor: float = 0.5, ppl_rise: float = 0.10) -> int | None:
        """The fewest masked heads with test bias <= factor * unmasked and perplexity rise < ppl_rise, or None."""
        b0, p0 = self.bias_test[0], self.perplexity[0]
        for k, b, p in zip(self.counts, self.bias_test, self.perplexity):
            if k and abs(b) <= bias_factor * abs(b0) and p < (1 + ppl_rise) * p0:
                return k
        return None

    def plan(self, k: int, model: "Model") -> PruningPlan:
        heads: dict[int, list[int]] = {}
        for l, h in self.order[:k]:
            heads.setdefault(l, []).append(h)
        return PruningPlan(model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_mlp, heads)


def bias_heads(model: "Model", heldout: torch.Tensor, counts: Sequence[int] = (1, 2, 4, 8, 16),
               train: BiasPrompts | None = None, test: BiasPrompts | None = None,
               progress: Progress = no_progress) -> BiasHeads:
    """Rank heads by their bias gradient on ``train`` and mask the top ``counts`` (see the module doc).

    heldout: corpus windows [n, pos] for perplexity.
    """
    train = train or bias_split("train")
    test = test or bias_split("test")
    scores = head_bias_gradients(model, train)
    flat = scores.flatten().argsort(descending=True).tolist()
    order = [divmod(i, model.cfg.n_heads) for i in flat if scores.flatten()[i] > 0]
    counts = [0] + sorted({min(k, len(order)) for k in counts if k > 0})
    out = BiasHeads(scores, order, [], [], [], [], [])
    for k in progress(counts, "masking bias heads"):
        hooks = out.plan(k, model).hooks() if k else []
        per = bias_score(model, test, hooks, per_prompt=True)
        gap_sign = torch.sign(per)
        out.counts.append(k)
        out.bias_train.append(float(bias_score(model, train, hooks)))
        out.bias_test.append(float(per.mean()))
        out.agreement_test.append(float((gap_sign > 0).float().mean()))
        out.perplexity.append(perplexity(model, heldout, hooks))
    return out
