"""Report section "Editing": where facts are recalled (causal tracing) and one ROME edit with its scores.

Quick default on smollm2 (about 90 s on 2 CPU cores): known facts among 48 candidates, MLP-only causal
trace of 4 facts on every third layer with 3 noise samples, a key covariance from 10k corpus tokens
(cached on disk), one ROME edit at the traced MLP peak, scored before and after. ``ctx.full``: residual,
MLP and attention traces of 16 facts on every layer with 10 samples, 50k covariance tokens, and ROME
scores averaged over 10 edits.
"""
from __future__ import annotations

import math
import time
from typing import Any


from uncover.report import claims as C
from uncover.report import html as H
from uncover.report.section import ReportContext

SIZES = {
    "quick": {"pool": 48, "facts": 4, "samples": 3, "layer_stride": 3, "kinds": ["mlp"], "cov_tokens": 10_000,
              "edits": 1, "steps": 20},
    "full": {"pool": 400, "facts": 16, "samples": 10, "layer_stride": 1, "kinds": ["resid", "mlp", "attn"],
             "cov_tokens": 50_000, "edits": 10, "steps": 25},
}
TRACE_RELATIONS = ("landmark_city", "capital", "city_country", "language")
FAVOURITE = "Eiffel Tower"

# cut-offs of the findings' wording (uncover.report.claims); each is printed with its claim
NOISE_DROP = C.Threshold("noise_drop", 0.05, "probability change")
RESTORE_EFFECT = C.Threshold("restore_effect", 0.01, "indirect effect")
EFFICACY = C.Threshold("efficacy", 50, "efficacy", "%")  # P(new) > P(old) on more than half the edits
# an edit that costs the neighbours more than this (neighbourhood score before - after) rewrote the relation,
# not the subject's fact
SPECIFIC = C.Threshold("specific", 30, "neighbourhood drop", "points")


def _clean(values: Any) -> Any:
    """Nested lists with NaN -> None (JSON has no NaN)."""
    if isinstance(values, list):
        return [_clean(v) for v in values]
    return None if isinstance(values, float) and math.isnan(values) else values


class EditingSection:
    key = "editing"
    title = "Editing: causal tracing and ROME"
    version = "2"  # 2: covariance from natural English text, ROME's clamp 1 after a post-norm

    def compute(self, model, ctx: ReportContext, sizes: dict | None = None) -> dict[str, Any]:
        from uncover.applications.editing.covariance import key_covariance
        from uncover.applications.editing.evaluate import build_records, evaluate_rome
        from uncover.applications.editing.rome import RomeConfig
        from uncover.applications.editing.tracing import trace_facts
        from uncover.data.facts import FACTS, known_facts

        size = sizes or SIZES["full" if ctx.full else "quick"]
        favourite = [f for f in FACTS if f.subject == FAVOURITE]  # edited first when the model knows it
        candidates = [f for f in FACTS if f.relation in TRACE_RELATIONS and f not in favourite]
        step = max(1, len(candidates) // size["pool"])
        pool = favourite + candidates[::step][: size["pool"] - len(favourite)]
        known = known_facts(model, pool)
        if len(known) < 2:
            return {"error": f"{model.name} knows only {len(known)} of {len(pool)} candidate facts; nothing to trace"}
        traced = known[:: max(1, len(known) // size["facts"])][: size["facts"]]
        layers = list(range(0, model.cfg.n_layers, size["layer_stride"]))
        avg = trace_facts(model, traced, progress=ctx.progress, kinds=size["kinds"], n_samples=size["samples"],
                          layers=layers, seed=ctx.seed)
        layer, _ = avg.peak("mlp", "last subject token")
        row = avg.categories.index("last subject token")
        out: dict[str, Any] = {
            "trace": {
                "effects": {k: _clean(v.T.tolist()) for k, v in avg.effects.items()},  # rows: categories
                "categories": avg.categories, "facts": [f"{f.prompt()}{f.attribute}" for f in traced],
                "clean_prob": avg.mean_clean_prob, "corrupt_prob": avg.mean_corrupt_prob,
                "samples": size["samples"], "window": avg.window, "layers": layers,
                "mlp_peak_layer": layer, "mlp_peak_effect": avg.effects["mlp"][layer, row].item(),
                "mlp_global_peak": list(avg.peak("mlp", None)),
            },
            "n_known": len(known), "n_pool": len(pool),
        }

        start = time.perf_counter()
        cov = key_covariance(model, layer, size["cov_tokens"], progress=ctx.progress)[layer]
        out["covariance"] = {"n_tokens": cov.n_tokens, "source": cov.source, "seconds": time.perf_counter() - start}
        records = build_records(model, pool, n=size["edits"], seed=ctx.seed, known=known)
        if not records:
            out["error"] = "no known fact has a known alternative attribute in its relation; no edit to show"
            return out
        cfg = RomeConfig(layer=layer, steps=size["steps"], n_prefixes=3)
        ev = evaluate_rome(model, records, cfg, covariance=cov.mom2, progress=ctx.progress)
        first = records[0]
        out["rome"] = {
            "layer": layer, "before": ev.before, "after": ev.after, "seconds_per_edit": ev.seconds_per_edit,
            "request": {"text": first.request.text, "old": first.old, "new": first.request.target},
            "generations_before": ev.rows_before[0]["generations"],
            "generations_after": ev.rows_after[0]["generations"],
            "prompts": first.generation_prompts, "n_paraphrases": len(first.paraphrases),
            "n_neighbours": len(first.neighbours),
        }
        return out

    def render(self, data: dict[str, Any]) -> str:
        from uncover.applications.editing import plots

        if "trace" not in data:
            return H.paragraph(data["error"])
        if "rome" not in data:
            return H.paragraph(data["error"])  # traced, but nothing to edit
        t, r = data["trace"], data["rome"]
        b, a = r["before"], r["after"]
        req = r["request"]
        n_edits = a["n_records"]
        facts = (f"{len(t['facts'])} facts the model knows ({data['n_known']} of {data['n_pool']} candidates "
                 f"known)")
        drop = C.direction(t["clean_prob"] - t["corrupt_prob"], NOISE_DROP, "drops", "raises", "does not clearly change")
        helps = C.at_least(t["mlp_peak_effect"], RESTORE_EFFECT, "helps most", "helps little even at its best,")
        rewrote = C.at_least(a["rewrite"], EFFICACY, "rewrote", "did not rewrite")
        if rewrote.holds and b["rewrite"] >= EFFICACY.value:  # nothing to rewrite: new already beat old
            rewrote = C.Claim(None, "did not need to rewrite", f"efficacy ≥ {EFFICACY.fmt()} before the edit too")
        specific = C.at_most(b["neighbourhood"] - a["neighbourhood"], SPECIFIC, "specific",
                             "not specific (it changed other subjects' answers too)")
        findings = [
            f"Causal tracing over {facts}: noising the subject {drop.word} the attribute's probability, "
            f"{t['clean_prob']:.3f} -> {t['corrupt_prob']:.3f} on average ({t['samples']} noise samples; {drop.test}).",
            f"Restoring MLP outputs (window of {t['window']} layers) at the last subject token {helps.word} around "
            f"layer {t['mlp_peak_layer']} ({t['mlp_peak_effect']:+.3f} probability; {helps.test}); the largest MLP "
            f"effect anywhere is at layer {t['mlp_global_peak'][0]}, {t['mlp_global_peak'][1]}.",
            f"ROME at layer {r['layer']} {rewrote.word} {req['text']!r} from {req['old']!r} to {req['new']!r} "
            f"({rewrote.test}): "
            f"efficacy {a['rewrite']:.0f}% (before {b['rewrite']:.0f}%), paraphrase {a['paraphrase']:.0f}% over "
            f"{r['n_paraphrases']} paraphrases, neighbourhood {a['neighbourhood']:.0f}% over "
            f"{r['n_neighbours']} neighbours (before {b['neighbourhood']:.0f}%)"
            + (f", averaged over {n_edits} edits." if n_edits > 1 else "."),
            f"The edit is {specific.word} to its subject: the neighbourhood score went from {b['neighbourhood']:.0f}% "
            f"to {a['neighbourhood']:.0f}% ({specific.test}).",
            f"One ROME edit took {r['seconds_per_edit']:.1f} s; the key covariance used "
            f"{data['covariance']['n_tokens']} tokens of the {data['covariance']['source']!r} corpus "
            "(computed once, cached on disk).",
        ]
        fig = plots.trace_heatmaps(t["effects"], t["categories"],
                                   f"average indirect effect over {len(t['facts'])} facts", layers=t["layers"])
        rows = [[k, f"{b[key]:.0f}%", f"{a[key]:.0f}%"] for k, key in [
            ("efficacy: P(new) > P(old)", "rewrite"), ("paraphrase: P(new) > P(old)", "paraphrase"),
            ("neighbourhood: P(true) > P(new)", "neighbourhood"), ("harmonic mean", "score"),
            ("efficacy accuracy (token-level)", "rewrite_acc"),
            ("paraphrase accuracy (token-level)", "paraphrase_acc"),
            ("neighbourhood accuracy (token-level)", "neighbourhood_acc")]]
        rows.append(["fluency: n-gram entropy (bits)", f"{b['fluency']:.2f}", f"{a['fluency']:.2f}"])
        gens = [[p, g0, g1] for p, g0, g1 in zip(r["prompts"], r["generations_before"], r["generations_after"])]
        return (
            H.findings(findings, headline=4)
            + H.plotly_figure(fig, "Causal tracing (Meng et al. 2022): probability of the correct attribute "
                                   "recovered by restoring clean states in a run with a noised subject.")
            + H.table(rows, ["CounterFact-style score", "before", "after"])
            + H.table(gens, ["prompt", "generation before", "generation after (sampled, top-k 5)"])
            + H.paragraph("Traced facts: " + "; ".join(t["facts"]))
        )


SECTION = EditingSection()
