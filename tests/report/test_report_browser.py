"""Every report figure checked in headless Chromium (Playwright for Python, Debian's chromium).

One page holds every section's figures, rendered by each section's own ``render`` from data computed on tiny
models (the sizes the section tests use; lying heads and the wrapper toy from small given results, as their
section tests do). ``uncover.report.browser_check`` loads it, and the test asserts no JavaScript error, every
figure drawn, and none of its axis, data or label rules broken. A screenshot of every figure and of the page is
written under pytest's tmp_path (the path is printed; ``$UNCOVER_SCREENSHOTS`` picks another folder).

A second test feeds the checker figures that are broken on purpose (a log axis from 1e-30 to 1e108, NaN data,
an unkeyed heatmap, ...) and asserts it flags each, so the first test can fail.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import time
from pathlib import Path

import pytest
import torch

from uncover.report import browser_check as B

pytestmark = pytest.mark.skipif(B.missing() is not None, reason=(
    f"{B.missing()}; the browser check of the report's figures did not run"))


def _tiny_sections(tmp: Path) -> list[tuple[str, str, dict]]:
    """(key, title, data) of every report section, computed on tiny models."""
    import uncover.applications.editing.covariance as cov
    import uncover.applications.pruning.report as pruning
    import uncover.components.circuits.report as circuits
    import uncover.components.report as components
    import uncover.data.facts as F
    import uncover.features.report as features
    import uncover.features.superposition as sp
    import uncover.report.overview as overview
    import uncover.representations.report as representations
    import uncover.representations.world.report as world
    from tests.components.test_circuits_report import TINY as CIRCUITS_TINY
    from tests.components.test_report import TINY as COMPONENTS_TINY
    from tests.dynamics.test_report import _small_data as dynamics_data
    from tests.editing.test_report import SIZES as EDITING_SIZES
    from tests.report_models import report_lm
    from uncover.applications.editing import report as editing
    from uncover.dynamics.report import SECTION as DYNAMICS
    from uncover.report.section import ReportContext
    from uncover.representations.world.analysis import StudyConfig, study
    from uncover.representations.world.model import named_config, train_othello

    class Factory:  # what dynamics' helper asks of pytest's tmp_path_factory
        def mktemp(self, name):
            path = tmp / name
            path.mkdir(parents=True, exist_ok=True)
            return path

    model = report_lm()
    ctx = ReportContext(work_dir=tmp / "work")
    mp = pytest.MonkeyPatch()
    # a random model knows no fact: declare the first few known (as the section tests do)
    mp.setattr(F, "known_facts", lambda m, facts=None: list(facts or F.FACTS)[:8])
    mp.setattr(cov, "cache_dir", lambda m: tmp / "covariance")
    train, phases = sp.train_toy_models, sp.phase_diagram
    mp.setattr(sp, "train_toy_models", lambda cfg, *a, **k: train(dataclasses.replace(cfg, steps=30), *a, **k))
    mp.setattr(sp, "phase_diagram", lambda *a, **k: phases(*a, **{**k, "steps": 30}))
    mp.setitem(features.SAE_SIZES, "default", dict(n_train=24, n_eval=4, width=2, epochs=1))
    out, times = [], {}

    def add(section, compute):
        start = time.perf_counter()
        out.append((section.key, section.title, json.loads(json.dumps(compute()))))  # what the report caches
        times[section.key] = time.perf_counter() - start

    try:
        add(overview.SECTION, lambda: overview.SECTION.compute(model, ctx))
        add(components.SECTION, lambda: components.SECTION.compute(model, ctx, sizes=COMPONENTS_TINY))
        add(circuits.SECTION, lambda: circuits.SECTION.compute(model, ctx, sizes=CIRCUITS_TINY))
        add(features.SECTION, lambda: features.SECTION.compute(model, ctx))
        add(representations.SECTION, lambda: representations.SECTION.compute(model, ctx))

        def world_data():
            run = train_othello(named_config("tiny"), out_dir=tmp / "othello")
            data = study(run, StudyConfig(probe_games=40, probe_steps=30, probe_hidden=16, flips=20, gradient_steps=10))
            return dict(data, source="test")
        add(world.SECTION, world_data)
        add(DYNAMICS, lambda: dynamics_data(Factory()))
        add(editing.SECTION, lambda: editing.SECTION.compute(model, ctx, sizes=EDITING_SIZES))
        add(pruning.SECTION, lambda: _pruning_data(pruning, ctx))
    finally:
        mp.undo()
    print("section data computed in " + ", ".join(f"{k} {t:.1f} s" for k, t in times.items()))
    return out


def _pruning_data(pruning, ctx) -> dict:
    """Pruning, bias and toxicity computed on a tiny model; lying heads and the wrapper toy from small results
    (their own tests run them), through the section's JSON form."""
    from tests.applications.conftest import words_tokenizer
    from tests.conftest import tiny_hf
    from tests.applications.test_report import TINY
    import uncover as uc
    from uncover.applications.alignment.lying import LyingResult
    from uncover.applications.wrappers import WrapperConfig, WrapperResult
    from uncover.data import bias, wordlists

    texts = list(bias.bias_prompts().prompts) + [" he she"]
    texts += [w for lst in wordlists.LISTS.values() for w in lst] + list(wordlists.NEUTRAL_PROMPTS)
    texts += list(wordlists.PROVOKING_PROMPTS)
    data = pruning.SECTION.compute(uc.load(tiny_hf("llama"), tokenizer=words_tokenizer(texts)), ctx, sizes=TINY)
    g = torch.Generator().manual_seed(0)
    t = lambda *shape: torch.rand(*shape, generator=g)  # noqa: E731
    lying = LyingResult(
        [{"name": "plain", "tokens": 30, "n": 8, "honest_acc": 0.9, "lying_acc": 0.1, "honest_raw_acc": 0.8,
          "lying_raw_acc": 0.2, "honest_true_share": 0.5, "lying_true_share": 0.5, "follows": True}],
        "plain", True, 0.9, 0.1, 2.0, -1.5, t(2), t(2, 3), t(2, 3), t(2, 3), t(2, 3),
        [(0, 0), (1, 2)], [1, 2], [0.6, 0.9], [0.4, 0.8], 0.95, 1.1, 2, {"n": 8, "candidates": None})
    wrapper = {"config": dataclasses.asdict(WrapperConfig()), "pretrained_acc": 0.99, "pretrained_finetune_acc": 0.3,
               "finetuned_acc": 0.3, "finetuned_finetune_acc": 0.95, "random_acc": 0.05, "probe_sites": ["blocks.0"],
               "probe": {"pretrained": [0.99], "finetuned": [0.8], "random": [0.5]}, "n_units": 100,
               "prune_counts": [0, 2], "prune": {"greedy search": {"capability": [0.3, 0.9], "finetune": [0.95, 0.4],
                                                                   "units": ["L0N1", "L1N2"]}},
               "revive_curve": [0.3, 0.6, 0.95], "scratch_curve": [0.05, 0.2, 0.5, 0.8, 0.95], "revive_steps": 2,
               "scratch_steps": 4}
    data["lying"] = {"result": pruning._plain(lying.to_fields())}
    data["wrappers"] = {"result": pruning._plain(WrapperResult(**wrapper).to_fields())}
    return data


def _section_module(key: str):
    from uncover.report.build import load_sections

    return {s.key: s for s in load_sections()}[key]


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    """The page of every section's figures, and the checker's result on it."""
    tmp = tmp_path_factory.mktemp("report_browser")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is much faster on a shared CPU
    try:
        sections = _tiny_sections(tmp)
    finally:
        torch.set_num_threads(threads)
    body = "".join(f'<section id="{key}"><h2>{title}</h2>{_section_module(key).render(copy.deepcopy(data))}</section>'
                   for key, title, data in sections)
    page = tmp / "index.html"
    page.write_text(B.standalone_page(body, "every report figure, tiny models"))
    shots = Path(os.environ.get("UNCOVER_SCREENSHOTS") or tmp / "screenshots")
    result = B.check_page(page, shots)
    print(f"\n{result.report()}\nscreenshots of every figure: {shots}")
    return sections, body, result


def test_every_figure_renders_without_errors_or_absurd_axes(checked):
    sections, body, result = checked
    assert result.errors == [], result.errors
    expected = body.count("Plotly.newPlot")
    assert len(result.figures) == expected and expected >= 40, (len(result.figures), expected)
    assert {f.section for f in result.figures} == {key for key, _, _ in sections}  # every section has figures
    assert all(f.screenshot and Path(f.screenshot).stat().st_size > 1000 for f in result.figures)
    assert [str(p) for p in result.problems] == []


def _bad_figures() -> str:
    """Figures broken on purpose, each in a <section> named by the rule it must break."""
    import math

    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from uncover.report import html as H

    figs = {}
    # the motivating bug: losses of 1e-30 and 1e108 on log axes (x too: an annotation at x=100 means 1e100)
    f = go.Figure(go.Scatter(x=[5, 50, 100, 500], y=[1.0, 1e108, 1e-30, 0.5]))
    f.add_vline(x=100, annotation_text="width = n_train")
    figs["log-decades"] = f.update_xaxes(type="log").update_yaxes(type="log")
    figs["empty"] = go.Figure(go.Scatter(x=[1, 2, 3], y=[math.nan] * 3))  # NaN data only
    figs["empty-trace"] = go.Figure([go.Scatter(x=[1, 2], y=[1, 2]), go.Scatter(x=[1, 2], y=[math.nan, math.inf])])
    figs["outlier-range"] = go.Figure(go.Scatter(x=list(range(30)), y=[1.0 + i % 3 for i in range(29)] + [1e12]))
    figs["off-range"] = go.Figure(go.Scatter(x=[1, 2, 3], y=[1, 2, 3])).update_yaxes(range=[10, 20])
    figs["no-colour-key"] = go.Figure(go.Heatmap(z=[[1, 2], [3, 4]], showscale=False))
    two = make_subplots(specs=[[{"secondary_y": True}]])
    two.add_trace(go.Scatter(x=[0, 1, 2], y=[1e-4, 1e-2, 1]))
    two.add_trace(go.Scatter(x=[0, 1, 2], y=[0.13, 0.5, 0.91]), secondary_y=True)
    figs["odd-ticks"] = two.update_yaxes(type="log", secondary_y=False)
    legend = go.Figure([go.Scatter(x=[1, 2], y=[1, 2], name=f"a long legend entry number {i}") for i in range(4)])
    figs["overlapping-text"] = legend.update_layout(xaxis_title="the x axis title", height=300,
                                                    margin=dict(b=40), legend=dict(orientation="h"))
    body = "".join(f'<section id="{rule}">{H.plotly_figure(fig)}</section>' for rule, fig in figs.items())
    body += '<section id="not-rendered"><figure><div id="never" class="plot"></div></figure></section>'
    body += '<section id="js-error"><script>undefinedFunction()</script></section>'
    return body


def test_the_checker_flags_broken_figures(tmp_path, capsys):
    page = tmp_path / "bad.html"
    page.write_text(B.standalone_page(_bad_figures(), "broken figures"))
    result = B.check_page(page, tmp_path / "screenshots", timeout_s=5)
    print(result.report())
    flagged = {(p.figure.split(" ")[0] if p.figure == "page" else p.figure.split("(")[1].split(")")[0], p.rule)
               for p in result.problems}
    expected = ["log-decades", "empty", "empty-trace", "outlier-range", "off-range", "no-colour-key", "odd-ticks",
                "overlapping-text", "not-rendered"]
    assert [r for r in expected if (r, r) not in flagged] == []
    assert ("page", "js-error") in flagged and any("undefinedFunction" in e for e in result.errors)
    log = [p for p in result.problems if p.rule == "log-decades"]
    assert {p.axis for p in log} == {"xaxis", "yaxis"}  # 10^-30 .. 10^108 on y, 10^100 (the annotation) on x
    # nothing else: the good trace of "empty-trace" and the other axes pass
    others = {(s, r) for s, r in flagged if s != r and s != "page"}
    assert others == set(), others
    # the command line: the same problems as JSON, exit status 1
    capsys.readouterr()
    assert B.main([str(page), "--json", "--timeout", "5"]) == 1
    printed = json.loads(capsys.readouterr().out)
    assert sorted(p["rule"] for p in printed["problems"]) == sorted(p.rule for p in result.problems)


def test_double_descent_axes_stay_readable():
    """The report's double-descent data (smollm2 run): train MSE ~1e-28 past the threshold, n_train 100."""
    from uncover.dynamics.plots import double_descent

    widths = [5, 10, 20, 40, 60, 80, 90, 95, 100, 105, 110, 120, 150, 200, 300, 500, 1000, 2000]
    train = [1.43, 1.11, 0.72, 0.34, 0.17, 0.069, 0.043, 0.016] + [1.8e-28, 7.1e-29, 2.1e-28, 2.4e-29, 5.6e-29,
                                                                   5.3e-29, 2.4e-29, 5.0e-29, 2.8e-29, 2.0e-29]
    test = [1.49, 1.19, 1.08, 0.88, 1.59, 2.48, 6.78, 28.7, 29.7, 7.51, 6.33, 3.29, 1.35, 0.91, 0.59, 0.50, 0.42, 0.40]
    fig = double_descent({"widths": widths, "train_loss": train, "test_loss": test, "config": {"n_train": 100}})
    drawn = fig.data[1].y
    assert min(drawn) == 1e-5 and list(fig.data[1].customdata) == train  # floored, the value kept for hover
    assert drawn[:8] == tuple(train[:8])
    (label,) = fig.layout.annotations
    assert label.x == 2.0 and label.text == "width = n_train"  # log10(100): an annotation's x is log10 on a log axis


def test_the_compare_page_renders_without_errors_or_absurd_axes(checked, tmp_path):
    """`uncover report A --compare B`'s page: the tiny model's section data beside a 12-layer model's."""
    from tests.core.test_report_compare import built, section_data
    from tests.report_models import report_lm
    from uncover.report.build import BuiltReport, model_card
    from uncover.report.compare import CURVES, write_compare

    sections, _, _ = checked
    tiny = BuiltReport(tmp_path / "tiny" / "index.html", [], {key: data for key, _, data in sections},
                       model_card(report_lm()))
    other = built("twelve-layers", 12, section_data(12, 7, 9, 4, 6, ev=0.7, d_sae=4 * 64), params=3_000_000)
    page = write_compare([tiny, other], tmp_path / "compare.html")
    result = B.check_page(page, tmp_path / "compare-screenshots")
    print(f"\n{result.report()}\nscreenshots: {tmp_path / 'compare-screenshots'}")
    assert result.errors == [], result.errors
    assert len(result.figures) == len(CURVES) and all(f.screenshot for f in result.figures)
    assert [str(p) for p in result.problems] == []
