"""The components report section on a tiny random model: the rendered numbers are the computed ones, and
every claim's wording follows its stated test (data for which a claim fails changes the words)."""
import copy
import json
import re

import numpy as np
import pytest
import torch

import uncover.components.report as R
from tests.report_models import report_lm
from tests.report_numbers import thresholds, unmatched_numbers
from uncover.report.section import ReportContext

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = {"seqs": 1, "half_len": 12, "check_heads": 3, "ioi": 2, "facts": 2, "fact_pool": 12, "stride": 1}


@pytest.fixture(scope="module")
def data():
    import uncover.data.facts as F

    model = report_lm()
    real, threads = F.known_facts, torch.get_num_threads()
    F.known_facts = lambda m, facts=None: list(facts or F.FACTS)[:4]  # a random model knows no fact
    torch.set_num_threads(1)  # tiny models: one thread is much faster on a shared CPU
    try:
        return json.loads(json.dumps(R.SECTION.compute(model, ReportContext(), sizes=TINY)))
    finally:
        F.known_facts = real
        torch.set_num_threads(threads)


def findings(page: str) -> list[str]:
    import html

    return [html.unescape(f) for f in re.findall(r"<li(?: class=\"headline\")?>(.*?)</li>", page)]


def test_rendered_numbers_are_the_computed_ones(data):
    page = R.SECTION.render(data)
    assert page.count("Plotly.newPlot") == 10
    io, ab = data["ioi"], data["ablation"]
    act, attr = np.array(io["activation"], dtype=float), np.array(io["attribution"], dtype=float)
    ok = ~np.isnan(act)
    r = float(np.corrcoef(act[ok], attr[ok])[0, 1])  # Pearson r by numpy, not the section's helper
    assert f"Pearson r = {r:.3f}" in page
    assert io["dla_sum"] == pytest.approx(io["dla_actual"], abs=1e-2)
    rnd = [x - ab["clean"] for x in ab["random"]]
    derived = [ab["top"] - ab["clean"], sum(rnd) / len(rnd), max(rnd), data["n_layers"] * data["n_heads"],
               len(ab["top_heads"]), len(rnd), ok.sum(), len(data["knockout"]["facts"])]
    derived += [r + 1 for r in data["enrichment"]["subject_rank"]]
    derived += [int(np.argmax(row)) for row in io["resid"]]  # the position that restores most, per layer
    constants = thresholds(R) + [R.ENRICHED_RANK, 2, 1, 0]  # "2 forwards + 1 backward", "0 = corrupted, 1 = clean"
    assert unmatched_numbers(page, data, derived, constants) == []


def _render(data, edit) -> list[str]:
    d = copy.deepcopy(data)
    edit(d)
    return findings(R.SECTION.render(d))


def _one(lines, start):
    (line,) = [f for f in lines if f.startswith(start)]
    return line


def test_agreement_wording_follows_pearson(data):
    def with_r(r):
        return _one(_render(data, lambda d: d["ioi"].update(pearson=r)), "Attribution patching")

    assert "agrees with activation patching" in with_r(0.95) and "Pearson r ≥ 0.7" in with_r(0.95)
    assert "does not clearly agree" in with_r(0.3) and "Pearson r < 0.7" in with_r(0.3)
    assert "does not clearly agree" in with_r(float("nan"))


def test_equality_wordings_follow_the_differences(data):
    lens = lambda x: _one(_render(data, lambda d: d.update(lens_last_vs_output=x)), "The logit lens")  # noqa: E731
    assert "last layer equals" in lens(1e-6) and "last layer differs from" in lens(0.3)
    dla = lambda s, a: _one(_render(data, lambda d: d["ioi"].update(dla_sum=s, dla_actual=a)), "Direct logit")  # noqa: E731
    assert "so they match" in dla(2.0, 2.004) and "so they do not match" in dla(2.0, 2.5)


def test_ablation_wording_follows_the_loss_change(data):
    def ablation(clean, top, random):
        return _one(_render(data, lambda d: d["ablation"].update(clean=clean, top=top, random=random)), "Zero-ablating")

    up = ablation(1.0, 3.0, [1.1, 1.0, 0.9])
    assert "raises the loss" in up and "more than any random draw" in up and "+2.00" in up
    assert "lowers the loss" in ablation(3.0, 1.0, [3.0, 3.0, 3.0])
    flat = ablation(1.0, 1.01, [1.5, 1.0, 1.0])
    assert "does not clearly change the loss" in flat and "less than any random draw" in flat
    assert "about as much as any random draw" in ablation(1.0, 2.0, [2.0, 1.0, 1.0])


def test_induction_heads_are_named_only_above_the_threshold(data):
    def induction(top):
        return _one(_render(data, lambda d: d["top"].update(induction=top)), ("Induction heads", "No head"))

    named = induction([[1, 2, 0.9], [2, 0, 0.1]])
    assert named.startswith("Induction heads (induction score ≥ 0.3): L1H2 (0.90) attend") and "L2H0" not in named
    assert induction([[1, 2, 0.2], [2, 0, 0.1]]).startswith("No head is an induction head")


def test_knockout_says_drop_only_for_a_drop(data):
    def knock(values):
        def edit(d):
            d["knockout"]["values"] = [values] * len(d["knockout"]["targets"])
        return _one(_render(data, edit), "Blocking last -> subject")

    n = len(data["knockout"]["centres"])
    assert "drops by 30%" in knock([-30.0] + [0.0] * (n - 1))
    assert "does not clearly drop in any window" in knock([-2.0] * n)
    assert "rises in every window" in knock([10.0] * n)


def test_residual_and_enrichment_wording(data):
    def resid(value):
        def edit(d):
            d["ioi"]["resid"] = [[value] * len(row) for row in d["ioi"]["resid"]]
        return _one(_render(data, edit), "IOI residual stream before layer 0")

    assert "restores the most" in resid(0.6) and "restores little even at its best" in resid(0.02)

    def enrich(ranks):
        return [f for f in _render(data, lambda d: d["enrichment"].update(subject_rank=ranks)) if "lens's top" in f][0]

    n = len(data["enrichment"]["labels"])
    assert "first enters the lens's top 100" in enrich([500] * (n - 1) + [3])
    assert "never enters the lens's top 100 (best median rank 500)" in enrich([500] * n)


def test_ioi_head_wording_follows_the_signs(data):
    def ioi(act_top, dla_top):
        lines = _render(data, lambda d: d["ioi"].update(top_activation=act_top, dla_heads_top=dla_top))
        return _one(lines, "IOI: logit difference") + " | " + _one(lines, "Direct logit")

    good = ioi([[1, 2, 0.6], [0, 1, 0.05]], [[2, 3, 0.4], [1, 0, -0.1]])
    assert "restores most (activation patching, estimated restored share ≥ 0.1) are L1H2 (0.60)." in good
    assert "right name are L2H3 (0.40)." in good
    bad = ioi([[1, 2, 0.05]], [[2, 3, -0.2]])
    assert "no checked head's output restores 0.1 of it on its own" in bad
    assert "no head writes directly for the right name" in bad
