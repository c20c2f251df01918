"""The circuits report section on a tiny random model: rendered numbers are the computed ones, and each
claim's wording follows its stated test."""
import copy
import html
import json
import re

import pytest
import torch

import uncover.components.circuits.report as R
from tests.report_models import report_lm
from tests.report_numbers import thresholds, unmatched_numbers
from uncover.report.section import ReportContext

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = {"tasks": ["ioi"], "n": 3, "methods": ["eap", "eap-ig"], "rankings": ["abs", "signed"], "steps": 2, "points": 5,
        "scrub": {"n": 12, "half_len": 4, "samples": 2}}


@pytest.fixture(scope="module")
def data():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return json.loads(json.dumps(R.SECTION.compute(report_lm(), ReportContext(), sizes=TINY)))
    finally:
        torch.set_num_threads(threads)


def findings(page: str) -> list[str]:
    return [html.unescape(f) for f in re.findall(r"<li(?: class=\"headline\")?>(.*?)</li>", page)]


def test_rendered_numbers_are_the_computed_ones(data):
    d = data["tasks"]["ioi"]
    assert "error" not in d, d
    page = R.SECTION.render(data)
    assert page.count("Plotly.newPlot") == 2
    c = d["circuit"]
    derived = [len([n for n in c["nodes"] if ".H" in n]), sum(1 for n in c["nodes"] if n.endswith("MLP")),
               min(R.MAX_DRAWN, c["edges"]), 100 * R.SPARSE.value]
    for m in d["methods"].values():
        derived += [100 * e / d["n_edges"] for e in m["edges"]]
    assert "error" not in data["scrubbing"], data["scrubbing"]
    assert unmatched_numbers(page, data, derived, thresholds(R) + [1, 0, 2022]) == []
    # the first and last circuits of each curve: 10 edges and all of them (the full model: faithfulness 1)
    for m in d["methods"].values():
        assert m["requested"][-1] == d["n_edges"] and m["faithfulness"][-1] == pytest.approx(1.0, abs=1e-4)


def _render(data, edit):
    d = copy.deepcopy(data)
    edit(d["tasks"]["ioi"])
    return findings(R.SECTION.render(d))


def test_wording_follows_the_data(data):
    def set_curve(d, faith, smallest):
        for m in d["methods"].values():
            m["faithfulness"] = [faith] * len(m["edges"])
            m["smallest"] = smallest
    lines = _render(data, lambda d: set_curve(d, 0.9, 0))
    assert any("faithful (faithfulness ≥ 0.8)" in l for l in lines)
    lines = _render(data, lambda d: set_curve(d, 0.5, None))
    assert any("no top-n circuit tried reaches faithfulness 0.8" in l and "not faithful (faithfulness < 0.8)" in l
               for l in lines)

    def spearman(r):
        return [l for l in _render(data, lambda d: d["agreement"].update(spearman=r)) if "Spearman" in l][0]
    assert " agree (" in spearman(0.9) and " disagree (" in spearman(0.2)

    def share(n_edges):
        def edit(d):
            set_curve(d, 0.9, 0)
            d["n_edges"] = n_edges
        return _render(data, edit)
    first = data["tasks"]["ioi"]["methods"]["eap (abs)"]["edges"][0]
    assert any("a sparse circuit" in l for l in share(first * 100))
    assert any("not a sparse circuit" in l for l in share(first * 2))


def test_scrubbing_wording_follows_the_data(data):
    def lines(hyp, ctrl):
        d = copy.deepcopy(data)
        d["scrubbing"]["hypotheses"]["hypothesis"]["recovered"] = hyp
        d["scrubbing"]["hypotheses"]["control"]["recovered"] = ctrl
        return [l for l in findings(R.SECTION.render(d)) if "scrubbing" in l or l.startswith("Control")]
    first, control = lines(0.95, 0.5)
    assert "0.950 recovered, the hypothesis explains what the head contributes (fraction of the logit difference " \
           "recovered ≥ 0.9)" in first
    assert "0.500 (it does not explain the head" in control and "the token after the earlier copy matters" in control
    first, control = lines(0.6, 0.58)
    assert "leaves part of what the head contributes unexplained" in first and "makes no clear difference" in control
    assert "the control explains more" in lines(0.6, 0.9)[1]


def test_the_scrubbing_result_is_computed_on_the_stated_features(data):
    d = data["scrubbing"]
    assert d["hypotheses"]["hypothesis"]["feature"] == "tokens at positions {}, {}".format(*d["positions"])
    assert d["hypotheses"]["control"]["feature"] == f"token at position {d['positions'][0]}"
    h = d["hypotheses"]["hypothesis"]
    assert h["recovered"] == pytest.approx((h["metric_scrubbed"] - d["metric_random"])
                                           / (d["metric_model"] - d["metric_random"]))
