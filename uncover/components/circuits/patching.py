"""Exact edge patching in one forward: every receiver sees the ablated value of the edges removed from it.

A run with mask ``keep`` [n_sources, n_receivers] (1 keeps an edge, 0 removes it, fractions in between)
adds to each receiver's input ``sum_s (1 - keep[s, r]) * (ablated_s - current_s)``, where ``current_s`` is
what source ``s`` wrote in *this* run and ``ablated_s`` its ablation value (the corrupted prompt's, zero, a
mean or a resampled prompt's). Removing every edge gives the fully ablated run; keeping every edge the model.
One forward per mask, whatever the number of edges; masks batch through the core variant engine, and a
mask that requires grad gives gradients with respect to edge masks.

A head's source value is its contribution to the residual: ``attn.hook_result`` (core/edges.py), times
the residual multiplier of models that scale residual additions. Where a post-attention RMS norm sits
between the heads and the residual (Gemma 2 / 3), the norm's scale is taken from the run (the head's share
of ``norm(sum of heads)`` is ``weight * result_h / rms(sum)``): the layer's heads together contribute
exactly the normed output, a single head linearly at that scale. ``check_decomposition`` verifies on the
actual prompts that the heads' values sum to what the layer adds, and refuses models where they don't.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from uncover.components.circuits.graph import KINDS, Graph, graph_bytes
from uncover.core.budget import working_bytes
from uncover.core.progress import Progress, no_progress
from uncover.core.variants import BaseRun, base_run, run_variants
from uncover.errors import UncoverError

if TYPE_CHECKING:
    from uncover.core.model import Model
    from uncover.data.tasks import Task

ABLATIONS = ("corrupt", "zero", "mean", "resample")
EMBED = "blocks.0.hook_resid_pre"


def source_hooks(graph: Graph) -> list[str]:
    """The hook names whose values are the sources, in source order (embedding, then per layer heads, MLP)."""
    names = [EMBED]
    for l in range(graph.n_layers):
        names += [f"blocks.{l}.attn.hook_result"] + ([f"blocks.{l}.hook_mlp_out"] if graph.mlp else [])
    return names


def logits_hook(model: "Model") -> str:
    return f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"


def _post_norm(model: "Model", layer: int) -> nn.Module | None:
    """The RMS norm between the heads and the residual, or None where the heads' projection writes the
    residual itself (``check_decomposition`` verifies either reading on real prompts)."""
    out = model.adapter.attn_out_module(model.adapter.layers(model.hf)[layer])
    if "norm" not in type(out).__name__.lower():
        return None
    if model.cfg.normalization != "rms" or not hasattr(out, "weight"):
        raise UncoverError(
            f"{model.name}: the attention output of layer {layer} passes through {type(out).__name__} before the "
            "residual, and only an RMS post-norm can be split into per-head contributions; run circuits at node "
            "level (components.patching: activation_patching / attribution_patching by head) instead"
        )
    return out


def head_contributions(model: "Model", layer: int, result: Tensor) -> Tensor:
    """Each head's contribution to the residual [b, p, head, d_model] from ``attn.hook_result`` of ``layer``."""
    scale = float(getattr(model.adapter, "residual_scale", 1.0))
    norm = _post_norm(model, layer)
    if norm is None:
        return result * scale if scale != 1.0 else result
    total = result.sum(dim=2, keepdim=True).float()
    inv_rms = torch.rsqrt(total.pow(2).mean(-1, keepdim=True) + model.adapter.norm_eps(norm))
    weight = model.adapter.norm_weight(norm).detach().float().to(result.device)
    return (result.float() * inv_rms * weight * scale).to(result.dtype)


def sources_from_cache(model: "Model", graph: Graph, cache: Any) -> Tensor:
    """The source values [n_sources, b, p, d_model] of a run whose cache holds ``source_hooks(graph)``."""
    parts = [cache[EMBED][None]]
    for l in range(graph.n_layers):
        parts.append(head_contributions(model, l, cache[f"blocks.{l}.attn.hook_result"]).permute(2, 0, 1, 3))
        if graph.mlp:
            parts.append(cache[f"blocks.{l}.hook_mlp_out"][None])
    return torch.cat(parts, dim=0)


def check_decomposition(model: "Model", cache: Any, attention_mask: Tensor | None = None, atol: float = 1e-3) -> None:
    """Check on a run's cache (``attn.hook_result`` and ``hook_attn_out`` of every layer) that every layer's
    heads sum to what its attention adds to the residual, up to a constant (a bias): otherwise removing edges
    would not remove what they carry."""
    for l in range(model.cfg.n_layers):
        heads = head_contributions(model, l, cache[f"blocks.{l}.attn.hook_result"]).sum(2).float()
        rest = cache[f"blocks.{l}.hook_attn_out"].float() - heads
        if attention_mask is not None:
            rest = rest[attention_mask.bool()]
        spread = float((rest - rest.reshape(-1, rest.shape[-1]).mean(0)).abs().max())
        scale = float(cache[f"blocks.{l}.hook_attn_out"].float().abs().max()) + 1e-6
        if spread > atol * max(1.0, scale):
            raise UncoverError(
                f"{model.name}: the heads of layer {l} do not sum to the layer's attention output (max difference "
                f"{spread:.3g}), so its edges cannot be patched exactly; use node-level patching instead"
            )


def _check_task(model: "Model", task: "Task") -> None:
    if task.clean.shape != task.corrupt.shape:
        raise UncoverError(f"clean prompts {tuple(task.clean.shape)} and corrupted prompts {tuple(task.corrupt.shape)} "
                           "differ in shape; each pair must have the same number of tokens")
    if task.attention_mask is not None and task.clean_prompts and task.corrupt_prompts and model.tokenizer is not None:
        bad = [i for i, (a, b) in enumerate(zip(task.clean_prompts, task.corrupt_prompts))
               if len(model.tokenizer(a)["input_ids"]) != len(model.tokenizer(b)["input_ids"])]
        if bad:
            shown = "; ".join(f"{i}: {task.clean_prompts[i]!r} vs {task.corrupt_prompts[i]!r}" for i in bad[:5])
            raise UncoverError(f"{len(bad)} clean / corrupted prompt pairs differ in length ({shown}); edges "
                               "line up position by position, so pair prompts with the same number of tokens")


@dataclass
class EdgePatcher:
    """Edge-patched runs of ``task``'s clean prompts (see the module docstring).

    values: ablation values of the sources [n_sources, n, pos, d_model] (source-first, so a receiver's sources
    are one contiguous block and patching is a matrix product); clean: the clean run's [same];
    clean_logits, ablated_logits: last-position logits [n, d_vocab] of the model and of the run with every
    edge removed (for corrupted-input patching: the corrupted run; otherwise computed on first use).
    """

    model: "Model"
    task: "Task"
    graph: Graph
    ablation: str
    values: Tensor
    clean: Tensor
    clean_logits: Tensor
    batch_size: int = 32
    _ablated: Tensor | None = field(default=None, repr=False)
    _base: BaseRun | None = field(default=None, repr=False)
    _diff: Tensor | None = field(default=None, repr=False)

    @classmethod
    def build(cls, model: "Model", task: "Task", ablation: str = "corrupt", reference: Tensor | None = None,
              seed: int = 0, max_bytes: int | None = None, batch_size: int = 32) -> "EdgePatcher":
        """Cache the clean and ablation source values. ablation: corrupt (the task's corrupted prompts),
        zero, mean (over ``reference`` tokens [m, pos], default the corrupted prompts), resample (each prompt
        gets another corrupted prompt's values, by a generator seeded with ``seed``). max_bytes: the graph's
        memory limit (default: half the available memory, or less under a memory budget)."""
        if ablation not in ABLATIONS:
            raise UncoverError(f"unknown ablation {ablation!r}; choose one of {', '.join(ABLATIONS)}")
        _check_task(model, task)
        graph = Graph.of(model)
        n, p = task.clean.shape
        need = graph_bytes(graph, n, p, model.cfg.d_model)
        room = working_bytes(model)  # the memory budget's room beside the weights, if one is set
        budget = max_bytes if max_bytes is not None else min(_available_bytes() // 2, room or 1 << 62)
        if need > budget:
            raise UncoverError(
                f"the edge graph of {model.name} ({graph.n_edges:,} edges) on {n} prompts x {p} tokens needs about "
                f"{need / 2**30:.1f} GiB, over the {budget / 2**30:.1f} GiB budget; use fewer or shorter prompts, "
                "raise max_bytes, or score nodes instead (components.patching.attribution_patching by head)"
            )
        mask = task.attention_mask
        names = source_hooks(graph)
        check = [f"blocks.{l}.hook_attn_out" for l in range(graph.n_layers)]
        ablated = None
        with torch.no_grad():
            clean_out, clean_cache = model.run_with_cache(task.clean, names=names + check, attention_mask=mask,
                                                          logits_to_keep=1)
            check_decomposition(model, clean_cache, mask)
            clean = sources_from_cache(model, graph, clean_cache)
            del clean_cache
            if ablation == "zero":
                values = torch.zeros_like(clean)
            else:
                ref = task.corrupt if reference is None or ablation != "mean" else reference
                ref_mask = mask if ref is task.corrupt else None
                ref_out, ref_cache = model.run_with_cache(ref, names=names, attention_mask=ref_mask, logits_to_keep=1)
                ref_values = sources_from_cache(model, graph, ref_cache)
                if ablation == "corrupt":  # every edge removed: exactly the corrupted run
                    values, ablated = ref_values, ref_out[:, -1]
                elif ablation == "mean":
                    if ref_values.shape[2] != p:
                        raise UncoverError(f"mean ablation reference has {ref_values.shape[2]} positions, the task {p}")
                    values = ref_values.mean(1, keepdim=True).expand_as(clean).clone()
                else:
                    g = torch.Generator().manual_seed(seed)
                    perm = torch.randperm(n, generator=g)
                    values = ref_values[:, perm]
        return cls(model, task, graph, ablation, values, clean, clean_out[:, -1], batch_size=batch_size, _ablated=ablated)

    def differences(self) -> Tensor:
        """ablated - clean source values, float32 [n_sources, n * pos * d_model] (computed once)."""
        if self._diff is None:
            self._diff = (self.values - self.clean).float().reshape(self.values.shape[0], -1)
        return self._diff

    @property
    def ablated_logits(self) -> Tensor:
        """Last-position logits [n, d_vocab] with every edge removed."""
        if self._ablated is None:
            self._ablated = self.run([torch.zeros(self.graph.n_sources, self.graph.n_receivers)])[0]
        return self._ablated

    # ---- the hooks of one patched run ----------------------------------------------------------
    def hooks(self, keep: Tensor, added: Mapping[int, Tensor] | None = None) -> list[tuple[str, Callable]]:
        """Hook functions that patch the edges ``keep`` [n_sources, n_receivers] removes (fresh for each
        forward). Layers before the first receiver with a removed edge run as in the clean run, so the hooks
        start there, from the clean sources (the variant engine then starts the forward at that layer).
        A ``keep`` that requires grad gives gradients with respect to the mask (run with force_write).
        added: {receiver: [n, pos, d_model]} added to that receiver's input, e.g. other runs' values of some
        of its removed edges less their ablation values (causal scrubbing: edges from several input batches)."""
        added = added or {}
        model, graph, values = self.model, self.graph, self.values
        graph.check_scores(keep, "keep")
        ablate = (1 - keep.to(values.device, values.dtype)) * graph.allowed.to(values.device)
        grad = keep.requires_grad
        start = 0 if grad else min([self.first_layer(ablate)] + [r // graph._recv_stride for r in added])
        k0 = graph.sources_before(start) if start else 0
        S, b, p, d = values.shape
        # diff[s] = ablated_s - current_s, filled in as the sources run (out of place when differentiating)
        parts: list[Tensor] = [values[:k0] - self.clean[:k0]] if k0 else []
        diff = None if grad else values.clone()
        if diff is not None and k0:
            diff[:k0] -= self.clean[:k0]
        filled = [k0]
        # running sums of the differences over the first k sources, {k: [b * p * d]} (not when differentiating)
        prefix = {} if grad else {k0: diff[:k0].reshape(k0, -1).sum(0) if k0 else torch.zeros(b * p * d)}

        def record(kind: str, layer: int | None = None) -> Callable:
            def fn(t: Tensor, hook) -> None:
                new = head_contributions(model, layer, t).permute(2, 0, 1, 3) if kind == "heads" else t[None]
                i, j = filled[0], filled[0] + new.shape[0]
                if diff is None:
                    parts.append(values[i:j] - new)
                else:
                    diff[i:j] -= new
                    prefix[j] = prefix[i] + diff[i:j].reshape(j - i, -1).sum(0)
                filled[0] = j
            return fn

        def receive(k: int, cols: slice | int) -> Callable:
            w = ablate[:k, cols]  # [k, heads] or [k]: the weight of each source's difference
            w2 = w if w.dim() == 2 else w[:, None]
            extra = _added(added, cols, (b, p, d))  # [b, p, d], [b, p, heads, d] or None
            if not grad and not bool((w != 0).any()):
                return (lambda t, hook: None) if extra is None else (lambda t, hook: t + extra.to(t.dtype))
            # Every receiver of a group reads all k earlier sources, so sum_s w diff_s = sum_s diff_s -
            # sum_s kept diff_s: a small circuit (few kept rows) costs one sum, not a product with every row.
            kept = 1 - w2
            complement = not grad and int(kept.ne(0).sum()) < int(w2.ne(0).sum())
            # the few nonzero weights as a sparse [heads, k] matrix: only their rows of src are read
            sparse = None if grad else (kept if complement else w2).T.to_sparse()

            def fn(t: Tensor, hook) -> Tensor:
                src = (diff if diff is not None else torch.cat(parts))[:k].reshape(k, -1)  # [k, b * p * d]
                if grad:
                    out = w2.T @ src
                elif complement:
                    out = prefix[k][None] - torch.sparse.mm(sparse, src)
                else:
                    out = torch.sparse.mm(sparse, src)
                out = out.view(b, p, d) if isinstance(cols, int) else out.view(-1, b, p, d).permute(1, 2, 0, 3)
                return t + (out if extra is None else out + extra).to(t.dtype)
            return fn

        H, fns = graph.n_heads, [] if start else [(EMBED, record("embed"))]
        for l in range(start, model.cfg.n_layers):
            k = graph.sources_before(l)
            for kind in KINDS:
                first = graph.head_receiver(l, 0, kind)
                fns.append((f"blocks.{l}.hook_{kind}_input", receive(k, slice(first, first + H))))
            fns.append((f"blocks.{l}.attn.hook_result", record("heads", l)))
            if graph.mlp:
                fns.append((f"blocks.{l}.hook_mlp_in", receive(graph.sources_before(l, mlp=True), graph.mlp_receiver(l))))
                fns.append((f"blocks.{l}.hook_mlp_out", record("mlp")))
        fns.append((logits_hook(model), receive(graph.n_sources, graph.logits_receiver)))
        return fns

    def first_layer(self, ablate: Tensor) -> int:
        """The first layer with a receiver that has a removed edge (the last layer if only the logits do)."""
        g = self.graph
        per_layer = ablate[:, : g.logits_receiver].reshape(g.n_sources, g.n_layers, g._recv_stride)
        hit = per_layer.ne(0).any(dim=2).any(dim=0).nonzero()
        return int(hit[0]) if len(hit) else g.n_layers - 1

    # ---- runs ----------------------------------------------------------------------------------
    @torch.no_grad()
    def run(self, keeps: Sequence[Tensor], progress: Progress = no_progress) -> list[Tensor]:
        """Last-position logits [n, d_vocab] of the clean prompts with each mask's edges removed."""
        if self._base is None:  # the clean run the variants start from (its residuals), once per patcher
            self._base = base_run(self.model, self.task.clean, self.task.attention_mask, logits_to_keep=1)
        base, n = self._base, self.task.clean.shape[0]
        # hooks hold a [n_sources, n, pos, d_model] buffer each: build them for one forward's masks at a time
        per_forward = max(1, self.batch_size // n)
        groups = [keeps[i:i + per_forward] for i in range(0, len(keeps), per_forward)]
        out: list[Tensor] = []
        for group in progress(groups, "circuits"):
            out += run_variants(self.model, base, [self.hooks(k) for k in group], lambda o, _: o[:, -1],
                                logits_to_keep=1, batch_size=per_forward * n)
        return out

    def run_with_grad(self, keep: Tensor) -> Tensor:
        """Last-position logits [n, d_vocab] of one mask ``keep`` (float, requires grad) with the autograd
        graph kept, so ``torch.autograd.grad(metric, keep)`` gives the metric's gradient per edge."""
        if not keep.requires_grad:
            raise UncoverError("run_with_grad needs a mask that requires grad: keep.requires_grad_(True)")
        with torch.enable_grad(), self.model.hooks(self.hooks(keep), force_write=True):
            return self.model(self.task.clean, attention_mask=self.task.attention_mask, logits_to_keep=1)[:, -1]

    def metric(self, logits: Tensor) -> float:
        """The task's metric of last-position logits [n, d_vocab]."""
        return float(self.task.metric(logits[:, None]))

    def faithfulness(self, logits: Tensor) -> float:
        """(m(circuit) - m(ablated)) / (m(model) - m(ablated)) for last-position logits of a circuit run."""
        full, none = self.metric(self.clean_logits), self.metric(self.ablated_logits)
        if abs(full - none) < 1e-9:
            raise UncoverError("the model and the fully ablated model score the same on this task: faithfulness is "
                               "undefined; choose another ablation or a task the model does")
        return (self.metric(logits) - none) / (full - none)

    def kl(self, logits: Tensor) -> float:
        """Mean KL(model || run) of the last-position distributions (nats)."""
        p = torch.log_softmax(self.clean_logits.float(), -1)
        q = torch.log_softmax(logits.float(), -1)
        return float((p.exp() * (p - q)).sum(-1).mean())


def _added(added: Mapping[int, Tensor], cols: slice | int, shape: tuple[int, int, int]) -> Tensor | None:
    """The inputs ``added`` gives the receivers ``cols`` (one receiver: [b, p, d]; a slice of heads:
    [b, p, heads, d], zeros for heads it leaves out), or None where it gives them nothing."""
    if isinstance(cols, int):
        return added.get(cols)
    rows = range(cols.start, cols.stop)
    if not any(r in added for r in rows):
        return None
    some = next(added[r] for r in rows if r in added)
    return torch.stack([added[r] if r in added else some.new_zeros(shape) for r in rows], dim=2)


def _available_bytes() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover - psutil ships with the dependencies
        return 8 << 30
