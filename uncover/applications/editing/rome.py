"""ROME (Meng et al. 2022): rewrite one fact with a rank-one update of one MLP output matrix.

The MLP output projection at layer l is a linear memory: key k (``blocks.{l}.mlp.hook_post``, [d_mlp])
-> value v = k @ W_out(l) ([d_model]). ROME picks

* the key k*: the mean key at the subject's last token over random text prefixes,
* the value v* = k* @ W + delta: delta (added to the MLP output at the subject's last token) is optimised
  so the model says the new target, with a KL term keeping what the model says about the subject
  ("{subject} is a") and a norm penalty,

and writes W' = W + u delta^T / (u . k*) with u = C^-1 k* (C = E[k k^T] over a corpus), so k* @ W' = v*
exactly while keys unlike k* (in C's metric) barely move. Edits are plain tensors applied to the weight
(``model.W_out(l)`` is a view of the Hugging Face parameter) and are undone bit for bit.

    >>> edit = rome(model, EditRequest("Eiffel Tower", "The {} is located in the city of", " Rome"))
    >>> model.generate("The Eiffel Tower is in")   # ... Rome
    >>> edit.restore(model)
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Iterator, Sequence

import torch

from uncover.applications.editing.tracing import subject_span
from uncover.core.results import Progress, Result, no_progress
from uncover.errors import UncoverError

if TYPE_CHECKING:
    from uncover.core.model import Model
    from uncover.data.facts import Fact


@dataclass(frozen=True)
class EditRequest:
    """Make ``prompt.format(subject)`` continue with ``target`` (e.g. " Rome", leading space included)."""

    subject: str
    prompt: str
    target: str

    def __post_init__(self) -> None:
        if self.prompt.count("{}") != 1:
            raise UncoverError(f"prompt {self.prompt!r} needs exactly one '{{}}' where the subject goes, "
                               "e.g. '{} is located in'")
        if not self.subject or not self.target:
            raise UncoverError("subject and target must be non-empty (target like ' Rome', with its space)")

    @property
    def text(self) -> str:
        return self.prompt.format(self.subject)

    @classmethod
    def from_fact(cls, fact: "Fact", target: str) -> "EditRequest":
        from uncover.data.facts import RELATIONS

        return cls(fact.subject, RELATIONS[fact.relation].templates[0], target)


@dataclass
class RomeConfig:
    """Hyper-parameters. layer None: the layer where causal tracing of the prompt peaks for MLPs.

    n_prefixes random corpus prefixes of prefix_len tokens (plus the bare prompt) average the key and
    train the value; steps/lr: Adam on delta; kl_weight: KL to the unedited "{subject} is a"
    distribution; weight_decay: penalty on |delta|^2 / |v|^2; clamp: |delta| <= clamp * |v| (None: CLAMP, or
    NORMED_CLAMP where the MLP output passes a norm before the residual, see ``default_clamp``);
    cov_tokens: corpus tokens for C (cached); cov_ridge: C + ridge * mean(diag C) * I.
    """

    layer: int | None = None
    n_prefixes: int = 5
    prefix_len: int = 8
    steps: int = 25
    lr: float = 0.5
    kl_weight: float = 0.0625
    weight_decay: float = 0.1
    clamp: float | None = None
    stop_loss: float = 0.05
    essence_prompt: str = "{} is a"
    cov_tokens: int = 20_000
    cov_ridge: float = 1e-4
    seed: int = 0


CLAMP = 4.0         # ROME's clamp_norm_factor
NORMED_CLAMP = 1.0  # where a post-norm follows the MLP output (Gemma): see default_clamp


def output_is_normed(model: "Model", layer: int) -> bool:
    """True where the MLP output passes a norm before the residual (Gemma's post-feedforward norm)."""
    out = model.adapter.mlp_out_module(model.adapter.layers(model.hf)[layer])
    return "norm" in type(out).__name__.lower()


def default_clamp(model: "Model", layer: int) -> float:
    """The bound on |delta| / |v| when RomeConfig.clamp is None.

    A norm after the MLP output removes its scale: the block writes a vector of fixed size whatever |v + delta|,
    so a delta beyond |v| buys the edit little and is what the rank-one update hands, scaled by each key's
    overlap with k*, to every other subject. On gemma3-270m (held-out tuning facts, layer 5) clamp 4 -> 1
    keeps efficacy and paraphrase at 100% and raises neighbourhood from 43% to 83%; on smollm2-135m, without
    such a norm, clamp 1 loses efficacy (100% -> 83%), so ROME's 4 stays there."""
    return NORMED_CLAMP if output_is_normed(model, layer) else CLAMP


# ---- closed forms ------------------------------------------------------------------------------
def rank_one_update(W: torch.Tensor, key: torch.Tensor, value: torch.Tensor, C: torch.Tensor | None = None,
                    ridge: float = 0.0) -> torch.Tensor:
    """ROME's update Delta [d_in, d_out] for key @ W = ... -> key @ (W + Delta) = value.

    W: [d_in, d_out] (rows = keys' coordinates), key [d_in], value [d_out], C [d_in, d_in] the keys'
    second moment (identity if None). Delta = u (value - key @ W)^T / (u . key), u = (C + ridge I)^-1 key.
    """
    k, v = key.double(), value.double()
    if C is None:
        u = k
    else:
        C = C.double()
        eye = torch.eye(C.shape[0], dtype=C.dtype, device=C.device)
        u = torch.linalg.solve(C + ridge * C.diagonal().mean() * eye, k)
    residual = v - k @ W.double()
    return torch.outer(u, residual) / (u @ k)


# ---- applying weight edits ---------------------------------------------------------------------
def _weight(model: "Model", layer: int) -> torch.Tensor:
    """``model.W_out(layer)`` [d_mlp, d_model], checked to be a view of a model parameter."""
    W = model.W_out(layer)
    ptrs = {p.untyped_storage().data_ptr() for p in model.hf.parameters()}
    if W.untyped_storage().data_ptr() not in ptrs:
        raise UncoverError(f"W_out({layer}) of {model.name} is not a view of a parameter; "
                           "editing needs the core adapter to return a view")
    return W


@dataclass
class WeightEdit(Result):
    """Additive changes to MLP output matrices: deltas[layer] [d_mlp, d_model] (W_out orientation).

    ``apply`` keeps the original weights; ``restore`` copies them back (bitwise identical).
    tensors: what the method solved for (ROME: "key" k* [d_mlp], "value" v* [d_model]); info: JSON metadata.
    """

    deltas: dict[int, torch.Tensor]
    requests: list[EditRequest]
    method: str
    info: dict = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    _originals: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def applied(self) -> bool:
        return bool(self._originals)

    @torch.no_grad()
    def apply(self, model: "Model") -> "WeightEdit":
        if self.applied:
            raise UncoverError("this edit is already applied; call restore(model) first")
        for layer, delta in self.deltas.items():
            W = _weight(model, layer)
            self._originals[layer] = W.detach().clone()
            W.add_(delta.to(W.device, W.dtype))
        return self

    @torch.no_grad()
    def restore(self, model: "Model") -> None:
        if not self.applied:
            raise UncoverError("this edit is not applied, so there is nothing to restore")
        for layer, original in self._originals.items():
            _weight(model, layer).copy_(original)
        self._originals.clear()

    @contextmanager
    def applied_to(self, model: "Model") -> Iterator["Model"]:
        """``with edit.applied_to(model): ...`` applies the edit for the block, then restores it."""
        self.apply(model)
        try:
            yield model
        finally:
            self.restore(model)

    def to_fields(self) -> dict:
        """Saved without the originals of an applied edit (they belong to the model it is applied to)."""
        return {"deltas": self.deltas, "requests": self.requests, "method": self.method, "info": self.info,
                "tensors": self.tensors}


# ---- keys and values through hooks -------------------------------------------------------------
def context_prefixes(model: "Model", n: int, length: int, seed: int = 0) -> list[str]:
    """``n`` random corpus snippets of about ``length`` tokens, each ending in ". ", plus ""."""
    from uncover.data.corpus import corpus_tokens

    if n == 0:
        return [""]
    rows = corpus_tokens(model, n, length + 1, seed=seed)
    texts = model.tokenizer.batch_decode(rows, skip_special_tokens=True)
    return [""] + [" ".join(t.split()) + ". " for t in texts]


def last_subject_positions(model: "Model", texts: Sequence[str], subjects: Sequence[str],
                           mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last subject token (the subject's last occurrence) in left-padded rows."""
    width = mask.shape[1]
    pos = [width - int(mask[row].sum()) + subject_span(model, text, subject, last=True)[1] - 1
           for row, (text, subject) in enumerate(zip(texts, subjects))]
    return torch.tensor(pos)


@torch.no_grad()
def mean_keys(model: "Model", layer: int, requests: Sequence[EditRequest], prefixes: Sequence[str],
              batch_size: int = 64) -> torch.Tensor:
    """k* per request: the mean key at the subject's last token over ``prefixes`` -> [n_requests, d_mlp]."""
    texts = [p + r.text for r in requests for p in prefixes]
    subjects = [r.subject for r in requests for _ in prefixes]
    keys = []
    for start in range(0, len(texts), batch_size):
        chunk, chunk_subjects = texts[start:start + batch_size], subjects[start:start + batch_size]
        tokens, mask = model.to_tokens(chunk, return_mask=True)
        pos = last_subject_positions(model, chunk, chunk_subjects, mask)
        _, cache = model.run_with_cache(tokens, names=[f"blocks.{layer}.mlp.hook_post"], attention_mask=mask)
        acts = cache[f"blocks.{layer}.mlp.hook_post"]
        keys.append(acts[torch.arange(len(pos)), pos.to(acts.device)].double().cpu())
    return torch.cat(keys).view(len(requests), len(prefixes), -1).mean(1)


def target_ids(model: "Model", target: str) -> list[int]:
    ids = model.tokenizer.encode(target, add_special_tokens=False)
    if not ids:
        raise UncoverError(f"target {target!r} has no tokens; pass a word like ' Rome'")
    return ids


@dataclass
class _DeltaBatch:
    """Rows for optimising deltas: per request, its prefixed prompts + target, then one KL row.

    Prompts are left-padded; the target's tokens but its last are appended on the right (mask 0 pads
    shorter targets and the KL rows). The target token j of an LM row is predicted at width - 1 + j.
    """

    tokens: torch.Tensor        # [rows, pos]
    mask: torch.Tensor          # [rows, pos]
    subject_pos: torch.Tensor   # [rows] last subject token of each row
    request: torch.Tensor       # [rows] which request a row belongs to
    kl_rows: torch.Tensor       # [n] the "{subject} is a" row of each request
    target_row: torch.Tensor    # [n_target_tokens] (row, position, token id) of every target token
    target_pos: torch.Tensor
    target_id: torch.Tensor
    width: int


def _delta_batch(model: "Model", requests: Sequence[EditRequest], prefixes: Sequence[str],
                 essence_prompt: str) -> _DeltaBatch:
    texts, subjects, owner, targets = [], [], [], []
    for i, r in enumerate(requests):
        ids = target_ids(model, r.target)
        for text in [p + r.text for p in prefixes] + [essence_prompt.format(r.subject)]:
            texts.append(text)
            subjects.append(r.subject)
            owner.append(i)
            targets.append(ids)
        targets[-1] = []  # the KL row predicts nothing
    tokens, mask = model.to_tokens(texts, return_mask=True)
    width = tokens.shape[1]
    subject_pos = last_subject_positions(model, texts, subjects, mask)
    extra = max(len(t) for t in targets) - 1
    appended = torch.zeros(len(texts), max(extra, 0), dtype=tokens.dtype)
    appended_mask = torch.zeros_like(appended)
    t_row, t_pos, t_id = [], [], []
    for row, ids in enumerate(targets):
        appended[row, :len(ids) - 1] = torch.tensor(ids[:-1], dtype=tokens.dtype)
        appended_mask[row, :len(ids) - 1] = 1
        for j, tok in enumerate(ids):
            t_row.append(row)
            t_pos.append(width - 1 + j)
            t_id.append(tok)
    return _DeltaBatch(
        tokens=torch.cat([tokens.cpu(), appended], 1).to(model.device),
        mask=torch.cat([mask.cpu(), appended_mask], 1).to(model.device),
        subject_pos=subject_pos, request=torch.tensor(owner),
        kl_rows=torch.tensor([row for row, ids in enumerate(targets) if not ids]),
        target_row=torch.tensor(t_row), target_pos=torch.tensor(t_pos), target_id=torch.tensor(t_id), width=width,
    )


def optimise_deltas(
    model: "Model",
    requests: Sequence[EditRequest],
    site: str,
    to_site: torch.Tensor | None,
    base_norms: torch.Tensor,
    prefixes: Sequence[str],
    cfg: "RomeConfig",
    progress: Progress = no_progress,
) -> tuple[torch.Tensor, list[dict]]:
    """Optimise one vector delta_i [d_model] per request, added at the subject's last token, so the
    model predicts the target after every prefixed prompt; KL keeps "{subject} is a" unchanged.

    Loss_i = mean target NLL + kl_weight * KL(before || after) + weight_decay * |delta_i|^2 / |v_i|^2,
    Adam, |delta_i| clamped to clamp * |v_i|; a request stops (and keeps its delta) once its NLL is
    below stop_loss. site: hook name where delta is added; to_site [d_model, d_site] maps delta into
    that site's space (None: identity); base_norms [n]: |v_i|. Requests share one batch (their losses
    are independent). Returns deltas [n, d_model] (float64) and per-request logs of NLL and KL.
    """
    n = len(requests)
    b = _delta_batch(model, requests, prefixes, cfg.essence_prompt)
    device = model.device
    n_targets = torch.zeros(n).index_add_(0, b.request[b.target_row], torch.ones(len(b.target_row)))
    with torch.no_grad():
        base_logp = model(b.tokens[b.kl_rows], attention_mask=b.mask[b.kl_rows])[:, b.width - 1]
        base_logp = base_logp.float().log_softmax(-1).cpu()

    delta = torch.zeros(n, model.cfg.d_model, requires_grad=True)
    final = torch.zeros(n, model.cfg.d_model)
    opt = torch.optim.Adam([delta], lr=cfg.lr)
    rows = torch.arange(len(b.tokens), device=device)
    to_site = None if to_site is None else to_site.to(device)

    def add_delta(x: torch.Tensor, hook) -> torch.Tensor:
        d = delta.to(device, x.dtype)
        d = d if to_site is None else d @ to_site.to(x.dtype)
        x = x.clone()
        x[rows, b.subject_pos.to(device)] += d[b.request.to(device)]
        return x

    logs = [{"nll": [], "kl": []} for _ in range(n)]
    active = torch.ones(n, dtype=torch.bool)
    for _ in progress(range(cfg.steps), "optimising the new value"):
        with torch.enable_grad(), model.hooks([(site, add_delta)]):
            logits = model(b.tokens, attention_mask=b.mask)
            logp = logits[b.target_row.to(device), b.target_pos.to(device)].float().log_softmax(-1).cpu()
            token_nll = -logp[torch.arange(len(b.target_id)), b.target_id]
            nll = torch.zeros(n).index_add(0, b.request[b.target_row], token_nll) / n_targets
            new_logp = logits[b.kl_rows.to(device), b.width - 1].float().log_softmax(-1).cpu()
            kl = (base_logp.exp() * (base_logp - new_logp)).sum(-1)
            decay = (delta.norm(dim=-1) / base_norms.float()) ** 2
            loss = nll + cfg.kl_weight * kl + cfg.weight_decay * decay
            for i in range(n):
                logs[i]["nll"].append(nll[i].item())
                logs[i]["kl"].append(kl[i].item())
            done = active & (nll.detach() < cfg.stop_loss)
            final[done] = delta.detach()[done]
            active &= ~done
            if not active.any():
                break
            (grad,) = torch.autograd.grad((loss * active.float()).sum(), [delta])
        delta.grad = grad
        opt.step()
        with torch.no_grad():
            limit = cfg.clamp * base_norms.float()
            norms = delta.norm(dim=-1)
            delta.mul_(torch.where(norms > limit, limit / norms.clamp(min=1e-12), torch.ones_like(norms))[:, None])
    final[active] = delta.detach()[active]
    return final.double(), logs


# ---- ROME --------------------------------------------------------------------------------------
def edit_layer_from_trace(model: "Model", request: EditRequest, n_samples: int = 5, window: int = 10) -> int:
    """The layer whose MLP window restores the most at the subject's last token (causal tracing)."""
    from uncover.applications.editing.tracing import trace

    text = request.text
    start, end = subject_span(model, text, request.subject, last=True)
    result = trace(model, text, request.subject, kinds=["mlp"], window=window, n_samples=n_samples,
                   positions=[end - 1])
    return result.peak("mlp", position=end - 1)[0]


def rome(
    model: "Model",
    request: EditRequest,
    cfg: RomeConfig | None = None,
    apply: bool = True,
    covariance: torch.Tensor | None = None,
    progress: Progress = no_progress,
) -> WeightEdit:
    """Compute (and by default apply) a ROME edit; returns the WeightEdit (``restore`` undoes it).

    covariance: the key second moment at the edit layer [d_mlp, d_mlp] (default: ``key_covariance``
    with ``cfg.cov_tokens`` corpus tokens, cached on disk).
    """
    from uncover.applications.editing.covariance import key_covariance

    cfg = cfg or RomeConfig()
    layer = edit_layer_from_trace(model, request) if cfg.layer is None else cfg.layer
    if not 0 <= layer < model.cfg.n_layers:
        raise UncoverError(f"layer {layer} out of range: {model.name} has layers 0..{model.cfg.n_layers - 1}")
    if cfg.clamp is None:
        cfg = replace(cfg, clamp=default_clamp(model, layer))
    if covariance is None:
        covariance = key_covariance(model, layer, cfg.cov_tokens, progress=progress)[layer].mom2
    W = _weight(model, layer).detach()
    prefixes = context_prefixes(model, cfg.n_prefixes, cfg.prefix_len, cfg.seed)
    key = mean_keys(model, layer, [request], prefixes)[0]   # float64, on the CPU like the covariance
    Wd = W.double().to(key.device)                          # the small linear algebra runs beside the keys
    value = key @ Wd
    to_site = torch.linalg.pinv(Wd).float()  # [d_model, d_mlp]: delta @ to_site @ W = delta
    deltas, logs = optimise_deltas(model, [request], f"blocks.{layer}.mlp.hook_post", to_site,
                                   value.norm()[None], prefixes, cfg, progress)
    target_value = value + deltas[0].to(value.device)
    update = rank_one_update(Wd, key, target_value, covariance.to(key.device), cfg.cov_ridge)
    edit = WeightEdit(
        deltas={layer: update.to(W.dtype).cpu()}, requests=[request], method="rome",
        info={"layer": layer, "nll": logs[0]["nll"], "kl": logs[0]["kl"], "delta_norm": deltas[0].norm().item(),
              "value_norm": value.norm().item(), "config": asdict(cfg)},
        tensors={"key": key, "value": target_value},
    )
    return edit.apply(model) if apply else edit
