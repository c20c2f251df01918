"""Activation patching, attribution patching, path patching and ablation sweeps (survey §2.2).

Conventions (TransformerLens's): the default direction is *denoising*: the run is on the corrupted prompts
and one site at a time takes its activation from the clean run, so a high value means "this site carries
what the clean answer needs". ``direction="noise"`` does the opposite (clean run, corrupted activation).
``normalize=True`` maps the metric to ``(m - m_corrupt) / (m_clean - m_corrupt)``: 1 is clean behaviour and
0 corrupted behaviour, in both directions; otherwise values are the raw metric of each patched run.

Sites: any per-layer site of ``uncover.core.names`` as a short name (``resid_pre``, ``attn_out``, ``mlp_out``,
the per-head ``z``, ``q``, ``k``, ``v``, ``pattern``, ``result`` ...) or a ``Site`` (whose layers / heads
restrict the sweep; the rest is NaN). ``by``: ``"layer"`` -> ``[n_layers]``, ``"pos"`` -> ``[n_layers, pos]``
(the query position for patterns), ``"head"`` -> ``[n_layers, n_heads]`` (per-head sites only; ``k`` and
``v`` have ``n_kv_heads`` under grouped-query attention, and patching one KV head changes every query head
sharing it).

Every sweep runs on ``uncover.core.variants``: many patched variants per forward, each forward starting at
its earliest patched layer from the base run's cached residual, and ``logits_to_keep=1`` skipping the
unembedding of positions a last-token metric never reads.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import torch
from torch import Tensor

from uncover.core import interventions as iv
from uncover.core.names import HEAD_AXES, SITES as ALL_SITES, Positions, Site, check_layers
from uncover.core.results import Progress, Result, no_progress
from uncover.core.variants import BaseRun, attribution, base_run, rows_per_forward, run_variants
from uncover.errors import UncoverError

if TYPE_CHECKING:
    from uncover.core.model import Model

Metric = Callable[[Tensor], Tensor]  # logits [n, pos, vocab] -> scalar
SITES = {k: v for k, v in ALL_SITES.items() if "{}" in v}  # short name -> "blocks.{}...." per-layer pattern
HEAD_SITES = tuple(k for k in HEAD_AXES if k in SITES)
BY = ("layer", "pos", "head")


@dataclass
class PatchResult(Result):
    """values: [n_layers] (by layer), [n_layers, pos] (by pos) or [n_layers, n_heads] (by head).

    normalized: whether values are on the 0 (corrupt) .. 1 (clean) scale; clean_metric and corrupt_metric
    are the unpatched runs' raw metrics. method: "activation", "attribution", "path" or "ablation".
    Saved with ``save(folder)`` / ``PatchResult.load(folder)`` (uncover's one result format).
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


def _check_site(model: "Model", site: "str | Site", by: str) -> Site:
    """The site as a ``Site`` (short names, suffixes, full names and dicts are accepted)."""
    name = site.name if isinstance(site, Site) else site
    if isinstance(name, str) and name not in SITES and name.split(".")[-1].removeprefix("hook_") not in SITES:
        raise UncoverError(f"unknown patching site {name!r}; choose one of {', '.join(SITES)}.")
    spec = Site.coerce(site)
    if by not in BY:
        raise UncoverError(f"by={by!r} is not one of {', '.join(BY)} (layer, layer x position, layer x head).")
    if by == "head" and spec.name not in HEAD_SITES:
        raise UncoverError(f"site {spec.name!r} has no heads; by='head' needs one of {', '.join(HEAD_SITES)}.")
    spec.layer_list(model.cfg.n_layers)  # range check
    return spec


def _n_heads(model: "Model", site: str) -> int:
    return model.cfg.n_kv_heads if site in ("k", "v") else model.cfg.n_heads


def _names(model: "Model", site: str) -> list[str]:
    return [SITES[site].format(l) for l in range(model.cfg.n_layers)]


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


def _selected(model: "Model", spec: Site, by: str, n_pos: int, positions, only) -> list[tuple[int, int | None]]:
    """The grid entries to run: ``only`` if given, else those in the Site's layers / heads and ``positions``."""
    grid = _grid(model, spec.name, by, n_pos)
    if only is not None:
        variants = [(int(l), None if j is None else int(j)) for l, j in only]
        unknown = [v for v in variants if v not in grid]
        if unknown:
            raise UncoverError(f"only= entries {unknown[:3]} are not (layer, index) pairs of this {spec.name} by "
                               f"{by} grid.")
        return variants
    layers = set(spec.layer_list(model.cfg.n_layers))
    keep = None
    if by == "head" and spec.heads is not None:
        keep = set(spec.heads)
    if by == "pos" and positions is not None:
        keep = set(Positions.coerce(positions).resolve(n_pos)[0])
    return [(l, j) for l, j in grid if l in layers and (keep is None or j in keep)]


def _edit(name: str, by: str, j: int | None, source: Tensor) -> list[tuple[str, Callable]]:
    """The one edit of a patched variant: ``source`` [n, ...] written at index j of the by-axis."""
    key = {"head": "heads", "pos": "positions"}.get(by)
    return [(name, iv.patch(source, **({} if j is None else {key: [j]})))]


def _sweep(model: "Model", base: BaseRun, metric: Metric, spec: Site, by: str,
           variants: Sequence[tuple[int, int | None]], source: Callable[[int], Tensor], batch_size: int,
           max_bytes: int | None, progress: Progress, logits_to_keep: int) -> Tensor:
    """The metric of each (layer, j) variant [len(variants)]: the site's index j taken from ``source(layer)``."""
    names = _names(model, spec.name)
    edits = [_edit(names[l], by, j, source(l)) for l, j in variants]
    out = run_variants(model, base, edits, lambda logits, _: float(metric(logits)), logits_to_keep=logits_to_keep,
                       batch_size=batch_size, max_bytes=max_bytes, progress=progress,
                       description=f"patching {spec.name} by {by}")
    return torch.tensor(out)


def _placed(model: "Model", spec: Site, by: str, n_pos: int, variants, measured: Tensor) -> Tensor:
    grid = _grid(model, spec.name, by, n_pos)
    values = torch.full((len(grid),), float("nan"))
    if variants:
        values[[grid.index(v) for v in variants]] = measured
    return values.reshape(_shape(model, by, spec.name, n_pos))


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
    site: "str | Site" = "resid_pre",
    by: str = "layer",
    direction: str = "denoise",
    normalize: bool = True,
    attention_mask: Tensor | None = None,
    batch_size: int = 64,
    progress: Progress = no_progress,
    only: Sequence[tuple[int, int | None]] | None = None,
    logits_to_keep: int = 0,
    positions: "Positions | Sequence[int] | str | None" = None,
    max_bytes: int | None = None,
) -> PatchResult:
    """Patch one site at a time (see the module docstring) and measure ``metric`` after each patch.

    clean, corrupt: token ids [n, pos] or lists of prompts with equal token counts pair by pair.
    metric: logits [n, pos, vocab] -> scalar (e.g. ``task.metric``). batch_size: rows per forward;
    max_bytes: a memory budget per forward (see ``uncover.core.variants``).
    only: patch just these entries, (layer, index) or (layer, None) for by="layer"; the rest are NaN.
    A ``Site`` with layers / heads, or ``positions`` (by="pos"), restrict the sweep the same way.
    logits_to_keep: k > 0 gives the metric of the patched runs the logits of the last k positions only
    ([n, k, vocab]): faster, and enough for last-token metrics such as every task's.
    """
    spec = _check_site(model, site, by)
    denoise = _direction(direction)
    clean_t, corrupt_t, mask = _check_pair(model, clean, corrupt, attention_mask)
    names = _names(model, spec.name)
    base_t, src_t = (corrupt_t, clean_t) if denoise else (clean_t, corrupt_t)
    with torch.no_grad():
        src_logits, src_cache = model.run_with_cache(src_t, names=names, attention_mask=mask,
                                                     logits_to_keep=logits_to_keep)
    base = base_run(model, base_t, mask, logits_to_keep=logits_to_keep)
    m_src, m_base = float(metric(src_logits)), float(metric(base.output))
    m_clean, m_corrupt = (m_src, m_base) if denoise else (m_base, m_src)
    n_pos = clean_t.shape[1]
    variants = _selected(model, spec, by, n_pos, positions, only)
    measured = _sweep(model, base, metric, spec, by, variants, lambda l: src_cache[names[l]], batch_size, max_bytes,
                      progress, logits_to_keep)
    values = _placed(model, spec, by, n_pos, variants, measured)
    return PatchResult(_normalised(values, m_clean, m_corrupt, normalize), spec.name, by, "activation", direction,
                       normalize, m_clean, m_corrupt)


def attribution_patching(
    model: "Model",
    clean,
    corrupt,
    metric: Metric,
    site: "str | Site" = "resid_pre",
    by: str = "layer",
    direction: str = "denoise",
    normalize: bool = True,
    attention_mask: Tensor | None = None,
    logits_to_keep: int = 0,
) -> PatchResult:
    """The linear estimate of ``activation_patching`` (Nanda 2023; Syed 2023): two forwards, one backward.

    Patching a site from a to a' changes the metric by about (a' - a) . dm/da at the base run
    (``uncover.core.variants.attribution``); the products are summed over the patched entries (and the
    prompts). Values are the estimated patched metric (base metric + estimate), normalised the same way as
    activation patching. logits_to_keep: as in ``activation_patching`` (for both runs).
    """
    spec = _check_site(model, site, by)
    denoise = _direction(direction)
    clean_t, corrupt_t, mask = _check_pair(model, clean, corrupt, attention_mask)
    names = _names(model, spec.name)
    base_t, src_t = (corrupt_t, clean_t) if denoise else (clean_t, corrupt_t)
    with torch.no_grad():
        src_logits, src_cache = model.run_with_cache(src_t, names=names, attention_mask=mask,
                                                     logits_to_keep=logits_to_keep)
    m_base, effects = attribution(model, base_t, metric, names, src_cache, attention_mask=mask,
                                  logits_to_keep=logits_to_keep)
    m_src = float(metric(src_logits))
    axis = None if by == "layer" else (spec.pos_axis if by == "pos" else spec.head_axis)
    rows = []
    for name in names:
        effect = effects[name]
        keep = [d for d in range(effect.ndim) if d != axis] if axis is not None else list(range(effect.ndim))
        rows.append(effect.sum(dim=keep))
    values = m_base + torch.stack(rows).cpu()
    n_pos = clean_t.shape[1]
    variants = _selected(model, spec, by, n_pos, None, None)
    if len(variants) < len(_grid(model, spec.name, by, n_pos)):  # a Site with layers / heads: the rest is NaN
        values = _placed(model, spec, by, n_pos, variants,
                         torch.stack([values[l] if j is None else values[l, j] for l, j in variants]))
    m_clean, m_corrupt = (m_src, m_base) if denoise else (m_base, m_src)
    return PatchResult(_normalised(values, m_clean, m_corrupt, normalize), spec.name, by, "attribution", direction,
                       normalize, m_clean, m_corrupt)


def _receivers(model: "Model", receivers, receiver_input) -> tuple[bool, list[tuple[int, int]], list[str]]:
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
    return to_logits, recv, inputs


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
    progress: Progress = no_progress,
    max_bytes: int | None = None,
) -> PatchResult:
    """Path patching (Wang 2022) from each sender head to receiver heads' q/k/v inputs, or to the logits.

    For each sender head: (1) run the base prompts with the sender's output (hook_z) taken from the source
    run and every other head's output frozen at its base value (MLPs are recomputed), and record the
    receivers' inputs; (2) run the base prompts again with only those receiver inputs patched in, and
    measure ``metric``. With ``receivers="logits"`` step (1)'s logits are measured directly; otherwise
    step (1) stops after the last receiver layer. For k and v the receiver's KV head is patched, which its
    grouped-query siblings share. Returns [n_layers, n_heads] over senders; senders in or after the last
    receiver layer have no path and are NaN.
    """
    denoise = _direction(direction)
    clean_t, corrupt_t, mask = _check_pair(model, clean, corrupt, attention_mask)
    cfg = model.cfg
    to_logits, recv, inputs = _receivers(model, receivers, receiver_input)
    last = cfg.n_layers if to_logits else max(l for l, _ in recv)
    z_names = _names(model, "z")
    base_t, src_t = (corrupt_t, clean_t) if denoise else (clean_t, corrupt_t)
    src_logits, src_cache = model.run_with_cache(src_t, names=z_names, attention_mask=mask)
    base = base_run(model, base_t, mask, names=z_names)
    m_src, m_base = float(metric(src_logits)), float(metric(base.output))
    senders = [(l, h) for l in range(min(last + (1 if to_logits else 0), cfg.n_layers)) for h in range(cfg.n_heads)]
    senders = [(l, h) for l, h in senders if to_logits or l < last]
    n = base_t.shape[0]

    def freeze(l: int) -> Callable:  # every head's output at its base value (the senders' edits come after)
        def fn(z: Tensor, hook) -> Tensor:
            return base.cache[z_names[l]].to(z.dtype).repeat(z.shape[0] // n, 1, 1, 1)
        return fn

    frozen = [(z_names[l], freeze(l)) for l in range(cfg.n_layers)]
    sender_edits = [[(z_names[l], iv.patch(src_cache[z_names[l]], heads=[h]))] for l, h in senders]
    measure = lambda logits, _: float(metric(logits))  # noqa: E731
    common = dict(batch_size=batch_size, max_bytes=max_bytes)
    if to_logits:
        out = run_variants(model, base, sender_edits, measure, hooks=frozen, progress=progress,
                           description="path patching", **common)
    else:
        group = cfg.n_heads // cfg.n_kv_heads
        rec_names = sorted({SITES[i].format(l) for l, _ in recv for i in inputs})
        heads = {name: sorted({h if name.endswith("hook_q") else h // group for l, h in recv
                               if name.startswith(f"blocks.{l}.")}) for name in rec_names}
        per_forward = max(1, rows_per_forward(model, base_t.shape[1], batch_size, max_bytes) // n)
        groups = [sender_edits[i: i + per_forward] for i in range(0, len(senders), per_forward)]
        out = []
        for edits in progress(groups, "path patching"):
            # (1) the receivers' inputs with each sender's path active; the layers after them do not run
            recorded = run_variants(model, base, edits, lambda _, rec: rec, hooks=frozen, record=rec_names,
                                    stop_at_layer=last + 1, **common)
            # (2) only those inputs patched in
            patched = [[(name, iv.patch(rec[name], heads=heads[name])) for name in rec_names] for rec in recorded]
            out += run_variants(model, base, patched, measure, **common)
    values = torch.full((cfg.n_layers, cfg.n_heads), float("nan"))
    for (sl, sh), value in zip(senders, out):
        values[sl, sh] = value
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
    if kind not in ("zero", "mean", "resample"):
        raise UncoverError(f"ablation kind must be 'zero', 'mean' or 'resample', not {kind!r}.")
    site = Site.coerce(site).name
    names = _names(model, site)
    n = tokens.shape[0]
    _, cache = model.run_with_cache(tokens, names=names, attention_mask=attention_mask)
    if kind == "zero":
        return lambda l: torch.zeros_like(cache[names[l]])
    if kind == "mean":
        ref = tokens if reference is None else reference
        ref_mask = attention_mask if reference is None else None
        means = iv.mean_activations(model, ref, names, attention_mask=ref_mask)
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
    site: "str | Site" = "z",
    by: str = "head",
    kind: str = "zero",
    attention_mask: Tensor | None = None,
    reference: Tensor | None = None,
    seed: int = 0,
    batch_size: int = 64,
    progress: Progress = no_progress,
    logits_to_keep: int = 0,
    positions: "Positions | Sequence[int] | str | None" = None,
    max_bytes: int | None = None,
) -> PatchResult:
    """Ablate one site at a time (zero / mean / resample, see ``ablation_source``) and measure ``metric``.

    Values are raw metrics of each ablated run (NaN outside a ``Site``'s layers / heads or ``positions``);
    ``clean_metric`` is the unablated run's metric. logits_to_keep: as in ``activation_patching``.
    """
    spec = _check_site(model, site, by)
    tokens, mask = _tokens(model, tokens, attention_mask)
    source = ablation_source(model, tokens, spec.name, kind, mask, reference, seed)
    base = base_run(model, tokens, mask, logits_to_keep=logits_to_keep)
    m = float(metric(base.output))
    n_pos = tokens.shape[1]
    variants = _selected(model, spec, by, n_pos, positions, None)
    measured = _sweep(model, base, metric, spec, by, variants, source, batch_size, max_bytes, progress,
                      logits_to_keep)
    values = _placed(model, spec, by, n_pos, variants, measured)
    return PatchResult(values, spec.name, by, "ablation", kind, False, m, float("nan"), {"kind": kind})


def head_ablation_hooks(model: "Model", heads: Sequence[tuple[int, int]], kind: str = "zero",
                        values: dict[str, Tensor] | None = None) -> list[tuple[str, Callable]]:
    """Hooks that ablate a set of heads together (their hook_z), for ``model.hooks(...)``.

    values: for mean ablation, ``mean_activations(model, tokens, names)`` of the hook_z names.
    """
    by_layer: dict[int, list[int]] = {}
    for l, h in heads:
        by_layer.setdefault(int(l), []).append(int(h))
    hooks = []
    for l, hs in sorted(by_layer.items()):
        name = SITES["z"].format(l)
        vals = None if values is None else values[name]
        hooks.append((name, iv.ablate(kind, heads=hs, values=vals)))
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
