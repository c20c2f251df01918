"""Physically smaller models: remove a plan's heads and neurons from the projections, save, measure.

``prune_model(model, plan)`` returns a new ``Model`` whose attention and MLP projections only hold the kept
heads' and neurons' weights (the original is untouched). Its logits equal the masked model's
(``plan.hooks()``) up to float rounding. ``save_pruned(pruned, folder)`` writes a Hugging Face folder:
``uncover.load(folder)`` reads it, and ``transformers.AutoModelForCausalLM.from_pretrained(folder,
trust_remote_code=True)`` reads it through the saved ``modeling_uncover_pruned.py`` (the format is
described in ``uncover.core.pruned``). Families: Llama, Mistral, Qwen2/3, Gemma 1/2/3.
"""
from __future__ import annotations

import copy
import json
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from uncover.applications.pruning.plan import PruningPlan
from uncover.core.pruned import CLASS_NAME, LAYOUT_KEY, MODELING_FILE, modeling_source, shrink
from uncover.errors import UncoverError

if TYPE_CHECKING:
    from uncover.core.model import Model

SUPPORTED = ("llama", "qwen3", "gemma", "gemma2", "gemma3")


def _check_supported(model: "Model", plan: PruningPlan) -> None:
    if getattr(model.hf.config, LAYOUT_KEY, None) is not None:
        raise UncoverError("this model is already physically pruned; plan every removal on the original model "
                           "(iterative pruning uses masks) and call prune_model once")
    if model.adapter.name not in SUPPORTED:
        raise UncoverError(
            f"physical pruning supports the {', '.join(SUPPORTED)} families (separate q/k/v/o and gate/up/down "
            f"projections); {model.adapter.name} has fused projections. Mask it instead: "
            "model.hooks(plan.hooks())")
    c = model.cfg
    if (plan.n_layers, plan.n_heads, plan.d_mlp) != (c.n_layers, c.n_heads, c.d_mlp):
        raise UncoverError(f"the plan is for {plan.n_layers} layers x {plan.n_heads} heads, d_mlp {plan.d_mlp}; "
                           f"{model.name} has {c.n_layers} x {c.n_heads}, d_mlp {c.d_mlp}")


def layout(model: "Model", plan: PruningPlan) -> dict:
    """The ``config.uncover_pruning`` layout of ``plan`` on ``model`` (see uncover.core.pruned)."""
    c = model.cfg
    group = c.n_heads // c.n_kv_heads
    out: dict = {"base": type(model.hf).__name__, "heads": [], "kv_heads": [], "kv_of_head": [], "d_mlp": [],
                 "removed_heads": [], "removed_neurons": []}
    for l in range(c.n_layers):
        heads = [h for h in range(c.n_heads) if h not in plan.heads.get(l, [])]
        kv = sorted({h // group for h in heads})
        out["heads"].append(heads)
        out["kv_heads"].append(kv)
        out["kv_of_head"].append([kv.index(h // group) for h in heads])
        out["d_mlp"].append(c.d_mlp - len(plan.neurons.get(l, [])))
        out["removed_heads"].append(plan.heads.get(l, []))
        out["removed_neurons"].append(plan.neurons.get(l, []))
    return out


def _rows(ids: list[int], width: int) -> torch.Tensor:
    return torch.tensor([i * width + j for i in ids for j in range(width)], dtype=torch.long)


@torch.no_grad()
def prune_model(model: "Model", plan: PruningPlan) -> "Model":
    """A new Model without the plan's heads and neurons (weights copied; ``model`` is not changed)."""
    from uncover.core.model import Model

    _check_supported(model, plan)
    spec = layout(model, plan)
    old = model.adapter.layers(model.hf)
    # shrink replaces every projection, so its weights are not copied (a placeholder keeps dtype and device)
    replaced = [getattr(layer.self_attn, n) for layer in old for n in ("q_proj", "k_proj", "v_proj", "o_proj")]
    replaced += [getattr(layer.mlp, n) for layer in old for n in ("gate_proj", "up_proj", "down_proj")]
    memo = {id(p): nn.Parameter(p.new_empty(0), p.requires_grad) for lin in replaced for p in lin.parameters()}
    hf = copy.deepcopy(model.hf, memo)
    shrink(hf, spec)
    for l, layer in enumerate(model.adapter.layers(hf)):
        a_old, a_new = old[l].self_attn, layer.self_attn
        d = a_old.head_dim
        q_rows, kv_rows = _rows(spec["heads"][l], d), _rows(spec["kv_heads"][l], d)
        keep_n = torch.tensor([i for i in range(model.cfg.d_mlp) if i not in set(plan.neurons.get(l, []))])
        for name, rows in (("q_proj", q_rows), ("k_proj", kv_rows), ("v_proj", kv_rows)):
            src, dst = getattr(a_old, name), getattr(a_new, name)
            dst.weight.copy_(src.weight[rows])
            if src.bias is not None:
                dst.bias.copy_(src.bias[rows])
        a_new.o_proj.weight.copy_(a_old.o_proj.weight[:, q_rows])
        if a_old.o_proj.bias is not None:
            a_new.o_proj.bias.copy_(a_old.o_proj.bias)
        m_old, m_new = old[l].mlp, layer.mlp
        for name in ("gate_proj", "up_proj"):
            getattr(m_new, name).weight.copy_(getattr(m_old, name).weight[keep_n])
            if getattr(m_old, name).bias is not None:
                getattr(m_new, name).bias.copy_(getattr(m_old, name).bias[keep_n])
        m_new.down_proj.weight.copy_(m_old.down_proj.weight[:, keep_n])
        if m_old.down_proj.bias is not None:
            m_new.down_proj.bias.copy_(m_old.down_proj.bias)
    setattr(hf.config, LAYOUT_KEY, spec)
    return Model(hf.eval(), model.tokenizer, f"{model.name}-pruned")


def save_pruned(pruned: "Model", folder: str | Path) -> Path:
    """Write a pruned model as a Hugging Face folder (weights, config, tokenizer, modeling file)."""
    spec = getattr(pruned.hf.config, LAYOUT_KEY, None)
    if spec is None:
        raise UncoverError("save_pruned takes a model from prune_model(model, plan); this one is not pruned "
                           "(save an unpruned model with model.hf.save_pretrained)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pruned.hf.save_pretrained(folder)
    if pruned.tokenizer is not None:
        pruned.tokenizer.save_pretrained(folder)
    (folder / MODELING_FILE).write_text(modeling_source(spec["base"]))
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    config["auto_map"] = {"AutoModelForCausalLM": f"{MODELING_FILE.removesuffix('.py')}.{CLASS_NAME}"}
    config_path.write_text(json.dumps(config, indent=2))
    return folder


def n_params(model: "Model") -> int:
    """Parameters (tied weights counted once)."""
    return sum(p.numel() for p in model.hf.parameters())


@torch.no_grad()
def forward_seconds(model: "Model", tokens: torch.Tensor, repeats: int = 5) -> float:
    """Median wall time of one forward on ``tokens`` [batch, pos] (after one warm-up run), seconds."""
    model(tokens)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(tokens)
        times.append(time.perf_counter() - start)
    return statistics.median(times)
