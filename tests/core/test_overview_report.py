"""The overview report section on a tiny random model: rendered numbers are the computed ones (the lens's
last layer is the model's own distribution), and "first becomes the top token" follows the ranks."""
import copy
import html
import json
import re

import pytest
import torch

import uncover.report.overview as O
from tests.report_models import report_lm
from tests.report_numbers import unmatched_numbers
from uncover.report.section import ReportContext


@pytest.fixture(scope="module")
def model():
    return report_lm()


@pytest.fixture(scope="module")
def data(model):
    return json.loads(json.dumps(O.SECTION.compute(model, ReportContext())))


def test_rendered_numbers_are_the_computed_ones(model, data):
    page = O.SECTION.render(data)
    for row in data["rows"]:
        with torch.no_grad():
            probs = model(model.to_tokens(row["prompt"]))[0, -1].softmax(-1)
        top = probs.topk(3)
        assert [p for _, p in row["top"][:3]] == pytest.approx(top.values.tolist(), abs=1e-6)
        assert row["answer_prob_by_layer"][-1] == pytest.approx(float(top.values[0]), abs=1e-5)
        assert f"(p={float(top.values[0]):.2f})" in html.unescape(page)
    first = [next((l for l, k in enumerate(r["answer_rank_by_layer"]) if k == 0), None) for r in data["rows"]]
    assert unmatched_numbers(page, data, [f for f in first if f is not None], [5]) == []  # "top 5" in the header


def test_first_layer_wording_follows_the_ranks(data):
    d = copy.deepcopy(data)
    d["rows"][0]["answer_rank_by_layer"] = [3] * (d["n_layers"] - 1) + [0]
    d["rows"][1]["answer_rank_by_layer"] = [2] * d["n_layers"]
    found = [html.unescape(f) for f in re.findall(r"<li(?: class=\"headline\")?>(.*?)</li>", O.SECTION.render(d))]
    assert f"first becomes the lens's top token at layer {d['n_layers'] - 1} of {d['n_layers']}" in found[0]
    assert "first becomes" not in found[1]
