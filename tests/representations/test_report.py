"""The representations report section on a tiny random model: the rendered numbers are the computed ones,
and every claim's wording follows its stated test (including the --full extras, rendered from given data)."""
import copy
import html
import json
import re

import pytest
import torch

import uncover.representations.report as R
from tests.report_models import report_lm
from tests.report_numbers import thresholds, unmatched_numbers
from uncover.report.section import ReportContext


@pytest.fixture(scope="module")
def data():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is much faster on a shared CPU
    try:
        return json.loads(json.dumps(R.SECTION.compute(report_lm(), ReportContext())))
    finally:
        torch.set_num_threads(threads)


EXTRAS = {"fv": {"task": "antonyms", "layer": 1, "heads": [[0, 1], [1, 2]], "effects": [[0.1, 0.2], [0.3, 0.4]],
                 "zero_shot": 0.1, "with_fv": 0.6, "few_shot": 0.7, "n_test": 20},
          "reft": {"loreft": {"before": 0.05, "after": 0.55, "params": 1234, "lora": 5678, "losses": [2.0, 1.0]},
                   "red": {"before": 0.05, "after": 0.07, "params": 640, "lora": 5678, "losses": [2.0, 1.9]}},
          "iti": {"heads": [[0, 1], [2, 3]], "rows": [[0.0, 0.5, 0.6, 30.0], [8.0, 1.5, 0.8, 33.0]]}}


def sentences(page: str) -> list[str]:
    return [html.unescape(f) for f in re.findall(r"<li(?: class=\"headline\")?>(.*?)</li>", page)]


def _render(data, edit) -> list[str]:
    d = copy.deepcopy(data)
    edit(d)
    return sentences(R.SECTION.render(d))


def _one(lines, start):
    (line,) = [f for f in lines if f.startswith(start)]
    return line


def test_rendered_numbers_are_the_computed_ones(data):
    full = dict(data, extras=EXTRAS)
    page = R.SECTION.render(full)
    lg, s = data["truth"]["sweeps"]["logistic"], data["steering"]
    i = lg["layers"].index(lg["best_layer"])
    assert f"reaches {lg['test'][i]:.0%} held-out accuracy at layer {lg['best_layer']}" in page
    derived = [max(acc) for acc in lg["transfer"].values()] + [len(EXTRAS["fv"]["heads"]), len(EXTRAS["iti"]["heads"])]
    constants = thresholds(R) + [50, 0, 5]  # chance 50%, "(0)" coefficient, "5-shot"
    assert unmatched_numbers(page, full, derived, constants) == []
    assert page.count("Plotly.newPlot") == 4


def test_probe_wording_follows_accuracy(data):
    def first(acc):
        def edit(d):
            lg = d["truth"]["sweeps"]["logistic"]
            lg["test"] = [acc] * len(lg["test"])
        return _one(_render(data, edit), "A logistic truth probe")

    assert "0, above chance (chance 50%; held-out accuracy ≥ 0.6)" in first(0.9)
    assert "not clearly above chance" in first(0.55)

    def transfer(acc):
        def edit(d):
            lg = d["truth"]["sweeps"]["logistic"]
            lg["transfer"] = {f: [acc] * len(lg["layers"]) for f in lg["transfer"]}
        return _render(data, edit)

    low = transfer(0.2)
    assert "the probe's verdict flips under negation)" in _one(low, "The layer-0 probe scores 20% on the held-out family neg")
    assert "verdict flips)" in _one(low, "The layer-0 probe scores 20% on the held-out family facts")
    assert "below chance" not in " ".join(transfer(0.7))


def test_steering_wording_follows_the_shift(data):
    def steer(behaviour, monotone):
        return _one(_render(data, lambda d: d["steering"].update(behaviour=behaviour, monotone=monotone)), "Adding")

    n = len(data["steering"]["coefficients"])
    up = steer([-2.0 + i for i in range(n)], True)
    assert "vector (layer 1, norm" in up and "raises the positive-vs-negative" in up and ", monotonically;" in up
    assert "lowers the positive" in steer([2.0 - i for i in range(n)], True)
    flat = steer([0.1] * n, False)
    assert "does not clearly move" in flat and "not monotonically" in flat


def test_extras_wording_follows_the_accuracies(data):
    lines = _render(data, lambda d: d.update(extras=copy.deepcopy(EXTRAS)))
    assert "raises zero-shot accuracy on 20 held-out words: 10% -> 60%" in _one(lines, "A function vector")
    assert _one(lines, "loreft").startswith("loreft learns zero-shot antonyms: held-out accuracy 5% -> 55%")
    assert _one(lines, "red ").startswith("red does not clearly learn zero-shot antonyms")

    def worse(d):
        d["extras"] = copy.deepcopy(EXTRAS)
        d["extras"]["fv"]["with_fv"] = 0.0
        d["extras"]["reft"]["red"].update(before=0.5, after=0.1)
    lines = _render(data, worse)
    assert "lowers zero-shot accuracy" in _one(lines, "A function vector")
    assert _one(lines, "red ").startswith("red gets worse at zero-shot antonyms")
