"""Report section "Circuits": which edges carry a task, found by EAP and EAP-IG, and how faithful they are.

Quick default (smollm2, about 2-4 min on 2 idle CPU cores): IOI with 16 prompt pairs; EAP and EAP-IG (5
steps) over every edge; faithfulness of the top-n circuits at log-spaced sizes under corrupted-input
patching, edges ranked by |score| and by signed score (the edges that help the task); the smallest circuit
reaching the target, drawn, with the head classes it contains (previous-token, duplicate-token and induction
heads from the heads tools, and heads writing the answer directly). Causal scrubbing of the top induction
head (16 induction prompts, 3 samples; about 13 s on smollm2, 2 busy CPU cores): its inputs resampled among prompts that share
only the current token and the token after its earlier copy, the rest of the model as it is, against a
control that keeps only the current token.
``ctx.full``: 32 pairs and greater-than, docstring and induction as well; scrubbing on 32 prompts, 8 samples.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from uncover.report import claims as C
from uncover.report import html as H
from uncover.report.section import ReportContext, run_parts

if TYPE_CHECKING:
    from uncover.data.tasks import Task

SIZES = {
    "quick": {"tasks": ["ioi"], "n": 16, "methods": ["eap", "eap-ig"], "rankings": ["abs", "signed"], "steps": 5,
              "points": 9, "scrub": {"n": 16, "half_len": 8, "samples": 3}},
    "full": {"tasks": ["ioi", "greater-than", "docstring", "induction"], "n": 32, "methods": ["eap", "eap-ig"],
             "rankings": ["abs", "signed"], "steps": 5, "points": 16, "scrub": {"n": 32, "half_len": 10, "samples": 8}},
}
FAITHFUL = C.Threshold("faithful", 0.8, "faithfulness")
SPARSE = C.Threshold("sparse", 0.05, "share of all edges")
AGREE = C.Threshold("agree", 0.7, "Spearman rank correlation of |scores| between the methods")
EXPLAINED = C.Threshold("explained", 0.9, "fraction of the logit difference recovered")
MATTERS = C.Threshold("matters", 0.05, "fraction recovered, hypothesis minus control")
CURRENT_TOKENS, ANSWER_TOKENS = 2, 4  # the scrubbing prompts' current token and answer take this many values
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


def _scrub_task(model, n: int, half_len: int, seed: int) -> tuple["Task", int]:
    """Induction prompts bos + A + A[:-1] [n, bos + 2 * half_len - 1] (answer A[-1]), and the BOS length, whose current token A[-2] takes one of
    CURRENT_TOKENS values and whose answer one of ANSWER_TOKENS, drawn independently (the rest random), so
    that prompts share the features the hypotheses name; the wrong answer is the next of those values."""
    import torch

    from uncover.data.induction import random_tokens
    from uncover.data.tasks import Task, bos_prefix

    g = torch.Generator().manual_seed(seed)
    half = random_tokens(model, (n, half_len), g)
    pool = torch.tensor(list(dict.fromkeys(random_tokens(model, (64,), g).tolist()))[: CURRENT_TOKENS + ANSWER_TOKENS])
    current, answers = pool[:CURRENT_TOKENS], pool[CURRENT_TOKENS:]
    half[:, -2] = current[torch.randint(CURRENT_TOKENS, (n,), generator=g)]
    j = torch.randint(ANSWER_TOKENS, (n,), generator=g)
    half[:, -1] = answers[j]
    prefix = torch.tensor(bos_prefix(model), dtype=torch.long).expand(n, -1)
    clean = torch.cat([prefix, half, half[:, :-1]], dim=1)
    return Task("induction (scrubbing)", clean, clean, answers[j], answers[(j + 1) % ANSWER_TOKENS]), prefix.shape[1]


def _scrub_data(model, size: dict, ctx: ReportContext) -> dict[str, Any]:
    """Causal scrubbing of the top induction head: its inputs agree on the current token and the token after
    its earlier copy (hypothesis) or on the current token only (control); every other node as in the model."""
    from uncover.components.circuits import Graph, Hypothesis, scrub, token_at
    from uncover.components.heads import attention_scores

    ind = attention_scores(model)["induction"]
    top = int(ind.flatten().argmax())
    head = f"L{top // model.cfg.n_heads}.H{top % model.cfg.n_heads}"
    task, bos = _scrub_task(model, size["n"], size["half_len"], ctx.seed)
    current, after = bos + size["half_len"] - 2, bos + size["half_len"] - 1
    nodes = Graph.of(model).source_names
    out: dict[str, Any] = {"head": head, "induction_score": float(ind.flatten()[top]), "pairs": len(task),
                           "tokens": task.clean.shape[1], "positions": [current, after], "seed": ctx.seed,
                           "samples": size["samples"], "current_tokens": CURRENT_TOKENS,
                           "answer_tokens": ANSWER_TOKENS, "hypotheses": {}}
    for name, feature in (("hypothesis", token_at(task.clean, current, after)), ("control", token_at(task.clean, current))):
        r = scrub(model, task, Hypothesis(nodes, features={head: feature}), n_samples=size["samples"], seed=ctx.seed)
        out["hypotheses"][name] = {"feature": feature.__name__, "recovered": r.recovered,
                                   "metric_scrubbed": r.metric_scrubbed, "runs": r.runs[0]}
        out["metric_model"], out["metric_random"] = r.metric_model, r.metric_random
    return out


class CircuitsSection:
    key = "circuits"
    title = "Circuits: the edges that carry a task"
    version = "3"  # 2: the drawn circuit is a circuit graph (export.py); 3: causal scrubbing of induction

    def compute(self, model, ctx: ReportContext, sizes: dict | None = None) -> dict[str, Any]:
        size = sizes or SIZES["full" if ctx.full else "quick"]
        parts = run_parts([(name, lambda name=name: _task_data(model, name, size, ctx)) for name in size["tasks"]])
        scrubbing = run_parts([("induction", lambda: _scrub_data(model, size["scrub"], ctx))])["induction"]
        return {"tasks": parts, "scrubbing": scrubbing}

    def render(self, data: dict[str, Any]) -> str:
        return "".join(render_task(d) for d in data["tasks"].values()) + render_scrubbing(data["scrubbing"])


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


def scrub_findings(d: dict[str, Any]) -> list[str]:
    """Measured sentences of the causal scrubbing of the top induction head."""
    h, c = d["hypotheses"]["hypothesis"], d["hypotheses"]["control"]
    explained = C.at_least(h["recovered"], EXPLAINED, "the hypothesis explains what the head contributes",
                           "the hypothesis leaves part of what the head contributes unexplained")
    control = C.at_least(c["recovered"], EXPLAINED, "it would explain the head too", "it does not explain the head")
    gap = C.direction(h["recovered"] - c["recovered"], MATTERS, "the token after the earlier copy matters to the head",
                      "the control explains more than the hypothesis", "the token after the earlier copy makes no clear "
                      "difference to the head")
    return [f"Causal scrubbing of the top induction head {d['head']} (induction score {d['induction_score']:.2f}): with "
            f"its inputs resampled among prompts that share only the current token and the token after its earlier "
            f"copy, the rest of the model as it is, the logit difference is {h['metric_scrubbed']:.2f} against "
            f"{d['metric_model']:.2f} for the model and {d['metric_random']:.2f} on random prompts: "
            f"{h['recovered']:.3f} recovered, {explained}.",
            f"Control: inputs that share only the current token recover {c['recovered']:.3f} ({control}); "
            f"{gap}."]


def render_scrubbing(d: dict[str, Any]) -> str:
    if "error" in d:
        return H.paragraph(f"Causal scrubbing failed: {d['error']}")
    intro = H.paragraph(
        f"{d['pairs']} induction prompts of {d['tokens']} tokens (a random sequence, then all of it again but its last "
        f"token); the current token takes one of {d['current_tokens']} values and the answer one of "
        f"{d['answer_tokens']}, drawn independently, so that prompts share them. Causal scrubbing (Chan et al. 2022): "
        f"the head's inputs are computed on a prompt drawn at random among those that agree with the prompt on the "
        f"stated feature (the nodes it reads computed on that prompt), every other node reads its own prompt; fraction "
        f"recovered = (scrubbed - random) / (model - random) of the logit difference, mean over {d['samples']} "
        f"samples, seed {d['seed']}.")
    rows = [[name, v["feature"], f"{v['recovered']:.3f}", f"{v['metric_scrubbed']:.3f}", v["runs"]]
            for name, v in d["hypotheses"].items()]
    return ("<h3>Causal scrubbing: the top induction head</h3>" + intro + H.findings(scrub_findings(d))
            + H.table(rows, ["claim", "the head's inputs agree on", "fraction recovered", "logit difference",
                             "forwards per sample"]))


SECTION = CircuitsSection()
