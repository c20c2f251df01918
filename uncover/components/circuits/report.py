"""Report section "Circuits": which edges carry a task, found by EAP and EAP-IG, and how faithful they are.

Quick default (smollm2, about 2-4 min on 2 idle CPU cores): IOI with 16 prompt pairs; EAP and EAP-IG (5
steps) over every edge; faithfulness of the top-n circuits at log-spaced sizes under corrupted-input
patching, edges ranked by |score| and by signed score (the edges that help the task); the smallest circuit
reaching the target, drawn, with the head classes it contains (previous-token, duplicate-token and induction
heads from the heads tools, and heads writing the answer directly).
``ctx.full``: 32 pairs and greater-than, docstring and induction as well.
"""
from __future__ import annotations

import time
from typing import Any

from uncover.report import claims as C
from uncover.report import html as H
from uncover.report.section import ReportContext, run_parts

SIZES = {
    "quick": {"tasks": ["ioi"], "n": 16, "methods": ["eap", "eap-ig"], "rankings": ["abs", "signed"], "steps": 5,
              "points": 9},
    "full": {"tasks": ["ioi", "greater-than", "docstring", "induction"], "n": 32, "methods": ["eap", "eap-ig"],
             "rankings": ["abs", "signed"], "steps": 5, "points": 16},
}
FAITHFUL = C.Threshold("faithful", 0.8, "faithfulness")
SPARSE = C.Threshold("sparse", 0.05, "share of all edges")
AGREE = C.Threshold("agree", 0.7, "Spearman rank correlation of |scores| between the methods")
HEAD_CLASS = 0.3   # attention share at which a head counts as previous-token / duplicate-token / induction
DIRECT_SHARE = 0.2  # |direct effect| as a share of the largest that counts as writing the answer directly
MAX_DRAWN = 200     # edges drawn in the circuit picture (the strongest)


def _spearman(a, b) -> float:
    def ranks(x):
        return x.argsort().argsort().float()

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()).clamp_min(1e-12))


def _head_classes(model, task) -> dict[str, list[str]]:
    from uncover.components.heads import attention_scores, direct_effect

    scores = attention_scores(model)
    direct = direct_effect(model, task)
    top = float(direct.abs().max()) or 1.0
    out: dict[str, list[str]] = {}
    for l in range(model.cfg.n_layers):
        for h in range(model.cfg.n_heads):
            kinds = [k.replace("_", "-") for k, v in scores.items() if float(v[l, h]) >= HEAD_CLASS]
            d = float(direct[l, h])
            if abs(d) >= DIRECT_SHARE * top:
                kinds.append("writes the answer" if d > 0 else "writes against the answer")
            if kinds:
                out[f"L{l}.H{h}"] = kinds
    return out


def _task_data(model, name: str, size: dict, ctx: ReportContext) -> dict[str, Any]:
    from uncover.components.circuits import discover, faithfulness_curve, select
    from uncover.components.circuits.evaluate import default_counts
    from uncover.components.circuits.export import circuit_dict
    from uncover.components.circuits.patching import EdgePatcher
    from uncover.data.tasks import make_task

    task = make_task(model, name, n=size["n"], seed=ctx.seed)
    start = time.perf_counter()
    patcher = EdgePatcher.build(model, task)
    g = patcher.graph
    out: dict[str, Any] = {"task": task.name, "unit": task.metric_unit, "pairs": len(task), "tokens": task.clean.shape[1],
                           "n_edges": g.n_edges, "methods": {}, "cache_seconds": time.perf_counter() - start}
    scores = {}
    for method in size["methods"]:
        s = discover(model, task, method, steps=size["steps"], patcher=patcher, progress=ctx.progress)
        scores[method] = s
        for by in size["rankings"]:
            curve = faithfulness_curve(model, task, s, counts=default_counts(g.n_edges, size["points"]),
                                       patcher=patcher, by=by, progress=ctx.progress)
            out["methods"][f"{method} ({by})"] = {
                "method": method, "by": by, "seconds": s.seconds, "edges": curve.edges,
                "faithfulness": curve.faithfulness, "requested": curve.requested, "smallest": curve.smallest(),
                "top": s.top(8), "seconds_per_circuit": curve.seconds_per_circuit,
            }
    out["metric_model"] = patcher.metric(patcher.clean_logits)
    out["metric_ablated"] = patcher.metric(patcher.ablated_logits)
    if len(scores) >= 2:  # rank agreement of the first two methods' |scores|
        a, b = (scores[m].scores[g.allowed].abs() for m in size["methods"][:2])
        out["agreement"] = {"methods": size["methods"][:2], "spearman": _spearman(a, b)}
    # the circuit to draw: the fewest edges reaching the target over the methods, else the most faithful
    best = None
    for label, d in out["methods"].items():
        i = d["smallest"]
        cand = (0, d["edges"][i], label, i) if i is not None else (1, -max(d["faithfulness"]), label,
                                                                    max(range(len(d["edges"])), key=lambda j: d["faithfulness"][j]))
        best = cand if best is None or cand < best else best
    _, _, label, i = best
    chosen = out["methods"][label]
    keep = select(g, scores[chosen["method"]].scores, top_n=chosen["requested"][i], by=chosen["by"])
    drawn = circuit_dict(g, scores[chosen["method"]].scores, keep)
    names = [n["id"] for n in drawn["nodes"]]
    classes = _head_classes(model, task)
    out["circuit"] = {"method": label, "edges": int(keep.sum()), "faithfulness": chosen["faithfulness"][i],
                      "reaches": chosen["smallest"] is not None,
                      "nodes": names, "picture": {**drawn, "edges": drawn["edges"][:MAX_DRAWN]},
                      "classes": {n: classes[n] for n in names if n in classes}}
    return out


class CircuitsSection:
    key = "circuits"
    title = "Circuits: the edges that carry a task"
    version = "2"  # 2: the drawn circuit is a circuit graph (export.py)

    def compute(self, model, ctx: ReportContext, sizes: dict | None = None) -> dict[str, Any]:
        size = sizes or SIZES["full" if ctx.full else "quick"]
        return {"tasks": run_parts([(name, lambda name=name: _task_data(model, name, size, ctx))
                                    for name in size["tasks"]])}

    def render(self, data: dict[str, Any]) -> str:
        return "".join(render_task(d) for d in data["tasks"].values())


def task_findings(d: dict[str, Any]) -> list[str]:
    """Measured sentences for one task: the smallest faithful circuit per method, sparsity, agreement."""
    out = []
    for method, m in d["methods"].items():
        i = m["smallest"]
        if i is not None:
            share = m["edges"][i] / d["n_edges"]
            sparse = C.at_most(share, SPARSE, "a sparse circuit", "not a sparse circuit")
            out.append(f"{method}: the top {m['edges'][i]:,} edges ({share:.2%} of {d['n_edges']:,}) reach faithfulness "
                       f"{m['faithfulness'][i]:.2f} ({C.at_least(m['faithfulness'][i], FAITHFUL, 'faithful', 'not faithful')}), "
                       f"{sparse}.")
        else:
            j = max(range(len(m["edges"])), key=lambda k: m["faithfulness"][k])
            claim = C.at_least(m["faithfulness"][j], FAITHFUL, "faithful", "not faithful")
            out.append(f"{method}: no top-n circuit tried reaches faithfulness {FAITHFUL.value:g}; the most faithful has "
                       f"{m['edges'][j]:,} edges ({m['edges'][j] / d['n_edges']:.2%}) at {m['faithfulness'][j]:.2f} "
                       f"({claim}).")
    a = d.get("agreement")
    if a:
        claim = C.at_least(a["spearman"], AGREE, "agree", "disagree")
        out.append(f"{a['methods'][0]} and {a['methods'][1]} {claim} on the ranking of edges: Spearman "
                   f"{a['spearman']:.2f} over all {d['n_edges']:,} edges.")
    c = d["circuit"]
    if c["classes"]:
        named = "; ".join(f"{n} ({', '.join(k)})" for n, k in list(c["classes"].items())[:10])
        out.append(f"Heads of the drawn {c['method']} circuit with a known role: {named}.")
    heads = [n for n in c["nodes"] if ".H" in n]
    out.append(f"The drawn circuit ({c['edges']:,} edges, faithfulness {c['faithfulness']:.2f}) contains "
               f"{len(heads)} heads and {sum(1 for n in c['nodes'] if n.endswith('MLP'))} MLPs.")
    return out


def render_task(d: dict[str, Any]) -> str:
    from uncover.components.circuits.plots import circuit_figure, faithfulness_figure

    if "error" in d:
        return H.paragraph(f"Circuit discovery failed: {d['error']}")
    title = f"<h3>{H.escape(d['task'])}</h3>"
    intro = H.paragraph(
        f"{d['pairs']} prompt pairs of {d['tokens']} tokens; {d['unit']}: model {d['metric_model']:.3f}, every edge "
        f"ablated (corrupted-input patching) {d['metric_ablated']:.3f}. Faithfulness = (circuit - ablated) / "
        f"(model - ablated) with every edge outside the circuit patched from the corrupted prompts. Ranked by abs: "
        f"the edges with the largest |score| (either sign); by signed: the edges whose removal lowers the metric "
        f"most, so a circuit leaves out the edges that work against the task and can exceed the model (above 1).")
    faith = faithfulness_figure({m: v for m, v in d["methods"].items()}, d["n_edges"], FAITHFUL.value,
                                f"{d['task']}: faithfulness of the top-n circuits")
    c = d["circuit"]
    pic = circuit_figure(c["picture"], f"{d['task']}: {c['method']} circuit ({c['edges']:,} edges)")
    rows = [[m, f"{v['seconds']:.1f} s", f"{v['seconds_per_circuit']:.2f} s"] + [f"{e} ({s:+.3f})" for e, s in v["top"][:3]]
            for m, v in d["methods"].items() if v["by"] == "abs" or len(d["methods"]) == 1]
    return (title + intro + H.findings(task_findings(d), headline=2)
            + H.plotly_figure(faith, "Faithfulness against the number of edges kept (log scale), top-n edges "
                                     "after pruning dangling edges, one line per method and ranking; dashed: "
                                     "the target.")
            + H.plotly_figure(pic, f"The circuit: nodes by layer and head (MLPs on the top row), the strongest "
                                   f"{min(MAX_DRAWN, c['edges'])} edges drawn; width follows |score|, dash: q solid, "
                                   "k dashed, v dotted; blue edges help the task; the strongest nodes are named "
                                   "and drawn larger. Hover for every node's and edge's score.")
            + H.table(rows, ["method", "discovery time", "time per circuit", "top edge", "2nd", "3rd"]))


SECTION = CircuitsSection()
