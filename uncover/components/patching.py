"""Activation patching, attribution patching, path patching and ablation sweeps (survey §2.2).

Conventions (TransformerLens's): the default direction is *denoising*: the run is on the corrupted prompts
and one site at a time takes its activation from the clean run, so a high value means "this site carries
what the clean answer needs". ``direction="noise"`` does the opposite (clean run, corrupted activation).
``normalize=True`` maps the metric to ``(m - m_corrupt) / (m_clean - m_corrupt)``: 1 is clean behaviour and
0 corrupted behaviour, in both directions; otherwise values are the raw metric of each patched run.

Sites: ``resid_pre``, ``attn_out``, ``mlp_out``, and the per-head ``z``, ``q``, ``k``, ``v``, ``pattern``.
``by``: ``"layer"`` -> ``[n_layers]``, ``"pos"`` -> ``[n_layers, pos]`` (the query position for patterns),
``"head"`` -> ``[n_layers, n_heads]`` (per-head sites only; ``k`` and ``v`` have ``n_kv_heads`` under
grouped-query attention, and patching one KV head changes every query head sharing it).

Activation patching is batched: the base prompts are repeated once per patched variant along the batch
axis and each variant's rows get their own replacement, so one forward runs many patches. Each forward
starts at its earliest patched layer from the base run's cached residual (earlier layers are identical to
the base run), and ``logits_to_keep=1`` skips the unembedding of positions a last-token metric never reads.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import torch
from torch import Tensor

from uncover.errors import UncoverError

if TYPE_CHECKING:
    from uncover.core.model import Model

Metric = Callable[[Tensor], Tensor]  # logits [n, pos, vocab] -> scalar
SITES = {
    "resid_pre": "blocks.{}.hook_resid_pre",
    "attn_out": "blocks.{}.hook_attn_out",
    "mlp_out": "blocks.{}.hook_mlp_out",
    "z": "blocks.{}.attn.hook_z",
    "q": "blocks.{}.attn.hook_q",
    "k": "blocks.{}.attn.hook_k",
    "v": "blocks.{}.attn.hook_v",
    "pattern": "blocks.{}.attn.hook_pattern",
}
HEAD_SITES = ("z", "q", "k", "v", "pattern")
BY = ("layer", "pos", "head")


@dataclass
class PatchResult:
    """values: [n_layers] (by layer), [n_layers, pos] (by pos) or [n_layers, n_heads] (by head).

    normalized: whether values are on the 0 (corrupt) .. 1 (clean) scale; clean_metric and corrupt_metric
    are the unpatched runs' raw metrics. method: "activation", "attribution", "path" or "ablation".
    """

    values: Tensor
    site: str
    by: str
    method: str
    direction: str
    normalized: bool
    clean_metric: float
    corrupt_metric: float
    meta: dict = field(default_factory=dict)

    def labels(self) -> list[str]:
        """One label per entry of ``values`` in row-major order ("L3", "L3 pos5", "L3H2")."""
        if self.by == "layer":
            return [f"L{l}" for l in range(self.values.shape[0])]
        fmt = "L{}H{}" if self.by == "head" else "L{} pos{}"
        return [fmt.format(l, j) for l in range(self.values.shape[0]) for j in range(self.values.shape[1])]

    def top(self, k: int = 5, largest: bool = True) -> list[tuple[str, float]]:
        """The k entries with the largest (or smallest) values, as (label, value)."""
        flat = self.values.flatten().nan_to_num(float("-inf") if largest else float("inf"))
        idx = flat.topk(min(k, flat.numel()), largest=largest).indices
        names = self.labels()
        return [(names[i], float(self.values.flatten()[i])) for i in idx]

    def save(self, path: str | Path) -> None:
        """``path``.safetensors (values) + ``path``.json (everything else)."""
        from safetensors.torch import save_file

        path = Path(path)
        save_file({"values": self.values.contiguous()}, str(path.with_suffix(".safetensors")))
        meta = {k: getattr(self, k) for k in ("site", "by", "method", "direction", "normalized",
                                              "clean_metric", "corrupt_metric", "meta")}
        path.with_suffix(".json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, path: str | Path) -> "PatchResult":
        from safetensors.torch import load_file

        path = Path(path)
        values = load_file(str(path.with_suffix(".safetensors")))["values"]
        return cls(values=values, **json.loads(path.with_suffix(".json").read_text()))


# ---- inputs ----------------------------------------------------------------------------------------
def _tokens(model: "Model", x, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
    if isinstance(x, str) or (isinstance(x, (list, tuple)) and x and isinstance(x[0], str)):
        t, m = model.to_tokens(x, return_mask=True)
        return t, (None if bool(m.all()) else m) if mask is None else mask
    t = torch.as_tensor(x)
    return (t[None] if t.ndim == 1 else t).to(model.device), mask


def _check_pair(model: "Model", clean, corrupt, attention_mask) -> tuple[Tensor, Tensor, Tensor | None]:
    clean_t, mask = _tokens(model, clean, attention_mask)
    corrupt_t, corrupt_mask = _tokens(model, corrupt, attention_mask)
    if clean_t.shape != corrupt_t.shape:
        raise UncoverError(
            f"clean tokens {tuple(clean_t.shape)} and corrupted tokens {tuple(corrupt_t.shape)} differ in shape; "
            "patching needs pairs with the same number of prompts and tokens (see uncover.data.tasks)."
        )
    if mask is not None and corrupt_mask is not None and not torch.equal(mask.cpu(), corrupt_mask.cpu()):
        diff = (mask != corrupt_mask).any(-1).nonzero().flatten().tolist()
        raise UncoverError(f"clean and corrupted prompts {diff} are padded differently; pair prompts of equal length.")
    return clean_t, corrupt_t, mask


def _check_site(model: "Model", site: str, by: str) -> None:
    if site not in SITES:
        raise UncoverError(f"unknown patching site {site!r}; choose one of {', '.join(SITES)}.")
    if by not in BY:
        raise UncoverError(f"by={by!r} is not one of {', '.join(BY)} (layer, layer x position, layer x head).")
    if by == "head" and site not in HEAD_SITES:
        raise UncoverError(f"site {site!r} has no heads; by='head' needs one of {', '.join(HEAD_SITES)}.")


def _axes(site: str) -> tuple[int, int | None]:
    """(position axis, head axis) of a site's activation."""
    if site == "pattern":
        return 2, 1
    return 1, (2 if site in HEAD_SITES else None)


def _n_heads(model: "Model", site: str) -> int:
    return model.cfg.n_kv_heads if site in ("k", "v") else model.cfg.n_heads


def _grid(model: "Model", site: str, by: str, n_pos: int) -> list[tuple[int, int | None]]:
    """Every patched variant as (layer, index along the pos / head axis, or None for the whole layer)."""
    L = model.cfg.n_layers
    if by == "layer":
        return [(l, None) for l in range(L)]
    width = n_pos if by == "pos" else _n_heads(model, site)
    return [(l, j) for l in range(L) for j in range(width)]


def _shape(model: "Model", by: str, site: str, n_pos: int) -> tuple[int, ...]:
    L = model.cfg.n_layers
    return (L,) if by == "layer" else (L, n_pos if by == "pos" else _n_heads(model, site))


def _index(ndim: int, axis: int | None, j: int | None, rows: slice | None = None) -> tuple:
    idx: list = [slice(None)] * ndim
    if rows is not None:
        idx[0] = rows
    if j is not None:
        idx[axis] = j
    return tuple(idx)


# ---- the batched engine -------------------------------------------------------------------------
def _variant_hooks(names: dict[int, str], chunk: Sequence[tuple[int, int | None]], n: int, axis: int | None,
                   source: Callable[[int], Tensor]) -> list[tuple[str, Callable]]:
    """Hooks for one forward of ``len(chunk)`` variants stacked along the batch (``n`` rows each).

    Variant ``s`` = (layer, j) replaces rows s*n..(s+1)*n of its layer's activation at index j by
    ``source(layer)`` [n, ...] at the same index.
    """
    by_layer: dict[int, list[tuple[int, int | None]]] = {}
    for slot, (layer, j) in enumerate(chunk):
        by_layer.setdefault(layer, []).append((slot, j))

    def make(layer: int, items: list[tuple[int, int | None]]) -> Callable:
        def fn(act: Tensor, hook) -> Tensor:
            src = source(layer).to(act.dtype)
            out = act.clone()
            for slot, j in items:
                rows = slice(slot * n, (slot + 1) * n)
                out[_index(act.ndim, axis, j, rows)] = src[_index(act.ndim, axis, j)]
            return out

        return fn

    return [(names[layer], make(layer, items)) for layer, items in by_layer.items()]


@torch.no_grad()
def run_variants(
    model: "Model",
    tokens: Tensor,
    attention_mask: Tensor | None,
    metric: Metric,
    site: str,
    axis: int | None,
    variants: Sequence[tuple[int, int | None]],
    source: Callable[[int], Tensor],
    resid_pre: Callable[[int], Tensor],
    batch_size: int = 64,
    progress: Callable[[Iterable], Iterable] | None = None,
    logits_to_keep: int = 0,
) -> Tensor:
    """The metric of each variant run [len(variants)]: ``tokens`` with one site index replaced per variant.

    A variant (layer, j) replaces index j along ``axis`` (everything when j is None) of that layer's
    ``site`` activation by ``source(layer)`` [n, ...]. Up to ``batch_size`` rows (prompts x variants)
    run in one forward, starting at its earliest patched layer from resid_pre(layer), the unpatched
    run's ``hook_resid_pre`` [n, pos, d_model] (see ``_base_run``). logits_to_keep: see ``Model.__call__``.
    """
    n = tokens.shape[0]
    per_forward = max(1, batch_size // n)
    names = {l: SITES[site].format(l) for l in range(model.cfg.n_layers)}
    chunks = [variants[i: i + per_forward] for i in range(0, len(variants), per_forward)]
    out = []
    for chunk in progress(chunks) if progress else chunks:
        hooks = _variant_hooks(names, chunk, n, axis, source)
        k = len(chunk)
        big = tokens.repeat(k, 1)
        big_mask = None if attention_mask is None else attention_mask.repeat(k, 1)
        first = min(layer for layer, _ in chunk)
        logits = model.run_with_hooks(big, fwd_hooks=hooks, attention_mask=big_mask, logits_to_keep=logits_to_keep,
                                      start_at_layer=first, resid_pre=resid_pre(first).repeat(k, 1, 1))
        out += [float(metric(logits[s * n: (s + 1) * n])) for s in range(k)]
    return torch.tensor(out)


def _base_run(model: "Model", tokens: Tensor, mask: Tensor | None,
              logits_to_keep: int = 0) -> tuple[Tensor, Callable[[int], Tensor]]:
    """The unpatched run: logits and ``resid_pre(layer)`` for ``run_variants`` to start from."""
    names = [f"blocks.{l}.hook_resid_pre" for l in range(model.cfg.n_layers)]
    logits, cache = model.run_with_cache(tokens, names=names, attention_mask=mask, logits_to_keep=logits_to_keep)
    return logits, lambda l: cache[names[l]]


def _variant_axis(site: str, by: str) -> int | None:
    pos_axis, head_axis = _axes(site)
    return None if by == "layer" else (pos_axis if by == "pos" else head_axis)


def _normalised(values: Tensor, clean: float, corrupt: float, normalize: bool) -> Tensor:
    if not normalize:
        return values
    if abs(clean - corrupt) < 1e-9:
        raise UncoverError(
            f"the clean ({clean:.4g}) and corrupted ({corrupt:.4g}) metrics are equal, so normalising is "
            "undefined; check that the corruption changes the answer, or pass normalize=False."
        )
    return (values - corrupt) / (clean - corrupt)


def _direction(direction: str) -> bool:
    if direction not in ("denoise", "noise"):
        raise UncoverError(f"direction must be 'denoise' (clean into corrupted, the default) or 'noise', not {direction!r}.")
    return direction == "denoise"


def activation_patching(
    model: "Model",
    clean,
    corrupt,
    metric: Metric,
    site: str = "resid_pre",
    by: str = "layer",
    direction: str = "denoise",
    normalize: bool = True,
    attention_mask: Tensor | None = None,
    batch_size: int = 64,
    progress: Callable[[Iterable], Iterable] | None = None,
    only: Sequence[tuple[int, int | None]] | None = None,
    logits_to_keep: int = 0,
) -> PatchResult:
    """Patch one site at a time (see the module docstring) and measure ``metric`` after each patch.

    clean, corrupt: token ids [n, pos] or lists of prompts with equal token counts pair by pair.
    metric: logits [n, pos, vocab] -> scalar (e.g. ``task.metric``). batch_size: rows per forward.
    only: patch just these entries, (layer, index) or (layer, None) for by="layer"; the rest are NaN.
    logits_to_keep: k > 0 gives the metric of the patched runs the logits of the last k positions only
    ([n, k, vocab]): faster, and enough for last-token metrics such as every task's.
    """
    _check_site(model, site, by)
    denoise = _direction(direction)
    clean_t, corrupt_t, mask = _check_pair(model, clean, corrupt, attention_mask)
    names = [SITES[site].format(l) for l in range(model.cfg.n_layers)]
    base_t, src_t = (corrupt_t, clean_t) if denoise else (clean_t, corrupt_t)
    with torch.no_grad():
        src_logits, src_cache = model.run_with_cache(src_t, names=names, attention_mask=mask,
                                                     logits_to_keep=logits_to_keep)
        base_logits, base_resid = _base_run(model, base_t, mask, logits_to_keep)
    m_src, m_base = float(metric(src_logits)), float(metric(base_logits))
    m_clean, m_corrupt = (m_src, m_base) if denoise else (m_base, m_src)
    grid = _grid(model, site, by, clean_t.shape[1])
    variants = grid if only is None else [(int(l), None if j is None else int(j)) for l, j in only]
    unknown = [v for v in variants if v not in grid]
    if unknown:
        raise UncoverError(f"only= entries {unknown[:3]} are not (layer, index) pairs of this {site} by {by} grid.")
    measured = run_variants(model, base_t, mask, metric, site, _variant_axis(site, by), variants,
                            lambda l: src_cache[names[l]], base_resid, batch_size, progress, logits_to_keep)
    values = torch.full((len(grid),), float("nan"))
    values[[grid.index(v) for v in variants]] = measured
    values = values.reshape(_shape(model, by, site, clean_t.shape[1]))
    return PatchResult(_normalised(values, m_clean, m_corrupt, normalize), site, by, "activation", direction,
                       normalize, m_clean, m_corrupt)


def attribution_patching(
    model: "Model",
    clean,
    corrupt,
    metric: Metric,
    site: str = "resid_pre",
    by: str = "layer",
    direction: str = "denoise",
    normalize: bool = True,
    attention_mask: Tensor | None = None,
    logits_to_keep: int = 0,
) -> PatchResult:
    """The linear estimate of ``activation_patching`` (Nanda 2023; Syed 2023): two forwards, one backward.

    Patching a site from a to a' changes the metric by about (a' - a) . dm/da at the base run; the
    products are summed over the patched entries (and the prompts). Values are the estimated patched
    metric (base metric + estimate), normalised the same way as activation patching.
    logits_to_keep: as in ``activation_patching`` (for both runs).
    """
    _check_site(model, site, by)
    denoise = _direction(direction)
    clean_t, corrupt_t, mask = _check_pair(model, clean, corrupt, attention_mask)
    names = [SITES[site].format(l) for l in range(model.cfg.n_layers)]
    base_t, src_t = (corrupt_t, clean_t) if denoise else (clean_t, corrupt_t)
    m_base, acts, grads = model.grad_cache(base_t, metric, names, attention_mask=mask, logits_to_keep=logits_to_keep)
    with torch.no_grad():
        src_logits, src_cache = model.run_with_cache(src_t, names=names, attention_mask=mask,
                                                     logits_to_keep=logits_to_keep)
    m_src, m_base = float(metric(src_logits)), float(m_base)
    axis = _variant_axis(site, by)
    rows = []
    for name in names:
        effect = (src_cache[name].float() - acts[name].float()) * grads[name].float()
        keep = [d for d in range(effect.ndim) if d != axis] if axis is not None else list(range(effect.ndim))
        rows.append(effect.sum(dim=keep))
    values = m_base + torch.stack(rows).cpu()
    m_clean, m_corrupt = (m_src, m_base) if denoise else (m_base, m_src)
    return PatchResult(_normalised(values, m_clean, m_corrupt, normalize), site, by, "attribution", direction,
                       normalize, m_clean, m_corrupt)


@torch.no_grad()
def path_patching(
    model: "Model",
    clean,
    corrupt,
    metric: Metric,
    receivers: Sequence[tuple[int, int]] | str = "logits",
    receiver_input: str | Sequence[str] = "q",
    direction: str = "denoise",
    normalize: bool = True,
    attention_mask: Tensor | None = None,
    batch_size: int = 64,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> PatchResult:
    """Path patching (Wang 2022) from each sender head to receiver heads' q/k/v inputs, or to the logits.

    For each sender head: (1) run the base prompts with the sender's output (hook_z) taken from the source
    run and every other head's output frozen at its base value (MLPs are recomputed), and record the
    receivers' inputs; (2) run the base prompts again with only those receiver inputs patched in, and
    measure ``metric``. With ``receivers="logits"`` step (1)'s logits are measured directly. For k and v
    the receiver's KV head is patched, which its grouped-query siblings share. Returns [n_layers, n_heads]
    over senders; senders in or after the last receiver layer have no path and are NaN.
    """
    denoise = _direction(direction)
    clean_t, corrupt_t, mask = _check_pair(model, clean, corrupt, attention_mask)
    cfg = model.cfg
    inputs = [receiver_input] if isinstance(receiver_input, str) else list(receiver_input)
    if any(i not in ("q", "k", "v") for i in inputs):
        raise UncoverError(f"receiver_input must be 'q', 'k', 'v' or a list of them, not {receiver_input!r}.")
    to_logits = isinstance(receivers, str)
    if to_logits and receivers != "logits":
        raise UncoverError(f"receivers must be 'logits' or a list of (layer, head), not {receivers!r}.")
    recv = [] if to_logits else [(int(l), int(h)) for l, h in receivers]
    for l, h in recv:
        if not (0 <= l < cfg.n_layers and 0 <= h < cfg.n_heads):
            raise UncoverError(f"receiver head ({l}, {h}) is outside {cfg.n_layers} layers x {cfg.n_heads} heads.")
    last = cfg.n_layers if to_logits else max(l for l, _ in recv)
    z_names = [SITES["z"].format(l) for l in range(cfg.n_layers)]
    base_t, src_t = (corrupt_t, clean_t) if denoise else (clean_t, corrupt_t)
    src_logits, src_cache = model.run_with_cache(src_t, names=z_names, attention_mask=mask)
    resid_names = [f"blocks.{l}.hook_resid_pre" for l in range(cfg.n_layers)]
    base_logits, base_cache = model.run_with_cache(base_t, names=z_names + resid_names, attention_mask=mask)
    m_src, m_base = float(metric(src_logits)), float(metric(base_logits))
    senders = [(l, h) for l in range(min(last + (1 if to_logits else 0), cfg.n_layers)) for h in range(cfg.n_heads)]
    senders = [(l, h) for l, h in senders if to_logits or l < last]
    group = cfg.n_heads // cfg.n_kv_heads
    n = base_t.shape[0]
    per_forward = max(1, batch_size // n)
    chunks = [senders[i: i + per_forward] for i in range(0, len(senders), per_forward)]
    values = torch.full((cfg.n_layers, cfg.n_heads), float("nan"))
    for chunk in progress(chunks) if progress else chunks:
        k = len(chunk)
        big = base_t.repeat(k, 1)
        big_mask = None if mask is None else mask.repeat(k, 1)

        def freeze(l: int):
            def fn(z: Tensor, hook) -> Tensor:
                out = base_cache[z_names[l]].to(z.dtype).repeat(k, 1, 1, 1)
                for slot, (sl, sh) in enumerate(chunk):
                    if sl == l:
                        out[slot * n: (slot + 1) * n, :, sh] = src_cache[z_names[l]][:, :, sh]
                return out
            return fn

        hooks = [(z_names[l], freeze(l)) for l in range(cfg.n_layers)]
        def start(layer: int) -> dict:  # layers before ``layer`` run exactly as in the base run
            return {"start_at_layer": layer, "resid_pre": base_cache[resid_names[layer]].repeat(k, 1, 1)}

        first_sender = min(l for l, _ in chunk)
        if to_logits:
            logits = model.run_with_hooks(big, fwd_hooks=hooks, attention_mask=big_mask, **start(first_sender))
        else:
            recorded: dict[str, Tensor] = {}
            rec_names = sorted({SITES[i].format(l) for l, _ in recv for i in inputs})

            def record(t: Tensor, hook) -> None:
                recorded[hook.name] = t.clone()

            first_receiver = min(l for l, _ in recv)  # its inputs are recorded in this run
            model.run_with_hooks(big, fwd_hooks=hooks + [(r, record) for r in rec_names], attention_mask=big_mask,
                                 **start(min(first_sender, first_receiver)))

            def patch_receivers(t: Tensor, hook) -> Tensor:
                l = hook.layer
                kind = hook.name.rsplit("hook_", 1)[1]
                heads = {h if kind == "q" else h // group for rl, h in recv if rl == l}
                out = t.clone()
                for h in heads:
                    out[:, :, h] = recorded[hook.name][:, :, h]
                return out

            logits = model.run_with_hooks(big, fwd_hooks=[(r, patch_receivers) for r in rec_names],
                                          attention_mask=big_mask, **start(first_receiver))
        for slot, (sl, sh) in enumerate(chunk):
            values[sl, sh] = float(metric(logits[slot * n: (slot + 1) * n]))
    m_clean, m_corrupt = (m_src, m_base) if denoise else (m_base, m_src)
    meta = {"receivers": "logits" if to_logits else recv, "receiver_input": inputs}
    return PatchResult(_normalised(values, m_clean, m_corrupt, normalize), "z", "head", "path", direction,
                       normalize, m_clean, m_corrupt, meta)


def ablation_source(model: "Model", tokens: Tensor, site: str, kind: str, attention_mask: Tensor | None = None,
                    reference: Tensor | None = None, seed: int = 0) -> Callable[[int], Tensor]:
    """``source(layer)`` giving the ablated activation [n, ...] of ``site`` for ``tokens``.

    zero: zeros. mean: the mean over ``reference`` (default: ``tokens``) prompts and positions.
    resample: the activation of another prompt: ``reference`` rows (same token count) if given, else
    ``tokens`` rows shuffled so that no prompt keeps its own.
    """
    from uncover.core.interventions import mean_activations

    if kind not in ("zero", "mean", "resample"):
        raise UncoverError(f"ablation kind must be 'zero', 'mean' or 'resample', not {kind!r}.")
    names = [SITES[site].format(l) for l in range(model.cfg.n_layers)]
    n = tokens.shape[0]
    _, cache = model.run_with_cache(tokens, names=names, attention_mask=attention_mask)
    if kind == "zero":
        return lambda l: torch.zeros_like(cache[names[l]])
    if kind == "mean":
        ref = tokens if reference is None else reference
        ref_mask = attention_mask if reference is None else None
        means = mean_activations(model, ref, names, attention_mask=ref_mask)
        return lambda l: means[names[l]].expand_as(cache[names[l]])
    if reference is None:
        if n < 2:
            raise UncoverError("resample ablation needs at least 2 prompts (or reference= prompts to draw from).")
        g = torch.Generator().manual_seed(seed)
        perm = (torch.arange(n) + torch.randint(1, n, (n,), generator=g)) % n  # never a prompt's own row
        return lambda l: cache[names[l]][perm.to(cache[names[l]].device)]
    if reference.shape[1] != tokens.shape[1]:
        raise UncoverError(f"resample reference has {reference.shape[1]} tokens per prompt, the prompts {tokens.shape[1]}; they must match.")
    _, ref_cache = model.run_with_cache(reference, names=names)
    g = torch.Generator().manual_seed(seed)
    pick = torch.randint(reference.shape[0], (n,), generator=g)
    return lambda l: ref_cache[names[l]][pick.to(ref_cache[names[l]].device)]


def ablation_sweep(
    model: "Model",
    tokens,
    metric: Metric,
    site: str = "z",
    by: str = "head",
    kind: str = "zero",
    attention_mask: Tensor | None = None,
    reference: Tensor | None = None,
    seed: int = 0,
    batch_size: int = 64,
    progress: Callable[[Iterable], Iterable] | None = None,
    logits_to_keep: int = 0,
) -> PatchResult:
    """Ablate one site at a time (zero / mean / resample, see ``ablation_source``) and measure ``metric``.

    Values are raw metrics of each ablated run; ``clean_metric`` is the unablated run's metric.
    logits_to_keep: as in ``activation_patching``.
    """
    _check_site(model, site, by)
    tokens, mask = _tokens(model, tokens, attention_mask)
    source = ablation_source(model, tokens, site, kind, mask, reference, seed)
    with torch.no_grad():
        logits, resid = _base_run(model, tokens, mask, logits_to_keep)
    m = float(metric(logits))
    variants = _grid(model, site, by, tokens.shape[1])
    values = run_variants(model, tokens, mask, metric, site, _variant_axis(site, by), variants, source, resid,
                          batch_size, progress, logits_to_keep)
    values = values.reshape(_shape(model, by, site, tokens.shape[1]))
    return PatchResult(values, site, by, "ablation", kind, False, m, float("nan"), {"kind": kind})


def head_ablation_hooks(model: "Model", heads: Sequence[tuple[int, int]], kind: str = "zero",
                        values: dict[str, Tensor] | None = None) -> list[tuple[str, Callable]]:
    """Hooks that ablate a set of heads together (their hook_z), for ``model.hooks(...)``.

    values: for mean ablation, ``mean_activations(model, tokens, names)`` of the hook_z names.
    """
    from uncover.core.interventions import ablate

    by_layer: dict[int, list[int]] = {}
    for l, h in heads:
        by_layer.setdefault(int(l), []).append(int(h))
    hooks = []
    for l, hs in sorted(by_layer.items()):
        name = SITES["z"].format(l)
        vals = None if values is None else values[name]
        hooks.append((name, ablate(kind, heads=hs, values=vals)))
    return hooks


def patch_task(model: "Model", task, site: str = "z", by: str = "head", method: str = "activation",
               **kwargs) -> PatchResult:
    """Activation or attribution patching on a task from ``uncover.data.tasks`` with its own metric."""
    fn = {"activation": activation_patching, "attribution": attribution_patching}.get(method)
    if fn is None:
        raise UncoverError(f"method must be 'activation' or 'attribution', not {method!r}.")
    kwargs.setdefault("logits_to_keep", 1)  # task metrics read the last position only
    result = fn(model, task.clean, task.corrupt, task.metric, site=site, by=by,
                attention_mask=task.attention_mask, **kwargs)
    result.meta.update({"task": task.name, "n_prompts": len(task), "metric": task.metric_unit})
    return result
