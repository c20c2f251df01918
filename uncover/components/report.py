"""Report section "Components": which heads do what, where IOI is computed, how facts are recalled.

Quick default on smollm2 (2 CPU cores, about 2.5 minutes): head scores on 2 repeated random sequences,
induction-head ablation, IOI attribution patching of every head and of the residual stream on 8 prompt
pairs, checked by activation patching of the 12 strongest heads and 12 random others, direct logit
attribution, attention knockout on 8 known facts with
windows centred on every other layer. ``ctx.full`` runs bigger versions (see ``SIZES``).
"""
from __future__ import annotations

import math
from typing import Any

import torch

from uncover.report import claims as C
from uncover.report import html as H
from uncover.report.section import ReportContext

# cut-offs of the findings' wording (uncover.report.claims); each is printed with its claim
INDUCTION_HEAD = C.Threshold("induction_head", 0.3, "induction score")  # mean attention to the token after the copy
LOSS_CHANGE = C.Threshold("loss_change", 0.05, "loss change", "nats")
LOSS_MARGIN = C.Threshold("loss_margin", 0.05, "change minus the largest random change", "nats")
AGREE = C.Threshold("agree", 0.7, "Pearson r")
DLA_SUM = C.Threshold("dla_sum", 0.01, "|sum - logit difference|", "nats")
LENS_EQUAL = C.Threshold("lens_equal", 1e-3, "max |difference|")
KNOCKOUT_DROP = C.Threshold("knockout_drop", 5, "change", "%")
RESTORED = C.Threshold("restored", 0.1, "estimated restored share")
ENRICHED_RANK = 100  # "enters the lens's top 100": the attribute's median rank below this

SIZES = {
    "quick": {"seqs": 2, "half_len": 40, "check_heads": 12, "ioi": 8, "facts": 8, "fact_pool": 60, "stride": 2},
    "full": {"seqs": 8, "half_len": 50, "check_heads": 135, "ioi": 32, "facts": 32, "fact_pool": 400, "stride": 1},
}
IOI_TEMPLATE = ("When {A} and {B} went to the {place}, {S} gave a {object} to",)


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    ok = ~(a.isnan() | b.isnan())
    return float(torch.corrcoef(torch.stack([a[ok], b[ok]]))[0, 1])


def _heads(l_h_v: list) -> str:
    return ", ".join(f"L{l}H{h} ({v:.2f})" for l, h, v in l_h_v)


class ComponentsSection:
    key = "components"
    title = "Components: attention heads, circuits and factual recall"
    version = "1"

    @torch.no_grad()
    def compute(self, model, ctx: ReportContext, sizes: dict | None = None) -> dict[str, Any]:
        from uncover.components import heads, lens, patching, recall
        from uncover.data.facts import FACTS, known_facts
        from uncover.data.induction import repeated_tokens
        from uncover.data.ioi import ioi_task

        size = sizes or SIZES["full" if ctx.full else "quick"]
        steps = ctx.progress(range(6), "components")
        step = iter(steps)
        out: dict[str, Any] = {"n_layers": model.cfg.n_layers, "n_heads": model.cfg.n_heads}

        # 1. head scores and the causal role of induction heads
        next(step)
        tokens = repeated_tokens(model, size["seqs"], size["half_len"], ctx.seed)
        scores = heads.attention_scores(model, tokens, size["half_len"])
        scores["copying"] = heads.copying_scores(model)
        out["scores"] = {k: v.tolist() for k, v in scores.items()}
        out["top"] = {k: heads.top_heads(v, 5) for k, v in scores.items()}
        top3 = [(l, h) for l, h, _ in heads.top_heads(scores["induction"], 3)]
        next(step)
        ablation = heads.induction_ablation(model, k=3, n_random=3, half_len=size["half_len"], batch=size["seqs"], seed=ctx.seed)
        out["ablation"] = {k: v for k, v in ablation.items() if k != "scores"}
        out["ablation"]["top_heads"] = [list(x) for x in top3]

        # 2. IOI: head patching (activation vs attribution), residual attribution, DLA
        next(step)
        task = ioi_task(model, n=size["ioi"], seed=ctx.seed, templates=IOI_TEMPLATE)
        attr = patching.patch_task(model, task, site="z", by="head", method="attribution")
        # activation patching checks the strongest heads by attribution and as many random others
        ranked = attr.values.flatten().abs().argsort(descending=True).tolist()
        g = torch.Generator().manual_seed(ctx.seed)
        rest = ranked[size["check_heads"]:]
        picked = ranked[: size["check_heads"]] + [rest[i] for i in torch.randperm(len(rest), generator=g)[: size["check_heads"]]]
        n_heads = model.cfg.n_heads
        act = patching.patch_task(model, task, site="z", by="head", method="activation",
                                  only=[(i // n_heads, i % n_heads) for i in picked])
        resid = patching.patch_task(model, task, site="resid_pre", by="pos", method="attribution")
        dla = lens.direct_logit_attribution(model, task.clean, task.answers, task.wrong, per_head=True)
        dla_layers = lens.direct_logit_attribution(model, task.clean, task.answers, task.wrong)
        out["ioi"] = {
            "example": task.clean_prompts[0], "corrupt_example": task.corrupt_prompts[0],
            "tokens": model.to_str_tokens(task.clean[0]),
            "clean_metric": act.clean_metric, "corrupt_metric": act.corrupt_metric, "n_checked": len(picked),
            "n": len(task), "activation": act.values.tolist(), "attribution": attr.values.tolist(),
            "pearson": _pearson(act.values, attr.values), "resid": resid.values.tolist(),
            "top_activation": heads.top_heads(act.values, 5), "top_attribution": heads.top_heads(attr.values, 5),
            "dla_labels": dla_layers.labels, "dla": dla_layers.mean().tolist(),
            "dla_sum": float(dla_layers.values.sum(0).mean()), "dla_actual": float(dla_layers.actual.mean()),
            "dla_heads_top": heads.top_heads(lens.head_dla(dla, model.cfg.n_layers, model.cfg.n_heads), 5),
        }
        lens_last = lens.logit_lens(model, task.clean[:2]).log_probs[-1]  # the other layers' are freed here
        real = model(task.clean[:2]).float().log_softmax(-1)
        out["lens_last_vs_output"] = float((lens_last - real).abs().max())
        del lens_last, real

        # 3. factual recall: attention knockout and subject enrichment
        next(step)
        facts = known_facts(model, FACTS[: size["fact_pool"]])[: size["facts"]]
        centres = list(range(0, model.cfg.n_layers, size["stride"]))
        knock = recall.attention_knockout(model, facts, layers=centres)
        next(step)
        enrich = recall.subject_enrichment(model, facts)
        out["knockout"] = {
            "targets": knock.targets, "centres": centres, "values": knock.values.tolist(),
            "window": knock.windows[len(centres) // 2][1] - knock.windows[len(centres) // 2][0],
            "base_prob": float(knock.base_prob.mean()), "facts": [f"{f.prompt()} ->{f.attribute}" for f in facts],
        }
        out["enrichment"] = {"labels": enrich.labels, "subject_rank": enrich.subject_rank.tolist(),
                             "last_rank": enrich.last_rank.tolist()}
        next(step, None)
        return out

    def render(self, data: dict[str, Any]) -> str:
        from uncover.components import plots

        parts = [H.paragraph(
            "Which attention heads have a recognisable job, where the model computes indirect object "
            "identification (IOI), and how a fact's attribute reaches the last position.")]
        names = {"previous_token": "Previous-token score (attention to the token before)",
                 "duplicate_token": "Duplicate-token score (attention to the same token earlier)",
                 "induction": "Induction score (attention to the token after the earlier copy)",
                 "copying": "Copying score of the OV circuit (sum of eigenvalues / sum of their sizes)"}
        for kind, title in names.items():
            fig = plots.head_heatmap(data["scores"][kind], title, "score", data["top"][kind], diverging=kind == "copying")
            parts.append(H.plotly_figure(fig, f"Top heads circled: {_heads(data['top'][kind])}."))
        ab = data["ablation"]
        io = data["ioi"]
        parts.append(H.plotly_figure(
            plots.head_heatmap(io["attribution"], "IOI: attribution patching of each head's output (clean into corrupted)",
                               "restored share", heads_top(io["top_attribution"]), diverging=True),
            f"0 = corrupted (ABC names) behaviour, 1 = clean; {io['n']} prompt pairs like {io['example']!r}."))
        pairs = [(a, b, f"L{l}H{h}") for l, (ra, rb) in enumerate(zip(io["activation"], io["attribution"]))
                 for h, (a, b) in enumerate(zip(ra, rb)) if a == a]  # a == a: measured (not NaN)
        parts.append(H.plotly_figure(
            plots.scatter([p[0] for p in pairs], [p[1] for p in pairs], [p[2] for p in pairs],
                          "IOI heads: attribution patching vs activation patching",
                          "activation patching", "attribution patching (linear estimate)"),
            f"The {len(pairs)} heads checked by activation patching: the strongest by attribution and random others."))
        parts.append(H.plotly_figure(
            plots.layer_pos_heatmap(io["resid"], io["tokens"], "IOI: residual stream (resid_pre) by layer and position, attribution patching"),
            "Estimated share of the clean behaviour restored by patching each layer's residual stream at one position."))
        parts.append(H.plotly_figure(
            plots.dla_bars(io["dla_labels"], io["dla"], "IOI: direct logit attribution of the logit difference (IO - S)"),
            "Each layer's attention and MLP output read through the unembedding, with the final norm's scale frozen."))
        kn = data["knockout"]
        parts.append(H.plotly_figure(
            plots.knockout_lines(kn["targets"], kn["centres"], kn["values"], kn["window"],
                                 "Attention knockout: blocking the last position from subject / relation / itself"),
            f"{len(kn['facts'])} facts the model knows, e.g. {kn['facts'][0]!r}."))
        en = data["enrichment"]
        parts.append(H.plotly_figure(
            plots.lines(en["labels"], {"last subject token": [r + 1 for r in en["subject_rank"]],
                                       "last position": [r + 1 for r in en["last_rank"]]},
                        "Subject enrichment: the attribute's rank under the logit lens (median over facts)",
                        "layer", "rank of the attribute (1 = top)", log_y=True)))
        restoring = [t for t in heads_top(io["top_activation"]) if t[2] >= RESTORED.value]
        found = [_induction_finding(data["top"]["induction"]), _ablation_finding(ab),
                 f"IOI: logit difference {io['clean_metric']:.2f} on clean prompts and {io['corrupt_metric']:.2f} on "
                 f"ABC-corrupted ones; " + (
                     f"the heads whose output restores most (activation patching, {RESTORED.what} ≥ "
                     f"{RESTORED.fmt()}) are {_heads(restoring)}." if restoring else
                     f"no checked head's output restores {RESTORED.fmt()} of it on its own (activation patching; "
                     f"highest {_heads(heads_top(io['top_activation'])[:3])}).")]
        agree = C.at_least(io["pearson"], AGREE, "agrees", "does not clearly agree")
        found.append(f"Attribution patching (2 forwards + 1 backward for all {data['n_layers'] * data['n_heads']} "
                     f"heads) {agree.word} with activation patching on the {io['n_checked']} heads checked: Pearson "
                     f"r = {io['pearson']:.3f} ({agree.test}).")
        sums = C.at_most(abs(io["dla_sum"] - io["dla_actual"]), DLA_SUM, "match", "do not match")
        for_io = [t for t in heads_top(io["dla_heads_top"]) if t[2] > 0]  # positive: towards the right name
        found.append(f"Direct logit attribution: the parts sum to {io['dla_sum']:.3f} against the real logit "
                     f"difference {io['dla_actual']:.3f}, so they {sums}; " + (
                         f"the heads writing most directly for the right name are {_heads(for_io)}." if for_io else
                         "no head writes directly for the right name (every head's direct effect is ≤ 0)."))
        lens_ok = C.at_most(data["lens_last_vs_output"], LENS_EQUAL, "equals", "differs from")
        found.append(f"The logit lens at the last layer {lens_ok.word} the model's output (max |difference| of "
                     f"log-probabilities {data['lens_last_vs_output']:.1e}; {lens_ok.test}).")
        found += [_knockout_finding(t, v, kn["centres"]) for t, v in zip(kn["targets"], kn["values"])]
        resid, toks = io["resid"], io["tokens"]
        for layer in sorted({0, len(resid) // 2, len(resid) - 1}):
            pos = max(range(len(toks)), key=lambda p: resid[layer][p])
            most = C.at_least(resid[layer][pos], RESTORED, "restores the most", "restores little even at its best")
            found.append(f"IOI residual stream before layer {layer}: patching position {pos} ({toks[pos]!r}) "
                         f"{most.word}, an estimated {resid[layer][pos]:.2f} of the clean logit difference "
                         f"({most.test}).")
        first = next((i for i, r in enumerate(en["subject_rank"]) if r < ENRICHED_RANK), None)
        if first is not None:
            found.append(f"At the last subject token the attribute first enters the lens's top {ENRICHED_RANK} at "
                         f"{en['labels'][first]} (median rank {en['subject_rank'][first]:.0f}).")
        else:
            found.append(f"At the last subject token the attribute never enters the lens's top {ENRICHED_RANK} "
                         f"(best median rank {min(en['subject_rank']):.0f}).")
        return "".join(parts) + H.findings(found, headline=3)


def _induction_finding(top: list) -> str:
    """Names as induction heads only the top heads whose score clears INDUCTION_HEAD."""
    strong = [t for t in top if t[2] >= INDUCTION_HEAD.value]
    if strong:
        return (f"Induction heads ({INDUCTION_HEAD.what} ≥ {INDUCTION_HEAD.fmt()}): {_heads(strong)} attend to the "
                f"token after the earlier copy (mean attention shown).")
    return (f"No head is an induction head ({INDUCTION_HEAD.what} < {INDUCTION_HEAD.fmt()} for every head; the "
            f"highest are {_heads(top[:3])}).")


def _ablation_finding(ab: dict[str, Any]) -> str:
    """The loss change from ablating the top induction heads, and whether it beats every random draw."""
    delta, rnd = ab["top"] - ab["clean"], [r - ab["clean"] for r in ab["random"]]
    effect = C.direction(delta, LOSS_CHANGE, "raises", "lowers", "does not clearly change")
    beyond = C.direction(delta - max(rnd), LOSS_MARGIN, "more than", "less than", "about as much as")
    top_ind = ", ".join(f"L{l}H{h}" for l, h in ab["top_heads"])
    return (f"Zero-ablating the top {len(ab['top_heads'])} induction heads ({top_ind}) {effect.word} the loss on the "
            f"repeated half of random sequences: {ab['clean']:.2f} -> {ab['top']:.2f} nats ({delta:+.2f}; "
            f"{effect.test}); ablating other heads of the same layers changes it by "
            f"{sum(rnd) / len(rnd):+.2f} nats on average over {len(rnd)} draws (at most {max(rnd):+.2f}), so the top "
            f"heads change it {beyond.word} any random draw ({beyond.test}).")


def _knockout_finding(target: str, values: list[float], centres: list[int]) -> str:
    """The most negative change from blocking last -> target; "drops" only past KNOCKOUT_DROP."""
    v, c = min(zip(values, centres))
    drop = C.direction(-v, KNOCKOUT_DROP, "drops", "rises in every window", "does not clearly drop in any window")
    if drop.holds:
        return (f"Blocking last -> {target} in the layers around {c}: the attribute's probability drops by "
                f"{-v:.0f}% (the largest drop for that target; {KNOCKOUT_DROP.what} ≤ -{KNOCKOUT_DROP.fmt()}).")
    return (f"Blocking last -> {target}: the attribute's probability {drop.word}; its most negative "
            f"change is {v:+.0f}% (layers around {c}; {KNOCKOUT_DROP.what} > -{KNOCKOUT_DROP.fmt()}).")


def heads_top(top: list) -> list:
    """Top heads as (layer, head, value) lists, dropping NaN values."""
    return [t for t in top if not math.isnan(t[2])]


SECTION = ComponentsSection()
