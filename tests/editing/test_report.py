"""The editing report section on a tiny random model (facts declared known, a small covariance): the rendered
numbers are the computed ones, and every claim's wording follows its stated test."""
import copy
import html
import json
import re

import pytest
import torch

import uncover.applications.editing.report as R
from tests.report_models import report_lm
from tests.report_numbers import thresholds, unmatched_numbers
from uncover.report.section import ReportContext

SIZES = {"pool": 12, "facts": 2, "samples": 2, "layer_stride": 1, "kinds": ["mlp"], "cov_tokens": 256, "edits": 1,
         "steps": 4}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    import uncover.applications.editing.covariance as cov
    import uncover.data.facts as F

    mp = pytest.MonkeyPatch()
    folder = tmp_path_factory.mktemp("covariance")
    mp.setattr(cov, "cache_dir", lambda model: folder)  # the covariance is cached here, not in the user's cache
    mp.setattr(F, "known_facts", lambda model, facts=None: list(facts or F.FACTS)[:8])  # a random model knows none
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return json.loads(json.dumps(R.SECTION.compute(report_lm(), ReportContext(), sizes=SIZES)))
    finally:
        torch.set_num_threads(threads)
        mp.undo()


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
    page = R.SECTION.render(data)
    t, r = data["trace"], data["rome"]
    assert t["layers"] == [0, 1, 2] and t["mlp_peak_layer"] == r["layer"]
    assert f"efficacy {r['after']['rewrite']:.0f}% (before {r['before']['rewrite']:.0f}%)" in page
    derived = [len(t["facts"])]
    assert unmatched_numbers(page, data, derived, thresholds(R) + [2022]) == []  # Meng et al. 2022
    assert "Plotly.newPlot" in page


def test_tracing_wording_follows_the_probabilities(data):
    def trace(clean, corrupt, effect):
        lines = _render(data, lambda d: d["trace"].update(clean_prob=clean, corrupt_prob=corrupt, mlp_peak_effect=effect))
        return _one(lines, "Causal tracing") + " | " + _one(lines, "Restoring MLP")

    ok = trace(0.6, 0.1, 0.2)
    assert "noising the subject drops the attribute's probability, 0.600 -> 0.100" in ok and "token helps most" in ok
    flat = trace(0.3, 0.29, 0.001)
    assert "does not clearly change the attribute's probability" in flat and "helps little even at its best" in flat
    assert "noising the subject raises" in trace(0.1, 0.5, 0.0)


def test_rome_wording_follows_efficacy(data):
    def rome(before, after):
        def edit(d):
            d["rome"]["before"]["rewrite"], d["rome"]["after"]["rewrite"] = before, after
        return _one(_render(data, edit), "ROME at layer")

    assert " rewrote " in rome(0.0, 100.0) and "(efficacy ≥ 50%)" in rome(0.0, 100.0)
    assert " did not rewrite " in rome(0.0, 20.0) and "(efficacy < 50%)" in rome(0.0, 20.0)
    assert " did not need to rewrite " in rome(100.0, 100.0)


def test_an_edit_that_costs_the_neighbours_is_flagged_not_specific(data):
    def specific(before, after):
        def edit(d):
            d["rome"]["before"]["neighbourhood"], d["rome"]["after"]["neighbourhood"] = before, after
        return _one(_render(data, edit), "The edit is")

    assert specific(100.0, 80.0).startswith("The edit is specific to its subject: the neighbourhood score went from "
                                            "100% to 80% (neighbourhood drop ≤ 30 points)")
    flagged = specific(100.0, 20.0)
    assert "is not specific (it changed other subjects' answers too)" in flagged and "drop > 30 points" in flagged
