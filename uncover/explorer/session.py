"""What the explorer computes: one method per view, each a thin call into uncover's public functions.

``Explorer`` holds the model and the objects the user named on the command line (SAEs, saved directions,
circuit graphs), checks every request against its limits, and runs one model call at a time (a lock), so
the web server can call it from worker threads. Every method returns plain JSON-able data; bad input
raises ``UncoverError`` with a message that says what to do.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

from uncover.errors import UncoverError, closest
from uncover.explorer.circuits import load_circuits

if TYPE_CHECKING:
    from uncover.core.model import Model
    from uncover.features.sae import SAE
    from uncover.representations.directions import Direction

LENS_BUDGET_BYTES = 1 << 30  # the logit lens holds [n_layers + 1, pos, d_vocab] float32 log-probs


@dataclass
class Limits:
    """Request limits: prompt characters and tokens, top-k, generated tokens, request body bytes."""

    max_prompt_chars: int = 2000
    max_tokens: int = 128
    max_k: int = 50
    max_new_tokens: int = 64
    max_body_bytes: int = 64 * 1024
    corpus_seqs: int = 64
    corpus_len: int = 64

    @classmethod
    def for_model(cls, model: "Model", max_tokens: int | None = None) -> "Limits":
        """Default limits; max_tokens keeps the logit lens of one prompt under ~1 GiB unless given."""
        if max_tokens is None:
            per_token = (model.cfg.n_layers + 1) * model.cfg.d_vocab * 4
            max_tokens = max(8, min(128, LENS_BUDGET_BYTES // per_token))
        return cls(max_tokens=min(max_tokens, model.cfg.n_ctx))


@dataclass
class NamedSAE:
    name: str
    path: str
    sae: "SAE"
    error: str | None = None


@dataclass
class NamedDirection:
    name: str
    path: str
    direction: "Direction"
    error: str | None = None


def _unique(name: str, taken: set[str]) -> str:
    out, i = name, 2
    while out in taken:
        out, i = f"{name}-{i}", i + 1
    taken.add(out)
    return out


def find_sae_folders(folder: str | Path) -> list[Path]:
    """An SAE folder (cfg.json + sae_weights.safetensors) or a folder of them (one level down)."""
    from uncover.features.saelens import CFG_FILENAME

    folder = Path(folder)
    if (folder / CFG_FILENAME).is_file():
        return [folder]
    found = sorted(p for p in folder.iterdir() if (p / CFG_FILENAME).is_file()) if folder.is_dir() else []
    if not found:
        raise UncoverError(f"--sae {folder}: no SAE there; pass a folder with cfg.json and "
                           "sae_weights.safetensors (SAELens format), or a folder of such folders")
    return found


def find_direction_folders(folder: str | Path) -> list[Path]:
    """A saved Direction folder (a saved uncover result) or a folder of them."""
    from uncover.core.results import JSON_FILE, TENSORS_FILE

    folder = Path(folder)
    if (folder / JSON_FILE).is_file():
        return [folder]
    found = sorted(p for p in folder.iterdir() if (p / JSON_FILE).is_file()) if folder.is_dir() else []
    if not found:
        raise UncoverError(f"--direction {folder}: no saved direction there; pass a folder written by "
                           f"Direction.save ({JSON_FILE} + {TENSORS_FILE}), or a folder of them")
    return found


class Explorer:
    """The explorer's state and computations for one model (see the module docstring)."""

    def __init__(self, model: "Model", saes: Sequence[str | Path] = (), directions: Sequence[str | Path] = (),
                 circuits: Sequence[str | Path] = (), corpus: str | Path | None = None,
                 limits: Limits | None = None):
        from uncover.features.sae import SAE
        from uncover.representations.directions import Direction

        if model.tokenizer is None:
            raise UncoverError("the explorer shows text, so the model needs a tokenizer; pass tokenizer=... to uc.load")
        self.model = model
        self.limits = limits or Limits.for_model(model)
        self.corpus = corpus
        self.lock = threading.Lock()
        self._cached: dict[Any, Any] = {}
        taken: set[str] = set()
        self.saes: dict[str, NamedSAE] = {}
        for folder in saes:
            for path in find_sae_folders(folder):
                named = NamedSAE(_unique(path.name, taken), str(path), SAE.load(path).to(model.device))
                named.error = self._sae_problem(named.sae)
                self.saes[named.name] = named
        taken = set()
        self.directions: dict[str, NamedDirection] = {}
        for folder in directions:
            for path in find_direction_folders(folder):
                named = NamedDirection(_unique(path.name, taken), str(path), Direction.load(path))
                named.error = self._direction_problem(named.direction)
                self.directions[named.name] = named
        self.circuits = load_circuits(circuits)

    # ---- checks --------------------------------------------------------------------------------------
    def _width(self, hook: str) -> int:
        """The last-axis width of a hook's activation on a one-token input."""
        from uncover.features.store import harvest

        key = ("width", hook)
        if key not in self._cached:
            tokens = self.model.to_tokens("a")[:, :1]
            self._cached[key] = harvest(self.model, [hook], tokens)[hook].shape[-1]
        return self._cached[key]

    def _sae_problem(self, sae: "SAE") -> str | None:
        hook = sae.cfg.hook_name
        if hook not in self.model.hook_names():
            return (f"reads '{hook}', which {self.model.name} does not have (closest: "
                    f"{', '.join(closest(hook, self.model.hook_names())) or 'none'}); it was made for another model")
        width = self._width(hook)
        if width != sae.cfg.d_in:
            trained = f" (trained on {sae.cfg.model_name})" if sae.cfg.model_name else ""
            return (f"has d_in={sae.cfg.d_in} but {hook} of {self.model.name} is {width} wide{trained}; "
                    "use an SAE trained on this model")
        return None

    def _direction_problem(self, d: "Direction") -> str | None:
        n, width = self.model.cfg.n_layers, d.vectors.shape[-1]
        if width != self.model.cfg.d_model:
            return f"has vectors of size {width} but d_model is {self.model.cfg.d_model}; it was made for another model"
        bad = [l for l in d.layers if not 0 <= l < n]
        return f"has layers {bad} outside 0..{n - 1}" if bad else None

    def tokens(self, prompt: str) -> torch.Tensor:
        """Token ids [1, pos] of a prompt within the limits."""
        if not prompt or not prompt.strip():
            raise UncoverError("the prompt is empty; type some text")
        if len(prompt) > self.limits.max_prompt_chars:
            raise UncoverError(f"the prompt has {len(prompt)} characters; the limit is {self.limits.max_prompt_chars}")
        tokens = self.model.to_tokens(prompt)
        if tokens.shape[1] > self.limits.max_tokens:
            raise UncoverError(f"the prompt has {tokens.shape[1]} tokens; the limit is {self.limits.max_tokens} "
                               "(uncover serve --max-tokens sets it); shorten it")
        return tokens

    def _k(self, k: int) -> int:
        if not 1 <= k <= self.limits.max_k:
            raise UncoverError(f"k={k} is out of range; ask for 1..{self.limits.max_k}")
        return k

    def _layer(self, layer: int) -> int:
        n = self.model.cfg.n_layers
        if not 0 <= layer < n:
            raise UncoverError(f"layer {layer} is out of range: {self.model.name} has layers 0..{n - 1}")
        return layer

    def _pos(self, pos: int, n: int) -> int:
        if not -n <= pos < n:
            raise UncoverError(f"position {pos} is out of range: the prompt has positions 0..{n - 1}")
        return pos % n

    def _token_id(self, token: str | int) -> int:
        if isinstance(token, int):
            if not 0 <= token < self.model.cfg.d_vocab:
                raise UncoverError(f"token id {token} is out of range 0..{self.model.cfg.d_vocab - 1}")
            return token
        if not token:
            raise UncoverError("no target token given; type a token (e.g. ' Paris') or pass its id")
        return self.model.to_single_token(token)

    def _decode(self, ids) -> dict[str, str]:
        tok = self.model.tokenizer
        return {str(i): tok.decode([i]) for i in sorted({int(i) for i in ids})}

    def _sae(self, name: str) -> "SAE":
        if name not in self.saes:
            raise UncoverError(f"no SAE named {name!r}; loaded: {sorted(self.saes) or 'none (start with --sae DIR)'}")
        named = self.saes[name]
        if named.error:
            raise UncoverError(f"SAE {name!r} {named.error}")
        return named.sae

    def _corpus(self) -> torch.Tensor:
        from uncover.data.corpus import corpus_tokens

        key = "corpus"
        if key not in self._cached:
            self._cached[key] = corpus_tokens(self.model, self.limits.corpus_seqs, self.limits.corpus_len,
                                              source=self.corpus)
        return self._cached[key]

    # ---- views ---------------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """The model's shape, what was loaded, and the limits."""
        from dataclasses import asdict

        from uncover.data.contrast import CONCEPTS

        cfg = self.model.cfg
        return {
            "model": self.model.name,
            "cfg": {k: getattr(cfg, k) for k in ("n_layers", "n_heads", "n_kv_heads", "d_model", "d_head",
                                                 "d_mlp", "d_vocab", "n_ctx", "architecture")},
            "saes": [{"name": s.name, "hook": s.sae.cfg.hook_name, "layer": _layer_of(s.sae.cfg.hook_name),
                      "d_in": s.sae.cfg.d_in, "d_sae": s.sae.cfg.d_sae, "architecture": s.sae.cfg.architecture,
                      "error": s.error} for s in self.saes.values()],
            "directions": [{"name": d.name, "layers": d.direction.layers, "concept": d.direction.concept,
                            "method": d.direction.method, "error": d.error} for d in self.directions.values()],
            "concepts": sorted(CONCEPTS),
            "circuits": [{"name": n, "nodes": len(g["nodes"]), "edges": len(g["edges"])}
                         for n, g in self.circuits.items()],
            "limits": asdict(self.limits),
        }

    def run(self, prompt: str, k: int = 10) -> dict[str, Any]:
        """Tokens and the next-token distribution (top k) at the last position."""
        tokens, k = self.tokens(prompt), self._k(k)
        with self.lock, torch.no_grad():
            probs = self.model(tokens, logits_to_keep=1)[0, -1].float().softmax(-1)
        top = probs.topk(k)
        ids = tokens[0].tolist()
        return {"ids": ids, "tokens": self.model.to_str_tokens(ids),
                "next": [{"id": int(i), "token": self.model.tokenizer.decode([int(i)]), "prob": float(p)}
                         for p, i in zip(top.values, top.indices)]}

    def lens(self, prompt: str, target: str | int | None = None, k: int = 5) -> dict[str, Any]:
        """The logit lens at every layer and position: top-k tokens and the target's probability and rank.

        target: a single-token string or id; default the model's top next token at the last position.
        """
        from uncover.components.lens import logit_lens

        tokens, k = self.tokens(prompt), self._k(k)
        with self.lock, torch.no_grad():
            tid = (int(self.model(tokens, logits_to_keep=1)[0, -1].argmax()) if target in (None, "")
                   else self._token_id(target))
            r = logit_lens(self.model, tokens, target=tid, k=k)
        top_ids = r.top_ids[:, 0]  # [layers, pos, k]
        return {"labels": r.labels, "tokens": self.model.to_str_tokens(tokens[0]),
                "target": tid, "target_token": self.model.tokenizer.decode([tid]),
                "top_ids": top_ids.tolist(), "top_probs": r.top_probs[:, 0].tolist(),
                "target_prob": r.target_prob[:, 0].tolist(), "target_rank": r.target_rank[:, 0].tolist(),
                "vocab": self._decode(top_ids.flatten().tolist() + [tid])}

    def attention(self, prompt: str, layer: int) -> dict[str, Any]:
        """Attention patterns of every head of ``layer``: [head, query, key]."""
        tokens, layer = self.tokens(prompt), self._layer(layer)
        name = f"blocks.{layer}.attn.hook_pattern"
        with self.lock:
            _, cache = self.model.run_with_cache(tokens, names=[name])
        return {"layer": layer, "tokens": self.model.to_str_tokens(tokens[0]),
                "pattern": cache[name][0].float().tolist()}

    def head_scores(self) -> dict[str, Any]:
        """Head scores [n_layers][n_heads]: previous-token, duplicate-token and induction (on repeated random
        tokens) and Elhage's copying score; computed once per server."""
        from uncover.components.heads import attention_scores, copying_scores

        if "heads" not in self._cached:
            with self.lock:
                scores = attention_scores(self.model)
                scores["copying"] = copying_scores(self.model)
            self._cached["heads"] = {k: v.tolist() for k, v in scores.items()}
        return {"scores": self._cached["heads"]}

    def dla(self, prompt: str, token: str | int | None = None, pos: int = -1) -> dict[str, Any]:
        """Direct logit attribution of ``token``'s logit at ``pos`` to the embedding, every head and every MLP.

        token: default the model's top prediction at ``pos``.
        """
        from uncover.components.lens import direct_logit_attribution

        tokens = self.tokens(prompt)
        pos = self._pos(pos, tokens.shape[1])
        with self.lock, torch.no_grad():
            tid = (int(self.model(tokens)[0, pos].argmax()) if token in (None, "") else self._token_id(token))
            r = direct_logit_attribution(self.model, tokens, tid, pos=pos, per_head=True)
        return {"pos": pos, "token_id": tid, "token": self.model.tokenizer.decode([tid]),
                "labels": r.labels, "values": r.values[:, 0].tolist(), "actual": float(r.actual[0]),
                "total": float(r.values[:, 0].sum())}

    def sae_features(self, prompt: str, sae: str, k: int = 5) -> dict[str, Any]:
        """The k most active latents of an SAE at every position (latent ids and activations)."""
        from uncover.features.analysis import sae_latents

        model_sae, tokens, k = self._sae(sae), self.tokens(prompt), self._k(k)
        with self.lock, torch.no_grad():
            acts = sae_latents(model_sae)(self.model, tokens)[0]  # [pos, d_sae]
        top = acts.topk(min(k, acts.shape[-1]), dim=-1)
        return {"sae": sae, "hook": model_sae.cfg.hook_name, "tokens": self.model.to_str_tokens(tokens[0]),
                "latents": top.indices.tolist(), "acts": top.values.tolist(),
                "l0": (acts > 0).sum(-1).tolist()}

    def neuron_acts(self, prompt: str, layer: int, k: int = 5) -> dict[str, Any]:
        """The k most active MLP neurons of ``layer`` at every position."""
        from uncover.components.neurons import neuron_activations

        tokens, layer, k = self.tokens(prompt), self._layer(layer), self._k(k)
        with self.lock, torch.no_grad():
            acts = neuron_activations(self.model, layer, tokens)[0]  # [pos, d_mlp]
        top = acts.topk(min(k, acts.shape[-1]), dim=-1)
        return {"layer": layer, "tokens": self.model.to_str_tokens(tokens[0]),
                "neurons": top.indices.tolist(), "acts": top.values.tolist()}

    def feature(self, sae: str, latent: int, n_top: int = 8) -> dict[str, Any]:
        """A latent's page: top contexts in the corpus, activation histogram, logit effects, polysemanticity."""
        from uncover.features.analysis import logit_effects, sae_latents, top_contexts

        model_sae = self._sae(sae)
        if not 0 <= latent < model_sae.cfg.d_sae:
            raise UncoverError(f"latent {latent} is out of range: SAE {sae!r} has latents 0..{model_sae.cfg.d_sae - 1}")
        key = ("feature", sae, latent)
        if key not in self._cached:
            with self.lock, torch.no_grad():
                corpus = self._corpus()
                ctx = top_contexts(self.model, sae_latents(model_sae, [latent]), corpus, n_top=min(n_top, len(corpus)))
                effects = logit_effects(self.model, model_sae.W_dec[[latent]].detach(), k=10)
            self._cached[key] = _card(self.model, f"{sae} latent {latent}", ctx, effects)
        return self._cached[key]

    def neuron(self, layer: int, neuron: int, n_top: int = 8) -> dict[str, Any]:
        """A neuron's page, as for a feature (value vector through the unembedding for the logit effects)."""
        from uncover.components.neurons import analyse_neurons

        layer = self._layer(layer)
        if not 0 <= neuron < self.model.cfg.d_mlp:
            raise UncoverError(f"neuron {neuron} is out of range: layer {layer} has neurons 0..{self.model.cfg.d_mlp - 1}")
        key = ("neuron", layer, neuron)
        if key not in self._cached:
            with self.lock, torch.no_grad():
                corpus = self._corpus()
                report = analyse_neurons(self.model, layer, [neuron], corpus, n_top=min(n_top, len(corpus)))
            card = report.to_dict(self.model, n_show=n_top)["cards"][0]
            self._cached[key] = {**card, "firing_rate": card["histogram"]["firing_rate"]}
        return self._cached[key]

    def steer(self, prompt: str, source: str, coeff: float, layer: int | None = None, latent: int | None = None,
              max_new_tokens: int = 20, k: int = 10) -> dict[str, Any]:
        """Generation and next-token distribution with and without steering, side by side.

        source: "direction:NAME" (a saved direction, at ``layer``), "concept:NAME" (a CAA direction of a
        built-in concept at ``layer``, computed on first use) or "sae:NAME" (``latent``'s decoder row, at the
        SAE's hook). The vector is added, times ``coeff``, at every position.
        """
        hooks = self.steering_hooks(source, coeff, layer, latent)
        tokens, k = self.tokens(prompt), self._k(k)
        if not 1 <= max_new_tokens <= self.limits.max_new_tokens:
            raise UncoverError(f"max_new_tokens={max_new_tokens} is out of range 1..{self.limits.max_new_tokens}")
        if not abs(coeff) <= 1e4:
            raise UncoverError(f"coefficient {coeff} is too large; use |coeff| <= 10000")
        with self.lock, torch.no_grad():
            before = self.model(tokens, logits_to_keep=1)[0, -1].float().softmax(-1)
            after = self.model.run_with_hooks(tokens, hooks, logits_to_keep=1)[0, -1].float().softmax(-1)
            plain = self.model.generate(prompt, max_new_tokens=max_new_tokens)
            steered = self.model.generate(prompt, max_new_tokens=max_new_tokens, fwd_hooks=hooks)
        shift = after - before
        decode = self.model.tokenizer.decode

        def rows(ids) -> list[dict[str, Any]]:
            return [{"id": int(i), "token": decode([int(i)]), "before": float(before[i]), "after": float(after[i]),
                     "shift": float(shift[i])} for i in ids]

        return {"unsteered": plain, "steered": steered, "hooks": [name for name, _ in hooks],
                "top_before": rows(before.topk(k).indices), "top_after": rows(after.topk(k).indices),
                "up": rows(shift.topk(k).indices), "down": rows((-shift).topk(k).indices)}

    def steering_hooks(self, source: str, coeff: float, layer: int | None, latent: int | None) -> list:
        """The hooks a steering request adds (see ``steer``)."""
        from uncover.features.analysis import steer_hook
        from uncover.representations.steering import caa_direction, steering_hooks

        kind, _, name = source.partition(":")
        if kind == "sae":
            sae = self._sae(name)
            if latent is None or not 0 <= latent < sae.cfg.d_sae:
                raise UncoverError(f"pick a latent of SAE {name!r} in 0..{sae.cfg.d_sae - 1}")
            return [steer_hook(sae, latent, coeff)]
        if layer is None:
            raise UncoverError("pick a layer to steer at")
        layer = self._layer(layer)
        if kind == "direction":
            if name not in self.directions:
                raise UncoverError(f"no direction named {name!r}; loaded: "
                                   f"{sorted(self.directions) or 'none (start with --direction DIR)'}")
            named = self.directions[name]
            if named.error:
                raise UncoverError(f"direction {name!r} {named.error}")
            if layer not in named.direction.layers:
                raise UncoverError(f"direction {name!r} has layers {named.direction.layers}; pick one of them")
            return steering_hooks(named.direction, coeff, layers=[layer])
        if kind == "concept":
            from uncover.data.contrast import concept

            concept(name)  # a clear error for an unknown concept
            key = ("concept", name, layer)
            if key not in self._cached:
                with self.lock:
                    self._cached[key] = caa_direction(self.model, name, layer)
            return steering_hooks(self._cached[key], coeff)
        raise UncoverError(f"unknown steering source {source!r}; use 'direction:NAME', 'concept:NAME' or 'sae:NAME'")


def _layer_of(hook: str) -> int | None:
    parts = hook.split(".")
    return int(parts[1]) if len(parts) > 1 and parts[0] == "blocks" and parts[1].isdigit() else None


def _card(model: "Model", title: str, ctx, effects: dict[str, Any]) -> dict[str, Any]:
    """One unit's page as JSON from its TopContexts and logit effects (the fields of the neuron cards of
    uncover.components.neurons, plus the firing rate)."""
    from uncover.features.analysis import activation_histogram, context_window, polysemanticity

    hist = activation_histogram(ctx.acts[0])
    return {"title": title, "max_activation": float(ctx.values[0, 0]), "polysemanticity": float(polysemanticity(ctx)[0]),
            "firing_rate": hist["firing_rate"],
            "contexts": [context_window(model, ctx, 0, r) for r in range(ctx.values.shape[1])],
            "histogram": hist, "top_tokens": effects["top_tokens"][0], "top_logits": effects["top_logits"][0],
            "bottom_tokens": effects["bottom_tokens"][0], "bottom_logits": effects["bottom_logits"][0]}
