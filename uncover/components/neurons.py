"""MLP neurons: activations, top-activating contexts, vocabulary projection of value vectors
(Geva et al. 2022) and polysemanticity.

A neuron n of layer l reads ``blocks.l.mlp.hook_post[..., n]`` (after the activation function, times the
gate for gated MLPs) and writes its *value vector* ``model.W_out(l)[n]`` [d_model] into the residual
stream. Projecting that vector through the unembedding says which next tokens the neuron promotes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import torch

from uncover.core.results import Progress, Result, no_progress
from uncover.errors import UncoverError
from uncover.features.analysis import (
    TopContexts, UnitFn, activation_histogram, context_window, logit_effects, polysemanticity, top_contexts,
)

if TYPE_CHECKING:
    from uncover.core.model import Model


def _check(model: "Model", layer: int, neurons: Sequence[int] | None = None) -> None:
    if not 0 <= layer < model.cfg.n_layers:
        raise UncoverError(f"layer {layer} is out of range: the model has layers 0..{model.cfg.n_layers - 1}")
    if neurons is not None:
        bad = [n for n in neurons if not 0 <= n < model.cfg.d_mlp]
        if bad:
            raise UncoverError(f"neurons {bad} are out of range: layer {layer} has neurons 0..{model.cfg.d_mlp - 1}")


def mlp_neurons(layer: int, neurons: Sequence[int] | None = None) -> UnitFn:
    """Unit function: neuron activations [batch, pos, len(neurons)] at ``blocks.{layer}.mlp.hook_post``."""
    from uncover.features.store import harvest

    name = f"blocks.{layer}.mlp.hook_post"
    index = None if neurons is None else torch.as_tensor(list(neurons))

    def fn(model: "Model", tokens: torch.Tensor) -> torch.Tensor:
        acts = harvest(model, [name], tokens)[name].view(*tokens.shape, -1)
        return acts if index is None else acts[..., index]

    return fn


def neuron_activations(model: "Model", layer: int, tokens: torch.Tensor, neurons: Sequence[int] | None = None
                       ) -> torch.Tensor:
    """Activations [batch, pos, len(neurons)] (all d_mlp neurons by default)."""
    _check(model, layer, neurons)
    return mlp_neurons(layer, neurons)(model, tokens)


def top_neuron_contexts(
    model: "Model", layer: int, neurons: Sequence[int], tokens: torch.Tensor, n_top: int = 10,
    batch_size: int = 8, progress: Progress = no_progress,
) -> TopContexts:
    """Each neuron's n_top most activating sequences of tokens [n_seqs, seq_len]."""
    _check(model, layer, neurons)
    return top_contexts(model, mlp_neurons(layer, neurons), tokens, n_top, batch_size, progress)


def vocab_projection(model: "Model", layer: int, neurons: Sequence[int], k: int = 10) -> dict[str, Any]:
    """Top / bottom k tokens of each neuron's value vector through the unembedding: W_out[n] @ W_U."""
    _check(model, layer, neurons)
    values = model.W_out(layer)[torch.as_tensor(list(neurons))].detach()
    return logit_effects(model, values, k)


@dataclass
class NeuronReport(Result):
    """Everything measured about some neurons of one layer, JSON-able via to_dict()."""

    layer: int
    neurons: list[int]
    contexts: TopContexts
    polysemanticity: torch.Tensor
    histograms: list[dict[str, Any]]
    vocab: dict[str, Any]

    def to_dict(self, model: "Model", n_show: int = 5) -> dict[str, Any]:
        cards = []
        for u, n in enumerate(self.neurons):
            shown = min(n_show, self.contexts.values.shape[1])
            cards.append({
                "title": f"L{self.layer} neuron {n}",
                "max_activation": float(self.contexts.values[u, 0]),
                "polysemanticity": float(self.polysemanticity[u]),
                "contexts": [context_window(model, self.contexts, u, r) for r in range(shown)],
                "histogram": self.histograms[u],
                "top_tokens": self.vocab["top_tokens"][u], "top_logits": self.vocab["top_logits"][u],
                "bottom_tokens": self.vocab["bottom_tokens"][u], "bottom_logits": self.vocab["bottom_logits"][u],
            })
        return {"layer": self.layer, "neurons": self.neurons, "cards": cards}


def analyse_neurons(
    model: "Model", layer: int, neurons: Sequence[int], tokens: torch.Tensor, n_top: int = 10,
    batch_size: int = 8, progress: Progress = no_progress,
) -> NeuronReport:
    """Top contexts, activation histograms, value-vector vocabulary projections and polysemanticity."""
    neurons = list(neurons)
    ctx = top_neuron_contexts(model, layer, neurons, tokens, n_top, batch_size, progress)
    hist = [activation_histogram(ctx.acts[u]) for u in range(len(neurons))]
    return NeuronReport(layer, neurons, ctx, polysemanticity(ctx), hist, vocab_projection(model, layer, neurons))


def most_active_neurons(model: "Model", layer: int, tokens: torch.Tensor, n: int = 5, batch_size: int = 8
                        ) -> list[int]:
    """The n neurons of a layer with the largest maximum activation over tokens."""
    _check(model, layer)
    best = None
    for s in range(0, len(tokens), batch_size):
        m = neuron_activations(model, layer, tokens[s:s + batch_size]).amax(dim=(0, 1))
        best = m if best is None else torch.maximum(best, m)
    return best.topk(n).indices.tolist()
