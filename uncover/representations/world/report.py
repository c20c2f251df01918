"""The report's "World model" section: Othello-GPT trained here, board probes by layer for both label
schemes, a board read by the probe, and flip interventions.

It uses a saved run when one is present (``uncover othello train`` saves to ``default_run_dir("cpu")``);
otherwise the quick default trains a small 6x6 model for about a minute (``ctx.full`` trains the CPU
configuration and saves it). Findings are chosen by the thresholds named next to them (``CLEARLY``,
``READS``, ``TARGET``, through ``uncover.report.claims``) on the measured numbers.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch

from uncover.report import html as H
from uncover.report.claims import Claim, Threshold, at_least, direction
from uncover.report.section import ReportContext

CLEARLY = Threshold("clearly", 0.05, "end of the difference's 95% interval nearest 0")  # beyond ±5 points
READS = Threshold("reads", 0.90, "mean per-square held-out accuracy")  # the probe reads the board
TARGET = Threshold("target", 0.95, "top-1 legal-move rate")  # the CPU configuration's target


def _clearly(gap: float, half: float, up: str, down: str, flat: str) -> Claim:
    """``up`` / ``down`` when the whole 95% interval (gap ± half) lies beyond ±CLEARLY, else ``flat``."""
    nearest = gap - half if gap > 0 else gap + half
    if (gap > 0) != (nearest > 0):
        nearest = 0.0
    return direction(nearest, CLEARLY, up, down, flat)


def training_findings(t: dict[str, Any]) -> list[str]:
    c, last = t["config"], t["curves"][-1]
    reached = next((r for r in t["curves"] if r["legal_acc"] >= TARGET.value), None)
    shape = f"{c['n_layers']} layers, d_model {c['d_model']}, {c['n_heads']} heads"
    out = [f"Othello-GPT ({shape}) on {c['size']}x{c['size']} games of random legal moves ({c['n_games']} training "
           f"games): after {last['step']} steps the top-1 prediction is legal at {last['legal_acc']:.1%} of held-out "
           f"positions (legal-set F1 {last['legal_f1']:.2f}); {t['wall_seconds']:.0f} s wall clock, "
           f"{t['cpu_seconds']:.0f} s of CPU time."]
    claim = at_least(last["legal_acc"], TARGET, "reached", "did not reach")
    out.append(f"It {claim.word} the {TARGET.value:.0%} legal-move target ({claim.test})"
               + (f"; first at step {reached['step']} ({reached['seconds']:.0f} s of training)." if reached else "."))
    return out


def probe_findings(p: dict[str, Any]) -> list[str]:
    best = p["best_layer"]
    i = p["layers"].index(best)
    acc = p["accuracy"]
    mine, color = acc["mine/linear"]["by_layer"][i], acc["color/linear"]["by_layer"][i]
    compare = _clearly(p["gap"], p["gap_half_width"], "clearly more accurate than", "clearly less accurate than",
                       "not clearly different from")
    reads = at_least(mine, READS, "reads the board", f"does not reach {READS.value:.0%} per-square accuracy")
    out = [f"At layer {best}, the best for the linear empty/mine/theirs probe, it reads {mine:.1%} of squares right "
           f"on held-out games; the linear empty/black/white probe reads {color:.1%}: mine/theirs is {compare.word} "
           f"black/white (difference {p['gap']:+.1%} ± {p['gap_half_width']:.1%}, 95% interval over "
           f"{p['gap_games']} games; {compare.test}).",
           f"The linear mine/theirs probe {reads.word} ({mine:.1%}; {reads.test})."]
    if "mine/mlp" in acc and "color/mlp" in acc:
        mm, cm = max(acc["mine/mlp"]["by_layer"]), max(acc["color/mlp"]["by_layer"])
        out.append(f"Nonlinear (MLP) probes at their best layers: mine/theirs {mm:.1%}, black/white {cm:.1%} "
                   f"(commonest-class baselines {p['baseline']['mine']:.1%} and {p['baseline']['color']:.1%}).")
    return out


def intervention_findings(results: dict[str, Any]) -> list[str]:
    names = {"linear": "Moving the residual along the probe's mine/theirs direction (Nanda)",
             "gradient": "Gradient steps until the probe reads the flipped board (Li)"}
    out = []
    for method, r in results.items():
        claim = _clearly(r["gap"], r["gap_half_width"],
                         "clearly more often legal for the edited board than for the original",
                         "clearly less often legal for the edited board than for the original",
                         "not clearly more often legal for the edited board than for the original")
        out.append(f"{names.get(method, method)} at layers {r['layers'][0]}-{r['layers'][-1]} over {r['n']} "
                   f"positions: top-1 predictions are {claim.word} ({r['share_edited']:.1%} vs {r['share_original']:.1%}; "
                   f"difference {r['gap']:+.1%} ± {r['gap_half_width']:.1%}; {claim.test}). "
                   f"Without the edit: {r['base_share_edited']:.1%} vs {r['base_share_original']:.1%}.")
    return out


@contextmanager
def _one_thread() -> Iterator[None]:
    """A toy model is many small ops: one intra-op thread is faster than two on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class WorldSection:
    key = "world"
    title = "World model: Othello-GPT's board state"
    version = "1"

    def compute(self, model: Any, ctx: ReportContext) -> dict[str, Any]:
        from uncover.representations.world.analysis import StudyConfig, study
        from uncover.representations.world.model import default_run_dir, load_run, named_config, train_othello

        saved = default_run_dir("cpu")
        with _one_thread():
            if (saved / "othello_run.json").exists():
                run, source = load_run(saved), f"saved run in {saved}"
            elif ctx.full:
                run, source = train_othello(named_config("cpu", seed=ctx.seed), out_dir=saved,
                                            progress=ctx.progress), f"trained for this report, saved to {saved}"
            else:
                run, source = train_othello(named_config("quick", seed=ctx.seed), progress=ctx.progress), \
                    "quick run trained for this report (train the CPU configuration with `uncover othello train`)"
            big = ctx.full or run.config.steps >= 1000
            cfg = StudyConfig(probe_games=500 if big else 200, probe_steps=200 if big else 150,
                              flips=300 if big else 150, seed=ctx.seed)
            data = study(run, cfg, progress=ctx.progress)
        data["source"] = source
        return data

    def render(self, data: dict[str, Any]) -> str:
        from uncover.representations.world import plots

        parts = [H.paragraph(
            "Does a sequence model trained only to predict legal Othello moves build a model of the board? "
            f"(survey section 3.1; Li et al. 2022, Nanda et al. 2023). Source: {data['source']}.")]
        parts += ["<h3>Training</h3>", H.findings(training_findings(data["training"])),
                  H.plotly_figure(plots.training_curve(data["training"], TARGET.value),
                                  "Share of held-out positions where the top-1 move is legal, and the legal-set F1 "
                                  f"(moves given probability >= 1% against the legal moves).")]
        parts += ["<h3>Probing the board</h3>", H.findings(probe_findings(data["probes"]), headline=1),
                  H.plotly_figure(plots.probe_accuracy(data["probes"]),
                                  "Held-out accuracy of probes trained at each layer's residual stream "
                                  f"({data['probes']['n_train_positions']} training, {data['probes']['n_test_positions']} "
                                  "held-out positions)."),
                  H.plotly_figure(plots.board(data["board"]), "A held-out position: the real board (relative to the "
                                  "player to move) and the linear probe's reading.")]
        parts += ["<h3>Editing the board</h3>", H.findings(intervention_findings(data["interventions"]), headline=1),
                  H.plotly_figure(plots.interventions(data["interventions"]),
                                  "Each position flips one stone whose flip changes the legal moves; bars give the "
                                  "share of top-1 predictions legal for each board (95% intervals).")]
        return "\n".join(parts)


SECTION = WorldSection()
