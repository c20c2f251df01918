"""Function vectors (Todd 2023): a few attention heads carry a compact representation of an
in-context task; the sum of their mean outputs, added to the residual stream, makes zero-shot prompts
perform the task.

1. ``mean_head_activations``: each head's ``hook_z`` at the last token, averaged over clean few-shot prompts.
2. ``indirect_effects``: on prompts whose shot labels are shuffled, put one head's mean activation back
   at the last token and measure the gain in the probability of the correct answer (the average
   indirect effect, AIE). ``method="exact"`` runs one patched variant per head on
   ``uncover.core.variants`` (many heads per forward, each starting at its layer);
   ``method="attribution"`` is its first-order estimate from one backward pass (``variants.attribution``).
3. ``function_vector``: the sum of the top-k heads' mean outputs ``mean_z[l, h] @ W_O(l)[h]`` [d_model].
4. ``fv_accuracy``: zero-shot accuracy with the vector added to ``blocks.{layer}.hook_resid_post`` at
   the last token.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import torch

from uncover.core.interventions import ablate, add_vector
from uncover.core.names import act_name, check_layer, check_layers
from uncover.core.results import Progress, Result, no_progress
from uncover.core.variants import attribution, base_run, run_variants
from uncover.data.icl import IclPrompt, IclTask, icl_task
from uncover.errors import UncoverError
from uncover.representations.activations import collect_activations

if TYPE_CHECKING:
    from uncover.core.model import Model


def mean_head_activations(model: "Model", prompts: Sequence[IclPrompt]) -> torch.Tensor:
    """Mean ``hook_z`` at the last token over ``prompts``: [n_layers, n_heads, d_head]."""
    z = collect_activations(model, [p.text for p in prompts], site="attn.hook_z")  # [L, n, H, d_head]
    return z.mean(1)


def _answer_probs(model: "Model", logits: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
    """Probability of each row's answer token at the last position: [batch]."""
    return logits[:, -1].float().softmax(-1)[torch.arange(len(answers)), answers.to(logits.device)]


def _exact_effects(model, tokens, mask, answers, mean_z, layers, progress, batch_size, max_bytes) -> torch.Tensor:
    H = model.cfg.n_heads
    base = base_run(model, tokens, mask, logits_to_keep=1)
    base_probs = _answer_probs(model, base.output, answers)
    heads = [(l, h) for l in layers for h in range(H)]
    # each variant puts one head's clean mean back at the last token
    variants = [[(act_name("z", l), ablate("mean", heads=[h], positions=[-1], values=mean_z[l]))] for l, h in heads]
    gains = run_variants(model, base, variants,
                         lambda logits, _: (_answer_probs(model, logits, answers) - base_probs).mean().cpu(),
                         logits_to_keep=1, batch_size=len(tokens) * H if batch_size is None else batch_size,
                         max_bytes=max_bytes, progress=progress, description="function-vector head effects")
    effects = torch.zeros(model.cfg.n_layers, H)
    for (l, h), gain in zip(heads, gains):
        effects[l, h] = gain
    return effects


def _attribution_effects(model, tokens, mask, answers, mean_z, layers) -> torch.Tensor:
    names = [act_name("z", l) for l in layers]
    metric = lambda logits: _answer_probs(model, logits, answers).sum()  # noqa: E731

    def with_means(name: str, z: torch.Tensor) -> torch.Tensor:  # every head's mean at the last token
        out = z.detach().clone()
        out[:, -1] = mean_z[layers[names.index(name)]].to(z.device, z.dtype)
        return out

    _, products = attribution(model, tokens, metric, names, with_means, attention_mask=mask)
    effects = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    for l, name in zip(layers, names):
        effects[l] = products[name][:, -1].sum(-1).mean(0).cpu()
    return effects


def indirect_effects(model: "Model", corrupted: Sequence[IclPrompt], mean_z: torch.Tensor, method: str = "exact",
                     layers: Sequence[int] | None = None, progress: Progress = no_progress,
                     batch_size: int | None = None, max_bytes: int | None = None) -> torch.Tensor:
    """Average indirect effect of each head, [n_layers, n_heads] (change in answer probability;
    zero for layers not in ``layers``). corrupted: shuffled-label prompts; mean_z from clean prompts.
    batch_size (rows, default one layer's heads x prompts) and max_bytes size the exact method's forwards."""
    layers = list(range(model.cfg.n_layers)) if layers is None else check_layers(layers, model.cfg.n_layers)
    tokens, mask = model.to_tokens([p.text for p in corrupted], return_mask=True)
    answers = torch.tensor([model.tokenizer.encode(" " + p.answer, add_special_tokens=False)[0] for p in corrupted])
    if method == "exact":
        return _exact_effects(model, tokens, mask, answers, mean_z, layers, progress, batch_size, max_bytes)
    if method == "attribution":
        return _attribution_effects(model, tokens, mask, answers, mean_z, layers)
    raise UncoverError(f"unknown method {method!r}; choose 'exact' or 'attribution'")


@dataclass
class FunctionVector(Result):
    """vector [d_model] to add at ``blocks.{layer}.hook_resid_post``; heads: the (layer, head) summed;
    effects [n_layers, n_heads]: the heads' average indirect effects."""

    vector: torch.Tensor
    layer: int
    heads: list[tuple[int, int]]
    effects: torch.Tensor
    task: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def hooks(self, scale: float = 1.0) -> list:
        """Hooks adding ``scale * vector`` at the last position (the prompt pass, in generation)."""
        return [(act_name("resid_post", self.layer), add_vector(self.vector, scale, positions=[-1]))]

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> "FunctionVector":
        return cls(**{**fields, "heads": [tuple(h) for h in fields["heads"]]})


def head_outputs(model: "Model", mean_z: torch.Tensor, heads: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Sum over ``heads`` of ``mean_z[l, h] @ W_O(l)[h]``: [d_model]."""
    out = torch.zeros(model.cfg.d_model)
    for l, h in heads:
        out += (mean_z[l, h].to(model.W_O(l).dtype) @ model.W_O(l)[h].detach().cpu().float()).float()
    return out


def function_vector(model: "Model", task: IclTask | str, n_prompts: int = 16, n_shots: int = 5, top_k: int = 10,
                    layer: int | None = None, method: str = "exact", seed: int = 0,
                    progress: Progress = no_progress) -> FunctionVector:
    """Todd's function vector for ``task``, built from its pairs (use ``task.split()`` to keep
    zero-shot queries out). layer: where to add it (default n_layers // 3)."""
    task = icl_task(task) if isinstance(task, str) else task
    layer = model.cfg.n_layers // 3 if layer is None else check_layer(layer, model.cfg.n_layers)
    if not 1 <= top_k <= model.cfg.n_layers * model.cfg.n_heads:
        raise UncoverError(f"top_k must be between 1 and {model.cfg.n_layers * model.cfg.n_heads}, got {top_k}")
    clean = task.prompts(n_prompts, n_shots, seed=seed)
    corrupted = task.prompts(n_prompts, n_shots, shuffle_labels=True, seed=seed + 1)
    mean_z = mean_head_activations(model, clean)
    effects = indirect_effects(model, corrupted, mean_z, method, progress=progress)
    top = torch.topk(effects.flatten(), top_k).indices
    heads = [(int(i) // model.cfg.n_heads, int(i) % model.cfg.n_heads) for i in top]
    return FunctionVector(head_outputs(model, mean_z, heads), layer, heads, effects, task.name,
                          {"n_prompts": n_prompts, "n_shots": n_shots, "method": method})


@torch.no_grad()
def fv_accuracy(model: "Model", prompts: Sequence[IclPrompt], hooks: list = ()) -> float:
    """Fraction of prompts whose greedy next token is the first token of ``" " + answer``."""
    tokens, mask = model.to_tokens([p.text for p in prompts], return_mask=True)
    answers = torch.tensor([model.tokenizer.encode(" " + p.answer, add_special_tokens=False)[0] for p in prompts])
    logits = model.run_with_hooks(tokens, list(hooks), attention_mask=mask)
    return float((logits[:, -1].argmax(-1).cpu() == answers).float().mean())


@dataclass
class FunctionVectorResult(Result):
    """Zero-shot accuracy without and with the function vector, and few-shot accuracy for reference."""

    fv: FunctionVector
    zero_shot: float
    zero_shot_with_fv: float
    few_shot: float
    n_test: int


def choose_layer(model: "Model", fv: FunctionVector, prompts: Sequence[IclPrompt],
                 layers: Sequence[int] | None = None) -> int:
    """The layer (of ``layers``, default every other layer of the first two thirds) where adding ``fv``
    gives the best zero-shot accuracy on ``prompts`` (use training pairs, not the test set)."""
    n = model.cfg.n_layers
    layers = list(range(2, 2 * n // 3, 2)) if layers is None else list(layers)
    scores = [fv_accuracy(model, prompts, FunctionVector(fv.vector, l, fv.heads, fv.effects).hooks()) for l in layers]
    return layers[max(range(len(layers)), key=lambda i: scores[i])]


def fv_experiment(model: "Model", task_name: str = "antonyms", top_k: int = 10, n_prompts: int = 16,
                  n_shots: int = 5, layer: int | None = None, method: str = "exact", seed: int = 0,
                  progress: Progress = no_progress) -> FunctionVectorResult:
    """Build a function vector on half of a task's pairs; score zero-shot on the other half.

    layer: where to add it; None picks it with ``choose_layer`` on the training pairs' zero-shot prompts.
    """
    train, test = icl_task(task_name).split(0.5, seed)
    fv = function_vector(model, train, n_prompts, n_shots, top_k, layer, method, seed, progress)
    if layer is None:
        fv.layer = choose_layer(model, fv, train.zero_shot())
    zero = test.zero_shot()
    few = [IclPrompt(p.text, p.query, p.answer) for p in
           IclTask(test.name, test.pairs + train.pairs).prompts(len(zero), n_shots, seed=seed + 2)]
    return FunctionVectorResult(fv, fv_accuracy(model, zero), fv_accuracy(model, zero, fv.hooks()),
                                fv_accuracy(model, few), len(zero))
