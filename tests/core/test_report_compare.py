"""The depth-and-scale page (`uncover report A --compare B`): curves read from the report sections' data onto
relative depth, checked against naive loops; findings words that flip with the data; every printed number from
the data; and the command writing both reports and the page, with its exit code."""
from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

from tests.report_numbers import thresholds, unmatched_numbers
from uncover.report import build
from uncover.report import compare as K
from uncover.report.build import BuiltReport
from tests.offline import network_loads


def section_data(n_layers: int, truth_peak: int, lens_from: int, induction_peak: int, trace_peak: int,
                 ev: float = 0.8, d_sae: int = 256, seed: int = 0) -> dict:
    """The parts of the compared sections' data that the page reads, in their report format, with the given
    peaks (block indices)."""
    rng = random.Random(seed)
    layers = list(range(n_layers))
    bump = lambda peak, top: [top if l == peak else top * rng.uniform(0.1, 0.6) for l in layers]  # noqa: E731
    ranks = [[0 if l >= lens_from else rng.randint(1, 50) for l in layers] for _ in range(4)]
    traced = list(range(0, n_layers, 2))  # every other layer traced; the rows hold None at the others (and NaN)
    effects = [[None if l not in traced[1:] else (0.3 if l == trace_peak else rng.uniform(0, 0.2)) for l in layers]
               for _ in range(2)]
    effects[0] = [None if v is None else 1 - v for v in effects[0]]  # another category's row, peaking elsewhere
    return {
        "overview": {"rows": [{"answer_rank_by_layer": r} for r in ranks], "n_layers": n_layers},
        "components": {"scores": {"induction": [[v, v / 2, v / 3] for v in bump(induction_peak, 0.7)],
                                  "previous_token": [[v / 2, v] for v in bump(0, 0.9)]}},
        "representations": {"truth": {"sweeps": {"logistic": {"layers": layers, "test": bump(truth_peak, 0.9)}}}},
        "editing": {"trace": {"effects": {"mlp": effects}, "categories": ["first subject token", "last subject token"],
                              "layers": traced}},
        "features": {"sae": {"layer": n_layers // 2, "d_sae": d_sae,
                             "metrics": {"explained_variance": ev, "ce_loss_recovered": 0.93, "dead_fraction": 0.01}}},
    }


def built(name: str, n_layers: int, data: dict, d_model: int = 64, params: int = 1_000_000) -> BuiltReport:
    card = {"name": name, "n_layers": n_layers, "d_model": d_model, "n_heads": 4, "d_vocab": 1000, "parameters": params}
    return BuiltReport(Path(f"/tmp/{name}/index.html"), [], data, card)


def test_curves_are_the_section_data_on_relative_depth():
    data = section_data(8, truth_peak=3, lens_from=5, induction_peak=4, trace_peak=6)
    p = K.profile(built("a", 8, data), "a/index.html")
    rows = data["overview"]["rows"]
    for key, (depths, values, layers) in p.curves.items():
        assert depths == [l / 8 for l in layers], key
    depths, values, layers = p.curves["lens"]
    assert values == [sum(1 for r in rows if r["answer_rank_by_layer"][l] == 0) / len(rows) for l in range(8)]
    ind = data["components"]["scores"]["induction"]
    assert p.curves["induction"][1] == [max(ind[l][h] for h in range(len(ind[l]))) for l in range(8)]
    # tracing: the last-subject-token row (one entry per layer), layers without a value (None) left out
    row = data["editing"]["trace"]["effects"]["mlp"][1]
    assert p.curves["tracing"][2] == [2, 4, 6] and p.curves["tracing"][1] == [row[2], row[4], row[6]]
    assert p.sae["depth"] == 4 / 8 and p.sae["width"] == 256 / 64


def test_located_points():
    truth, lens = K.CURVES[0], K.CURVES[1]
    assert K.locate(truth, [0, 0.5, 1], [0.2, 0.9, 0.9]) == (0.5, 0.9)  # the first of equal peaks
    assert K.locate(lens, [0, 0.5, 1], [0.25, 0.5, 1.0]) == (0.5, 0.5)
    assert K.locate(lens, [0, 0.5], [0.25, 0.25]) is None


def test_findings_say_agree_or_differ_by_the_stated_thresholds():
    a = K.profile(built("a", 8, section_data(8, 4, 6, 4, 4, ev=0.80)), "")
    same = K.profile(built("b", 16, section_data(16, 8, 12, 8, 8, ev=0.82, seed=1)), "")  # same relative depths
    far = K.profile(built("c", 16, section_data(16, 1, 2, 14, 14, ev=0.60, seed=2)), "")
    truth = K.CURVES[0]
    assert "agree in depth (spread of relative depth ≤ 0.15)" in K.curve_finding(truth, [a, same])
    assert "agree in value" in K.curve_finding(truth, [a, same])
    assert "differ in depth (spread of relative depth > 0.15)" in K.curve_finding(truth, [a, far])
    lens = K.CURVES[1]
    assert "first reaches 0.5 at relative depth 0.75 in a" in K.curve_finding(lens, [a, same])
    assert K.curve_finding(lens, [a, same]).endswith("the models agree in depth (spread of relative depth ≤ 0.15).")
    assert "differ in depth" in K.curve_finding(lens, [a, far])
    assert "about the same share" in K.sae_finding([a, same]) and "at matched width" in K.sae_finding([a, same])
    assert "different shares (spread of explained variance > 0.05)" in K.sae_finding([a, far])
    wide = K.profile(built("d", 8, section_data(8, 4, 6, 4, 4, d_sae=512)), "")
    assert "at different widths (not matched)" in K.sae_finding([a, wide])
    # a model without the section's data is named, and one model alone is not compared
    del same.curves["truth"]
    assert "not measured for b" in K.curve_finding(truth, [a, same])
    assert "nothing to compare" in K.curve_finding(truth, [a, same])


def test_every_printed_number_comes_from_the_data():
    reports = [built("small", 8, section_data(8, 3, 5, 4, 6), d_model=64, params=1_000_000),
               built("big", 12, section_data(12, 6, 9, 5, 8, ev=0.7, d_sae=384, seed=3), d_model=96, params=2_500_000)]
    profiles = [K.profile(r, r.card["name"] + "/index.html") for r in reports]
    page = K.compare_page(profiles)
    derived = [v for p in profiles for c in K.CURVES if c.key in p.curves
               for v in (K.locate(c, *p.curves[c.key][:2]) or ())]
    derived += [p.sae[k] for p in profiles for k in ("depth", "width")] + [p.card["parameters"] / 1e6 for p in profiles]
    derived += [2.5, 3.2]  # big has 2.5 times small's parameters; survey section 3.2
    spread = lambda xs: max(xs) - min(xs)  # noqa: E731
    derived += [spread([K.locate(c, *p.curves[c.key][:2])[i] for p in profiles]) for c in K.CURVES for i in (0, 1)]
    cards = [r.card for r in reports]
    assert unmatched_numbers(page, [cards, [r.data for r in reports]], derived, thresholds(K) + [0, 1]) == []
    assert page.count("Plotly.newPlot") == len(K.CURVES)
    assert 'href="small/index.html"' in page and 'href="big/index.html"' in page


class Compared:
    """A stand-in for the five compared sections: returns ``section_data`` for the model's depth."""

    def __init__(self, key: str, fails: bool = False):
        self.key, self.title, self.version, self.fails = key, f"section {key}", "1", fails

    def compute(self, model, ctx):
        if self.fails and model.cfg.n_layers == 2:
            raise RuntimeError("measured nothing")
        n = model.cfg.n_layers
        return section_data(n, n // 2, n - 1, n // 2, n - 1, d_sae=4 * model.cfg.d_model)[self.key]

    def render(self, data):
        return f"<p>{self.key}</p>"


@pytest.mark.parametrize("failing", [False, True])
def test_report_command_writes_both_reports_and_the_compare_page(tmp_path, monkeypatch, capsys, failing):
    import uncover.cli as cli
    from tests.conftest import tiny_hf
    from tests.editing.conftest import word_tokenizer

    for name, layers in (("three", 3), ("two", 2)):
        hf = tiny_hf("llama")
        hf.model.layers = hf.model.layers[:layers]
        hf.config.num_hidden_layers = layers
        hf.save_pretrained(tmp_path / name)
        word_tokenizer().save_pretrained(tmp_path / name)
    module = type(sys)("compared_sections")
    for key in K.COMPARED:
        setattr(module, key, Compared(key, fails=failing and key == "editing"))
    monkeypatch.setitem(sys.modules, "compared_sections", module)
    monkeypatch.setattr(build, "SECTIONS", [f"compared_sections:{k}" for k in K.COMPARED])
    monkeypatch.setattr(cli, "AREAS", [])
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["uncover", "report", str(tmp_path / "three"), "--out", str(out),
                                      "--compare", str(tmp_path / "two")])
    code = 0
    try:
        cli.main()
    except SystemExit as e:
        code = e.code
    printed = " ".join(capsys.readouterr().out.split())
    page = (out / "compare.html").read_text()
    assert (out / "index.html").exists() and f"comparison written to {out / 'compare.html'}" in printed
    assert network_loads(out) == []
    other = next((out / "compare").glob("*/index.html"))
    assert f'href="{other.relative_to(out)}"' in page and 'href="index.html"' in page
    assert f"Truth-probe accuracy peaks at relative depth 0.33 in {tmp_path / 'three'}" in page
    if failing:
        assert code == 1 and "editing (section editing): RuntimeError: measured nothing" in printed
        assert "Sections that failed (their curves are missing)" in page and f"not measured for {tmp_path / 'two'}" in page
    else:
        assert code == 0 and "failed" not in printed and f"0.50 in {tmp_path / 'two'}" in page
