"""The features report section on a tiny random model (small toys, a small SAE): the rendered numbers are
the computed ones, and every claim's wording follows its stated test."""
import copy
import dataclasses
import html
import re

import pytest
import torch

import uncover.features.report as R
import uncover.features.superposition as sp
from tests.report_models import report_lm
from tests.report_numbers import thresholds, unmatched_numbers
from uncover.report.section import ReportContext

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    train, phases = sp.train_toy_models, sp.phase_diagram
    mp.setattr(sp, "train_toy_models", lambda cfg, *a, **k: train(dataclasses.replace(cfg, steps=30), *a, **k))
    mp.setattr(sp, "phase_diagram", lambda *a, **k: phases(*a, **{**k, "steps": 30}))
    mp.setitem(R.SAE_SIZES, "default", dict(n_train=24, n_eval=4, width=2, epochs=1))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is much faster on a shared CPU
    try:
        ctx = ReportContext(work_dir=tmp_path_factory.mktemp("features"))
        return R.SECTION.compute(report_lm(), ctx)
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
    import json

    data = json.loads(json.dumps(data))  # what the report caches
    page = R.SECTION.render(data)
    toys, sae = data["toys"], data["sae"]
    m = sae["metrics"]
    assert f"explained variance {m['explained_variance']:.3f}, L0 {m['l0']:.1f}" in page
    dense, sparse = toys["five_in_two"]["D"]
    counts = [sum(row.count(i) for row in toys["phase"]["phase"]) for i in range(3)]
    near = [x for x in (R._fraction_near(d) for d in toys["dimensionality"]["D"]) if x == x]
    derived = [sum(1 for d in dense if d > 0.5), *counts, sum(counts), 100 * sum(near) / max(len(near), 1)]
    derived += [len(c["contexts"]) for c in sae["cards"]]
    constants = thresholds(R) + [R.REPRESENTED, R.SWEEP_M, 20, 0.7, 2, 1, 5, 3, 4, 8, 0.05, 0.4, 2022]  # 2022: the paper
    constants += [R.POOL, R.CARDS, R.N_TOP, 0, 0.2]  # the card choice: pool, cards, contexts, window position 0, 0.2-5%
    assert unmatched_numbers(page, data, derived, constants) == []
    assert page.count('<div class="card">') == len(sae["cards"]) + len(sae["neuron_cards"])


def test_pentagon_claim_follows_the_dimensionalities(data):
    def five(sparse):
        return _one(_render(data, lambda d: d["toys"]["five_in_two"].update(D=[[1.0, 1.0], sparse])), "n=5, m=2")

    assert "sparse features share them as a pentagon" in five([0.4, 0.41, 0.39, 0.4, 0.42])
    assert "sparse features do not form a pentagon" in five([0.5, 0.5, 0.5, 0.5, 0.0])
    assert "do not form a pentagon" in five([0.4, 0.4])  # only two represented


def test_superposition_claims_follow_the_counts(data):
    def sweep(relu, linear):
        def edit(d):
            d["toys"]["sweep"]["relu"]["represented"] = relu
            d["toys"]["sweep"]["linear"]["represented"] = linear
        return _one(_render(data, edit), "n=20, m=5")

    ok = sweep([5, 12], [5, 5])
    assert "so it superposes when sparse" in ok and "it never superposes" in ok
    bad = sweep([5, 5], [5, 7])
    assert "does not superpose even when sparse" in bad and "it superposes (7 features in 5 dimensions)" in bad


def test_sae_splice_wording_follows_the_losses(data):
    def splice(clean, with_sae):
        return _one(_render(data, lambda d: d["sae"]["metrics"].update(ce_loss_clean=clean, ce_loss_with_sae=with_sae)),
                    "Spliced into the model")

    assert "the SAE raises next-token loss" in splice(3.0, 3.5)
    assert "the SAE lowers next-token loss" in splice(3.5, 3.0)
    assert "the SAE does not clearly change next-token loss" in splice(3.0, 3.0001)
