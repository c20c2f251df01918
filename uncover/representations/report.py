"""Report section "representations": truth probes by depth (with transfer), a PCA picture, and a
steering demonstration with its measured shift and perplexity cost. ``ctx.full`` adds a function
vector, LoReFT vs RED, ITI and more probe kinds."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from uncover.data.contrast import concept
from uncover.data.truth import truth_dataset
from uncover.report import claims as C
from uncover.report import html as H
from uncover.report.section import ReportContext
from uncover.representations import plots
from uncover.representations.activations import collect_activations
from uncover.representations.probes import layer_sweep, pca_view
from uncover.representations.steering import caa_direction, measure_steering, steering_hooks

if TYPE_CHECKING:
    from uncover.core.model import Model

TRANSFER = ("translations", "facts", "neg_cities")

# cut-offs of the findings' wording (uncover.report.claims); each is printed with its claim
ABOVE_CHANCE = C.Threshold("above_chance", 0.6, "held-out accuracy")  # chance is 0.5 (balanced labels)
BELOW_CHANCE = C.Threshold("below_chance", 0.4, "accuracy")  # the probe's verdict flips
STEER_SHIFT = C.Threshold("steer_shift", 0.5, "log-odds change from the lowest to the highest coefficient")
ACC_GAIN = C.Threshold("acc_gain", 0.1, "accuracy change")


def _truth(model: "Model", ctx: ReportContext, probes: list[str]) -> dict[str, Any]:
    n = None if ctx.full else 200
    train = truth_dataset("cities", n_per_family=n, seed=ctx.seed)
    held = {f: truth_dataset(f, n_per_family=None if ctx.full else 60, seed=ctx.seed) for f in TRANSFER}
    acts = collect_activations(model, train.texts, progress=ctx.progress)
    held_acts = {f: (collect_activations(model, d.texts), d.labels)
                 for f, d in ctx.progress(list(held.items()), "held-out families")}
    sweeps = {p: layer_sweep(acts, train.labels, p, seed=ctx.seed, transfer=held_acts, progress=ctx.progress)
              for p in probes}
    best = sweeps["logistic"].best_layer
    view = pca_view(acts[best], train.labels)
    return {
        "n_train": len(train), "n_transfer": {f: len(d) for f, d in held.items()},
        "sweeps": {p: {"layers": s.layers, "train": s.train_accuracy.tolist(), "test": s.test_accuracy.tolist(),
                       "transfer": {k: v.tolist() for k, v in s.transfer.items()}, "best_layer": s.best_layer}
                   for p, s in sweeps.items()},
        "pca": {"layer": best, "coords": view.coords.tolist(), "labels": view.labels.tolist(), "texts": train.texts,
                "explained": view.explained_variance_ratio.tolist()},
    }


def _steering(model: "Model", ctx: ReportContext) -> dict[str, Any]:
    layer = model.cfg.n_layers // 4 + 1
    c = concept("sentiment")
    d = caa_direction(model, "sentiment", layer, n_pairs=None if ctx.full else 32, seed=ctx.seed)
    coeffs = [-8, -4, -2, 0, 2, 4, 8] if ctx.full else [-8, -4, 0, 4, 8]
    r = measure_steering(model, lambda k: steering_hooks(d, k), c, coeffs, "caa", n_text=16 if ctx.full else 4,
                         sample_tokens=12 if ctx.full else 8, progress=ctx.progress)
    return {"layer": layer, "norm": float(d.vectors[0].norm()), "coefficients": r.coefficients.tolist(),
            "behaviour": r.behaviour.tolist(), "perplexity": r.perplexity.tolist(), "samples": r.samples,
            "monotone": r.is_monotone()}


def _full_extras(model: "Model", ctx: ReportContext) -> dict[str, Any]:
    from uncover.data.corpus import corpus_tokens
    from uncover.data.facts import FACTS, attribute_token
    from uncover.representations.function_vectors import fv_experiment
    from uncover.representations.iti import ITI_RELATIONS, fit_iti, truth_margin
    from uncover.representations.reft import reft_experiment
    from uncover.representations.steering import perplexity

    fv = fv_experiment(model, "antonyms", method="exact", seed=ctx.seed, progress=ctx.progress)
    refts = {k: reft_experiment(model, "antonyms", k, seed=ctx.seed, progress=ctx.progress) for k in ("loreft", "red")}
    cities = truth_dataset("cities", seed=ctx.seed)
    iti = fit_iti(model, cities.texts, cities.labels, progress=ctx.progress)
    facts = [f for f in FACTS if f.relation in ITI_RELATIONS and attribute_token(model, f) is not None]
    text = corpus_tokens(model, 16, 64)
    iti_rows = []
    for alpha in (0.0, 2.0, 4.0, 8.0):
        hooks = iti.hooks(alpha, model.cfg.n_heads)
        margin, wins = truth_margin(model, facts, hooks)
        iti_rows.append([alpha, margin, wins, perplexity(model, text, hooks)])
    return {
        "fv": {"task": "antonyms", "layer": fv.fv.layer, "heads": fv.fv.heads, "effects": fv.fv.effects.tolist(),
               "zero_shot": fv.zero_shot, "with_fv": fv.zero_shot_with_fv, "few_shot": fv.few_shot, "n_test": fv.n_test},
        "reft": {k: {"before": r.accuracy_before, "after": r.accuracy_after, "params": r.n_parameters,
                     "lora": r.lora_parameters, "losses": r.losses} for k, r in refts.items()},
        "iti": {"heads": iti.heads, "rows": iti_rows},
    }


class RepresentationsSection:
    key = "representations"
    title = "Representations: probes, directions, steering"
    version = "1"

    def compute(self, model: "Model", ctx: ReportContext) -> dict[str, Any]:
        probes = ["logistic", "mass_mean", "mass_mean_iid", "sparse", "mlp"] if ctx.full else ["logistic", "mass_mean"]
        data = {"truth": _truth(model, ctx, probes), "steering": _steering(model, ctx)}
        if ctx.full:
            data["extras"] = _full_extras(model, ctx)
        return data

    def render(self, data: dict[str, Any]) -> str:
        t, s = data["truth"], data["steering"]
        lg = t["sweeps"]["logistic"]
        best = lg["best_layer"]
        i = lg["layers"].index(best)
        above = C.at_least(lg["test"][i], ABOVE_CHANCE, "above chance", "not clearly above chance")
        facts = [
            f"A logistic truth probe on {t['n_train']} cities statements reaches {lg['test'][i]:.0%} held-out "
            f"accuracy at layer {best}, {above.word} (chance 50%; {above.test}); at layer 0 it scores "
            f"{lg['test'][0]:.0%}.",
        ]
        for fam, acc in lg["transfer"].items():
            j = max(range(len(acc)), key=lambda k: acc[k])
            flips = " under negation" if fam.startswith("neg") else ""
            note = (f" (below chance, {BELOW_CHANCE.what} < {BELOW_CHANCE.fmt()}: the probe's verdict flips{flips})"
                    if acc[i] < BELOW_CHANCE.value else "")
            facts.append(f"The layer-{best} probe scores {acc[i]:.0%} on the held-out family {fam} "
                         f"({t['n_transfer'][fam]} statements){note}; its best layer there scores {acc[j]:.0%} "
                         f"(layer {lg['layers'][j]}).")
        for name, sw in t["sweeps"].items():
            if name != "logistic":
                k = sw["layers"].index(sw["best_layer"])
                facts.append(f"The {name} probe peaks at {sw['test'][k]:.0%} at layer {sw['best_layer']}.")
        c, b, p = s["coefficients"], s["behaviour"], s["perplexity"]
        z = c.index(0) if 0 in c else 0
        shift = C.direction(b[-1] - b[0], STEER_SHIFT, "raises", "lowers", "does not clearly move")
        facts.insert(1,  # the steering result follows the truth probe in the summary
            f"Adding the sentiment CAA vector (layer {s['layer']}, norm {s['norm']:.1f}) {shift.word} the "
            f"positive-vs-negative next-word log-odds: {b[0]:+.2f} (coefficient {c[0]:g}) through {b[z]:+.2f} (0) to "
            f"{b[-1]:+.2f} (coefficient {c[-1]:g}; {shift.test}), "
            f"{'monotonically' if s['monotone'] else 'not monotonically'}; perplexity on "
            f"neutral text goes from {p[z]:.1f} to {p[0]:.1f} and {p[-1]:.1f} at the extremes.")
        parts = [H.findings(facts, headline=2),
                 H.plotly_figure(plots.accuracy_by_layer(lg["layers"], lg["test"], lg["train"], lg["transfer"],
                                                         "Truth probe (cities) accuracy by layer"),
                                 "Logistic probe trained on cities statements; dashed: chance."),
                 H.plotly_figure(plots.pca_scatter(t["pca"]["coords"], t["pca"]["labels"], t["pca"]["texts"],
                                                   title=f"Cities statements at layer {t['pca']['layer']}, top-2 PCs"),
                                 f"Explained variance {t['pca']['explained'][0]:.0%} and {t['pca']['explained'][1]:.0%}."),
                 H.plotly_figure(plots.steering_curve(c, b, p, "Sentiment steering (CAA)"),
                                 "Behaviour: log P(positive words) - log P(negative words) on neutral prompts."),
                 H.table([[f"{k:g}", txt] for k, txt in zip(c, s["samples"])], ["coefficient", "'I think that' ..."])]
        if "extras" in data:
            parts.append(self._render_extras(data["extras"]))
        return "".join(parts)

    def _render_extras(self, e: dict[str, Any]) -> str:
        fv, rf, iti = e["fv"], e["reft"], e["iti"]
        gain = C.direction(fv["with_fv"] - fv["zero_shot"], ACC_GAIN, "raises", "lowers", "does not clearly change")
        facts = [f"A function vector for antonyms (top {len(fv['heads'])} heads, added at layer {fv['layer']}) "
                 f"{gain.word} zero-shot accuracy on {fv['n_test']} held-out words: {fv['zero_shot']:.0%} -> "
                 f"{fv['with_fv']:.0%} ({gain.test}; 5-shot prompting: {fv['few_shot']:.0%})."]
        for k, r in rf.items():
            learns = C.direction(r["after"] - r["before"], ACC_GAIN, "learns zero-shot antonyms",
                                 "gets worse at zero-shot antonyms", "does not clearly learn zero-shot antonyms")
            facts.append(f"{k} {learns.word}: held-out accuracy {r['before']:.0%} -> {r['after']:.0%} "
                         f"({learns.test}) with {r['params']:,} parameters (rank-matched LoRA on q,v of every layer: "
                         f"{r['lora']:,}).")
        a0, aN = iti["rows"][0], iti["rows"][-1]
        facts.append(f"ITI on {len(iti['heads'])} heads: true-vs-false attribute margin {a0[1]:+.2f} -> {aN[1]:+.2f} nats "
                     f"(alpha {aN[0]:g}), perplexity {a0[3]:.1f} -> {aN[3]:.1f}.")
        return (H.findings(facts) + H.plotly_figure(plots.head_heatmap(fv["effects"]), "Function-vector head effects")
                + H.table([[f"{r[0]:g}", f"{r[1]:+.2f}", f"{r[2]:.0%}", f"{r[3]:.1f}"] for r in iti["rows"]],
                          ["ITI alpha", "margin (nats)", "true wins", "perplexity"]))


SECTION = RepresentationsSection()
