"""Model: a thin wrapper around a Hugging Face causal LM that names, reads and changes its activations.

The HF model is the model: hooks sit on its modules, and with hooks attached but nothing changed the
logits are bitwise equal to ``model.hf(...).logits``. Only requested names are hooked, and attention
patterns are computed only when a pattern hook is active.
"""
from __future__ import annotations

import fnmatch
import re
from contextlib import ExitStack, contextmanager
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from uncover.core.adapters import adapter_for
from uncover.core.attention import pattern_hooks, pattern_implementation
from uncover.core.cache import ActivationCache
from uncover.core.hooks import Fn, HookPoint, attach, onloaded
from uncover.core.memory import tune_allocator
from uncover.core.names import check_layer
from uncover.errors import UncoverError, closest

# an added token such as <start_of_image>, <|vision_pad|>, <audio>, [multimodal]: input of another modality
MODALITY_TOKEN = re.compile(r"[<\[][^<>\[\]\s]*(image|vision|video|audio|multimodal)[^<>\[\]\s]*[>\]]", re.I)

Names = "Sequence[str] | str | Callable[[str], bool] | None"
_LAYER = re.compile(r"blocks\.(\d+)\.")


class _Capture(nn.Module):
    """Stands in for the final norm under stop_at_layer (or the unembedding under return_normed): keeps the
    residual it receives and passes it on (``empty``: returns nothing, so no logits are computed)."""

    resid: torch.Tensor | None = None

    def __init__(self, empty: bool = False):
        super().__init__()
        self.empty = empty

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        self.resid = hidden_states
        return hidden_states[..., :0] if self.empty else hidden_states


def _slots(root: nn.Module, modules: list[nn.Module]) -> list[tuple[nn.Module, str]]:
    """(parent, attribute) under which each module sits in ``root``."""
    where = {id(m): name for name, m in root.named_modules(remove_duplicate=False)}
    out = []
    for m in modules:
        parent, _, attr = where[id(m)].rpartition(".")
        out.append((root.get_submodule(parent), attr))
    return out


def main_device(device_map: dict[str, Any]) -> torch.device:
    """The first device of ``device_map`` that is not "cpu" / "disk" (accelerate's main device), else CPU."""
    for d in device_map.values():
        if str(d) not in ("cpu", "disk", "meta"):
            return torch.device("cuda", d) if isinstance(d, int) else torch.device(d)
    return torch.device("cpu")


class Model:
    """uncover's one door to a network. See DESIGN.md for the contract."""

    def __init__(self, hf: nn.Module, tokenizer: Any = None, name: str | None = None):
        tune_allocator()
        self.hf = hf.eval()
        self.tokenizer = tokenizer
        self.name = name or getattr(hf.config, "name_or_path", None) or type(hf).__name__
        self.adapter = adapter_for(hf)
        self.cfg = self.adapter.config(hf)
        self._sites = self.adapter.sites(hf, self.cfg)
        # padding id for ragged batches; the caller's tokenizer is left as it was
        self._pad_id = None if tokenizer is None else (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
        self._special_ids: list[int] | None = None

    def __repr__(self) -> str:
        c = self.cfg
        return f"Model({self.name!r}, {c.architecture}, {c.n_layers} layers x {c.n_heads} heads, d_model {c.d_model})"

    @property
    def device(self) -> torch.device:
        """Where tokens go and caches gather: the model's device, or for a model split over devices with
        a device map, the first accelerator in the map (CPU when it names only "cpu" / "disk")."""
        placed = getattr(self.hf, "hf_device_map", None)
        if placed:
            return main_device(placed)
        return next(self.hf.parameters()).device

    # ---- names ------------------------------------------------------------------------------------
    def hook_names(self) -> list[str]:
        """Every standard hook name this model has, in forward order within each layer."""
        return list(self._sites)

    def resolve_names(self, names: Names, include_patterns: bool = False) -> list[str]:
        """A list of names, a glob ("blocks.*.hook_resid_post"), a predicate, or None (all but the on-request
        names: attention patterns and the edge-level names of core/edges.py; include_patterns adds them)."""
        all_names = self.hook_names()
        if names is None:
            return [n for n in all_names if include_patterns or not self._sites[n].on_request]
        if callable(names):
            return [n for n in all_names if names(n)]
        if isinstance(names, str):
            if any(c in names for c in "*?["):
                found = [n for n in all_names if fnmatch.fnmatchcase(n, names)]
                if not found:
                    raise UncoverError(f"no hook name matches '{names}'; see model.hook_names()")
                return found
            names = [names]
        for n in names:
            self._check_name(n)
        return list(names)

    def _check_name(self, name: str) -> None:
        if name not in self._sites:
            raise UncoverError(
                f"unknown hook name '{name}' for {self.cfg.architecture}; closest valid names: "
                f"{closest(name, self._sites)}. model.hook_names() lists them all."
                + getattr(self.adapter, "explain", lambda n: "")(name)
            )

    # ---- tokens -----------------------------------------------------------------------------------
    def _need_tokenizer(self) -> Any:
        if self.tokenizer is None:
            raise UncoverError("this model has no tokenizer; pass tokenizer=... to uc.load, or pass token ids")
        return self.tokenizer

    def to_tokens(
        self,
        text: str | Sequence[str],
        prepend_bos: bool | None = None,
        padding_side: str = "left",
        return_mask: bool = False,
        truncate: bool = False,
    ):
        """Tokenise -> LongTensor [batch, pos] (and the attention mask [batch, pos] if return_mask).

        BOS is prepended when the tokenizer adds one by default (prepend_bos=None), or as forced.
        Ragged lists are padded on ``padding_side`` ("left" by default, right for "right").
        """
        tok = self._need_tokenizer()
        texts = [text] if isinstance(text, str) else list(text)
        if not texts:
            raise UncoverError("empty input: pass a string or a non-empty list of strings")
        bos = tok.bos_token_id
        ids = [tok(t, add_special_tokens=True).input_ids for t in texts]
        if bos is not None and prepend_bos is not None:
            ids = [i[1:] if i[:1] == [bos] else i for i in ids]
            if prepend_bos:
                ids = [[bos] + i for i in ids]
        for t, i in zip(texts, ids):
            if not i:
                raise UncoverError(f"empty input: {t!r} has no tokens; pass some text")
        longest = max(len(i) for i in ids)
        if longest > self.cfg.n_ctx:
            if not truncate:
                raise UncoverError(
                    f"prompt has {longest} tokens but {self.name} has a context of {self.cfg.n_ctx}; "
                    "shorten it or pass truncate=True to keep the last n_ctx tokens"
                )
            ids = [i[-self.cfg.n_ctx :] for i in ids]
            longest = self.cfg.n_ctx
        if padding_side not in ("left", "right"):
            raise UncoverError(f"padding_side must be 'left' or 'right', not {padding_side!r}")
        tokens = torch.full((len(ids), longest), 0 if self._pad_id is None else self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(ids), longest), dtype=torch.long)
        for row, i in enumerate(ids):
            sl = slice(longest - len(i), longest) if padding_side == "left" else slice(0, len(i))
            tokens[row, sl] = torch.tensor(i)
            mask[row, sl] = 1
        tokens, mask = tokens.to(self.device), mask.to(self.device)
        return (tokens, mask) if return_mask else tokens

    def to_str_tokens(self, x: str | torch.Tensor | Sequence[int]) -> list[str]:
        """Each token as a string. x: text, or token ids [pos] (or [1, pos])."""
        tok = self._need_tokenizer()
        if isinstance(x, str):
            x = self.to_tokens(x)[0]
        if isinstance(x, torch.Tensor):
            x = x.reshape(-1).tolist()
        return [tok.decode([i]) for i in x]

    def to_single_token(self, s: str) -> int:
        """The id of ``s`` if it is exactly one token (without BOS), else a clear error."""
        ids = self._need_tokenizer()(s, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise UncoverError(f"{s!r} is {len(ids)} tokens for {self.name}, not one: {self.to_str_tokens(ids)}")
        return ids[0]

    def _as_tokens(self, tokens, attention_mask):
        if isinstance(tokens, str) or (isinstance(tokens, (list, tuple)) and tokens and isinstance(tokens[0], str)):
            tokens, mask = self.to_tokens(tokens, return_mask=True)
            return tokens, mask if attention_mask is None else attention_mask
        if not isinstance(tokens, torch.Tensor):
            tokens = torch.tensor(tokens)
        if tokens.ndim == 1:
            tokens = tokens[None]
        if tokens.numel() == 0:
            raise UncoverError("empty input: no tokens to run")
        if tokens.shape[1] > self.cfg.n_ctx:
            raise UncoverError(f"{tokens.shape[1]} tokens exceed the context of {self.cfg.n_ctx}; shorten the input")
        if attention_mask is not None and attention_mask.shape != tokens.shape:
            raise UncoverError(f"attention_mask {tuple(attention_mask.shape)} must match tokens {tuple(tokens.shape)}")
        return tokens.to(self.device), None if attention_mask is None else attention_mask.to(self.device)

    # ---- forward ----------------------------------------------------------------------------------
    def __call__(
        self,
        tokens,
        attention_mask: torch.Tensor | None = None,
        start_at_layer: int | None = None,
        resid_pre: torch.Tensor | None = None,
        logits_to_keep: int = 0,
        stop_at_layer: int | None = None,
        return_normed: bool = False,
    ) -> torch.Tensor:
        """Logits [batch, pos, d_vocab]. With left padding, positions count real tokens only.

        start_at_layer, resid_pre: skip the layers before ``start_at_layer`` and feed ``resid_pre``
        [batch, pos, d_model] (e.g. a cached ``blocks.{l}.hook_resid_pre``) into it; ``tokens`` still give
        the positions and the mask. Hooks of skipped layers do not see activations, so hook later layers only.
        logits_to_keep: k > 0 computes the logits of the last k positions only -> [batch, k, d_vocab].
        stop_at_layer: run only the layers before it and return the residual entering it, [batch, pos,
        d_model] (= ``blocks.{stop_at_layer}.hook_resid_pre``; ``n_layers`` gives the last layer's
        ``hook_resid_post``). Later layers, the final norm and the unembedding do not run, and their hooks
        (``blocks.{stop_at_layer}.hook_resid_pre`` included) do not fire.
        return_normed: return the unembedding's input [batch, pos, d_model] (after the final norm and its
        hooks) instead of logits, and skip the unembedding: ``self.unembed`` of it gives the logits, a chunk
        of positions at a time (``uncover.core.vocab``), so a big vocabulary's logits are never whole.
        """
        tokens, attention_mask = self._as_tokens(tokens, attention_mask)
        position_ids = None
        if attention_mask is not None and not bool(attention_mask.all()):
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        kwargs = {"logits_to_keep": logits_to_keep} if logits_to_keep and stop_at_layer is None else {}
        with self._start_at(start_at_layer, resid_pre, tokens.shape), \
                self._stop_at(stop_at_layer, start_at_layer) as stopped, self._normed(return_normed) as normed:
            logits = self.hf(
                input_ids=tokens, attention_mask=attention_mask, position_ids=position_ids, use_cache=False,
                **kwargs,
            ).logits
        return stopped.resid if stopped is not None else normed.resid if normed is not None else logits

    @contextmanager
    def _normed(self, on: bool) -> Iterator["_Capture | None"]:
        """While active (``on``), the unembedding records its input and returns nothing."""
        if not on:
            yield None
            return
        capture = _Capture(empty=True)
        ((parent, attr),) = _slots(self.hf, [head := self.adapter.lm_head(self.hf)])
        setattr(parent, attr, capture)
        try:
            yield capture
        finally:
            setattr(parent, attr, head)

    @contextmanager
    def _stop_at(self, layer: int | None, start: int | None) -> Iterator["_Capture | None"]:
        """While active, the layer list ends before ``layer``, the final norm records its input (the
        residual entering ``layer``) and the unembedding returns nothing, so no later module runs."""
        if layer is None:
            yield None
            return
        check_layer(layer, self.cfg.n_layers, "stop_at_layer", allow_end=True)
        if start is not None and layer <= start:
            raise UncoverError(f"stop_at_layer ({layer}) must be after start_at_layer ({start}); "
                               f"the residual entering layer {start} is the resid_pre you passed")
        capture = _Capture()
        layers = self.adapter.layers(self.hf)
        swaps = [(layers, nn.ModuleList(list(layers)[:layer])), (self.adapter.final_norm(self.hf), capture),
                 (self.adapter.lm_head(self.hf), _Capture(empty=True))]
        slots = _slots(self.hf, [old for old, _ in swaps])
        for (parent, attr), (_, new) in zip(slots, swaps):
            setattr(parent, attr, new)
        try:
            yield capture
        finally:
            for (parent, attr), (old, _) in zip(slots, swaps):
                setattr(parent, attr, old)

    @contextmanager
    def _start_at(self, layer: int | None, resid_pre: torch.Tensor | None, shape: torch.Size) -> Iterator[None]:
        """While active, layers before ``layer`` pass their input through and ``layer`` reads ``resid_pre``."""
        if layer is None and resid_pre is None:
            yield
            return
        want = (*shape, self.cfg.d_model)
        if layer is None or resid_pre is None or tuple(resid_pre.shape) != want:
            got = None if resid_pre is None else tuple(resid_pre.shape)
            raise UncoverError(
                f"start_at_layer needs both a layer and resid_pre of shape {want} (got layer={layer}, "
                f"resid_pre {got}); pass the cached blocks.{{layer}}.hook_resid_pre of the same tokens"
            )
        layers = self.adapter.layers(self.hf)
        check_layer(layer, self.cfg.n_layers, "start_at_layer")

        def passthrough(hidden_states, *args, **kwargs):
            return hidden_states

        def feed(module, args, kwargs):
            x = resid_pre.to(self.device)
            return ((x,) + tuple(args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": x})

        handle = layers[layer].register_forward_pre_hook(feed, prepend=True, with_kwargs=True)
        # An instance attribute shadows the class's forward; keep any instance forward already there
        # (accelerate's offloading wraps modules that way) and put it back afterwards.
        previous = [skipped.__dict__.get("forward") for skipped in layers[:layer]]
        for skipped in layers[:layer]:
            skipped.forward = passthrough
        try:
            yield
        finally:
            handle.remove()
            for skipped, before in zip(layers[:layer], previous):
                if before is None:
                    del skipped.forward
                else:
                    skipped.forward = before

    @contextmanager
    def hooks(self, fwd_hooks: Iterable[tuple[str, Fn]], force_write: bool = False) -> Iterator["Model"]:
        """Attach ``(name, fn)`` hooks for the block; fn(tensor, hook) -> tensor | None. Always removed."""
        grouped: dict[str, list[Fn]] = {}
        for name, fn in fwd_hooks:
            self._check_name(name)
            grouped.setdefault(name, []).append(fn)
        handles, patterns = [], False
        with ExitStack() as stack:
            try:
                for name, fns in grouped.items():
                    site = self._sites[name]
                    match = _LAYER.match(name)
                    point = HookPoint(name, int(match.group(1)) if match else None)
                    if site.kind == "pattern":
                        stack.enter_context(pattern_hooks(site.module, fns, point))
                        patterns = True
                    else:
                        handles += attach(site, point, fns, force_write)
                if patterns:
                    stack.enter_context(pattern_implementation(self.hf))
                yield self
            finally:
                for h in handles:
                    h.remove()

    def run_with_hooks(self, tokens, fwd_hooks: Iterable[tuple[str, Fn]] = (), attention_mask=None,
                       **forward_kwargs: Any) -> torch.Tensor:
        """Logits with ``(name, fn)`` hooks active; forward_kwargs go to ``__call__`` (start_at_layer,
        stop_at_layer -> the residual instead of logits, logits_to_keep)."""
        with self.hooks(fwd_hooks):
            return self(tokens, attention_mask=attention_mask, **forward_kwargs)

    def run_with_cache(
        self,
        tokens,
        names: Names = None,
        attention_mask: torch.Tensor | None = None,
        device: str | torch.device | None = None,
        pos_slice: int | slice | Sequence[int] | None = None,
        fwd_hooks: Iterable[tuple[str, Fn]] = (),
        **forward_kwargs: Any,
    ) -> tuple[torch.Tensor, ActivationCache]:
        """Logits and an ActivationCache of only the requested names (no gradients).

        names: list, glob pattern, predicate, or None for every name except the on-request ones (patterns, edges).
        pos_slice: keep only these positions (the query axis for patterns). device: move cached tensors.
        fwd_hooks run before caching, so the cache sees their changes. forward_kwargs go to ``__call__``
        (with ``stop_at_layer`` the first output is that residual, and later names are not cached).
        """
        store: dict[str, torch.Tensor] = {}
        device = self.device if device is None else device  # a split model's cache gathers on one device

        def save(t: torch.Tensor, hook: HookPoint) -> None:
            x = t.detach()
            if pos_slice is not None:
                index = pos_slice if isinstance(pos_slice, slice) else torch.as_tensor(pos_slice, device=x.device)
                x = x[:, :, index] if hook.name.endswith("hook_pattern") else x[:, index]
            x = x.to(device)
            if x.untyped_storage().nbytes() > x.numel() * x.element_size():
                x = x.clone()  # a slice of a bigger tensor: keep only what was asked for
            store[hook.name] = x

        names = self.resolve_names(names)
        with torch.no_grad(), self.hooks(list(fwd_hooks) + [(n, save) for n in names]):
            logits = self(tokens, attention_mask=attention_mask, **forward_kwargs)
        return logits, ActivationCache(store, self)

    def grad_cache(
        self, tokens, metric_fn: Callable[[torch.Tensor], torch.Tensor], names: Names = None,
        attention_mask: torch.Tensor | None = None, fwd_hooks: Iterable[tuple[str, Fn]] = (),
        **forward_kwargs: Any,
    ) -> tuple[torch.Tensor, ActivationCache, ActivationCache]:
        """Gradients of a scalar ``metric_fn(logits)`` with respect to hook activations.

        One forward and one backward. Returns (metric, activations, gradients); both caches hold the
        requested names with the activations' shapes. Parameters get no gradient. forward_kwargs go to
        ``__call__`` (``logits_to_keep=1`` saves the unembedding when the metric reads the last position).
        """
        names = self.resolve_names(names)
        acts: dict[str, torch.Tensor] = {}

        def leaf(t: torch.Tensor, hook: HookPoint) -> torch.Tensor | None:
            return None if t.requires_grad else t.detach().requires_grad_(True)

        def grab(t: torch.Tensor, hook: HookPoint) -> None:
            acts[hook.name] = t

        hooks = [("hook_embed", leaf)] + list(fwd_hooks) + [(n, grab) for n in names]
        with torch.enable_grad(), self.hooks(hooks, force_write=True):
            metric = metric_fn(self(tokens, attention_mask=attention_mask, **forward_kwargs))
        if metric.numel() != 1:
            raise UncoverError(f"metric_fn must return a scalar, got shape {tuple(metric.shape)}")
        grads = torch.autograd.grad(metric, [acts[n] for n in names], allow_unused=True)
        home = self.device  # a split model's activations and gradients gather on one device
        grads = {n: (torch.zeros_like(acts[n]) if g is None else g.detach()).to(home) for n, g in zip(names, grads)}
        return (
            metric.detach(),
            ActivationCache({n: a.detach().to(home) for n, a in acts.items()}, self),
            ActivationCache(grads, self),
        )

    @torch.no_grad()
    def generate(
        self,
        prompt: str | Sequence[str],
        max_new_tokens: int = 20,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        fwd_hooks: Iterable[tuple[str, Fn]] = (),
        seed: int | None = None,
        allow_special: bool = False,
    ) -> str | list[str]:
        """Continue one prompt (-> str) or a batch (-> list[str]) with hooks active at every step.

        With the KV cache, the first step runs all prompt positions and each later step only the new
        position: a hook sees [batch, prompt_len, ...] once, then [batch, 1, ...] per generated token.
        So ``positions=`` in an intervention index the prompt at the first step only.

        Tokens the tokenizer marks as special (control, chat and multimodal tokens such as Gemma's
        ``<start_of_image>``) are never generated unless ``allow_special``; end-of-sequence still ends it.
        """
        tokens, mask = self.to_tokens(prompt, return_mask=True)
        kwargs: dict[str, Any] = {"do_sample": do_sample}
        if not allow_special and (banned := self.special_token_ids()):
            kwargs["suppress_tokens"] = banned
        if do_sample:
            kwargs.update(temperature=temperature, top_k=top_k or 0, top_p=top_p or 1.0)
        else:
            kwargs.update(temperature=None, top_k=None, top_p=None)
        # a seed draws from torch's generator inside a fork of the RNG state: the caller's state is restored
        devices = [self.device] if self.device.type == "cuda" else []
        with self.hooks(fwd_hooks), torch.random.fork_rng(devices=devices, enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            out = self.hf.generate(
                input_ids=tokens, attention_mask=mask, max_new_tokens=max_new_tokens,
                pad_token_id=self._pad_id, **kwargs,
            )
        texts = self.tokenizer.batch_decode(out[:, tokens.shape[1] :], skip_special_tokens=True)
        return texts[0] if isinstance(prompt, str) else texts

    def special_token_ids(self) -> list[int]:
        """What ``generate`` never samples: ids the tokenizer marks as special, and added tokens that name
        another modality (``<start_of_image>``, ``<|vision_start|>``, ``[multimodal]``: tokenizers converted
        from GGUF keep these as plain added tokens), except end-of-sequence."""
        if self._special_ids is None:
            t = self.tokenizer
            if t is None:
                return []
            added = getattr(t, "added_tokens_decoder", {})
            special = {i for i, tok in added.items() if tok.special or MODALITY_TOKEN.fullmatch(tok.content)}
            special |= set(t.all_special_ids)
            eos = self.hf.generation_config.eos_token_id
            ends = {t.eos_token_id, *(eos if isinstance(eos, list) else [eos])}
            self._special_ids = sorted(i for i in special - ends if i is not None and 0 <= i < self.cfg.d_vocab)
        return self._special_ids

    # ---- weights ----------------------------------------------------------------------------------
    def _layer(self, l: int) -> nn.Module:
        return self.adapter.layers(self.hf)[check_layer(l, self.cfg.n_layers)]

    @property
    def W_E(self) -> torch.Tensor:
        """[d_vocab, d_model]: what hook_embed gives for each token (Gemma's scale included)."""
        return self.adapter.W_E(self.hf)

    @property
    def W_U(self) -> torch.Tensor:
        """[d_model, d_vocab]."""
        return self.adapter.W_U(self.hf)

    def W_Q(self, l: int) -> torch.Tensor:
        """[n_heads, d_model, d_head]."""
        with onloaded(layer := self._layer(l)):
            return self.adapter.W_Q(layer, self.cfg)

    def W_K(self, l: int) -> torch.Tensor:
        """[n_kv_heads, d_model, d_head]; query head h uses KV head h // (n_heads // n_kv_heads)."""
        with onloaded(layer := self._layer(l)):
            return self.adapter.W_K(layer, self.cfg)

    def W_V(self, l: int) -> torch.Tensor:
        """[n_kv_heads, d_model, d_head]."""
        with onloaded(layer := self._layer(l)):
            return self.adapter.W_V(layer, self.cfg)

    def W_O(self, l: int) -> torch.Tensor:
        """[n_heads, d_head, d_model]."""
        with onloaded(layer := self._layer(l)):
            return self.adapter.W_O(layer, self.cfg)

    def W_in(self, l: int) -> torch.Tensor:
        """[d_model, d_mlp] (the gate projection for gated MLPs)."""
        with onloaded(layer := self._layer(l)):
            return self.adapter.W_in(layer, self.cfg)

    def W_out(self, l: int) -> torch.Tensor:
        """[d_mlp, d_model]: row i is neuron i's value vector."""
        with onloaded(layer := self._layer(l)):
            return self.adapter.W_out(layer, self.cfg)

    def apply_final_norm(self, resid: torch.Tensor) -> torch.Tensor:
        """The model's own final norm on a residual [..., d_model]."""
        return self.adapter.final_norm(self.hf)(resid)

    def unembed(self, normed: torch.Tensor) -> torch.Tensor:
        """Logits from a normalised residual [..., d_model] -> [..., d_vocab] (softcap included)."""
        return self.adapter.unembed(self.hf, normed)
