"""The dynamics report section: rendered numbers are the computed ones (small real runs), every caption and
finding's claim follows its stated test (data for which it fails changes the words), a saved grokking run
is reused."""
import copy
import html
import re

import pytest
import torch

import uncover.dynamics.report as R
from tests.report_numbers import thresholds, unmatched_numbers
from uncover.dynamics.double_descent import DoubleDescentConfig, run_double_descent
from uncover.dynamics.grokking import GrokConfig, run_grokking
from uncover.dynamics.induction import InductionConfig, run_induction
from uncover.dynamics.memorization import MemorizationConfig, run_memorization
from uncover.dynamics.norms import init_decay_sweep, norm_sweep, run_slingshots
from uncover.dynamics.report import SECTION, _grokking
from uncover.report.section import ReportContext

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # toy models: one thread is much faster on a shared CPU
    try:
        return _small_data(tmp_path_factory)
    finally:
        torch.set_num_threads(threads)


def _small_data(tmp_path_factory):
    grok = run_grokking(GrokConfig(p=11, train_frac=0.5, d_model=16, n_heads=2, d_mlp=32, steps=30, eval_every=10,
                                   measure_every=10, lr=1e-2), out_dir=tmp_path_factory.mktemp("g") / "grok")
    summary = grok.summary()
    summary["source"] = "test"
    return {
        "grok": summary,
        "slingshots": run_slingshots(p=7, steps=60, d_model=8, eval_every=20).summary(),
        "norm_sweep": norm_sweep([1, 4], p=7, width=8, steps=5),
        "init_decay_sweep": init_decay_sweep([1.0], [0.0, 1.0], p=7, width=8, steps=5),
        "memorization": run_memorization(MemorizationConfig(p=7, width=8, steps=10, eval_every=5),
                                         prune_fractions=(0.0, 0.5)).summary(),
        "induction": run_induction(InductionConfig(d_vocab=10, seq_len=8, d_model=8, n_heads=2, steps=6,
                                                   batch_size=4, eval_every=3)).summary(),
        "double_descent": run_double_descent(DoubleDescentConfig(n_train=10, n_test=20, d_input=4,
                                                                 widths=(2, 10, 40), n_repeats=1)).summary(),
    }


def sentences(page: str) -> list[str]:
    return [html.unescape(a or b) for a, b in re.findall(r"<li(?: class=\"headline\")?>(.*?)</li>|<figcaption>(.*?)</figcaption>", page)]


def _render(data, edit) -> list[str]:
    d = copy.deepcopy(data)
    edit(d)
    return sentences(SECTION.render(d))


def _one(lines, start):
    (line,) = [f for f in lines if f.startswith(start)]
    return line


def test_rendered_numbers_are_the_computed_ones(data):
    page = SECTION.render(data)
    assert page.count("Plotly.newPlot") >= 8
    g, m, dd = data["grok"], data["memorization"], data["double_descent"]
    ipr = sorted(m["neuron_ipr"])
    i = dd["widths"].index(dd["peak_width"])
    derived = [ipr[len(ipr) // 2], ipr[len(ipr) // 10], ipr[9 * len(ipr) // 10], len(data["slingshots"]["spikes"]),
               min(dd["test_loss"][:i]), min(dd["test_loss"][i + 1:]), 2 * data["induction"]["config"]["eval_every"]]
    derived += [x for row in data["induction"]["final_induction_scores"] for x in row]
    constants = thresholds(R) + [99, 50, 10, 1, 2, 0]  # "99%" memorised/generalised, spikes: 10x over 50 steps, ...
    assert unmatched_numbers(page, data, derived, constants) == []
    assert f"after {g['steps_done']} steps" in page


def test_restricted_loss_caption_follows_the_measures(data):
    def caption(restricted, test, excluded):
        def edit(d):
            for row, r, t, e in zip(d["grok"]["measures"], restricted, test, excluded):
                row.update(restricted_loss=r, test_loss=t, excluded_loss=e)
        return _one(_render(data, edit), ("Restricted loss",))

    n = len(data["grok"]["measures"])
    assert n >= 3
    steps = [r["step"] for r in data["grok"]["measures"]]
    before = caption([4.0, 1.0] + [0.5] * (n - 2), [4.0, 4.0] + [1.0] * (n - 2), [1.0] * (n - 1) + [3.0])
    assert f"falls at step {steps[1]}, before the test loss ({steps[2]})" in before and "excluded loss rises" in before
    after = caption([4.0, 4.0] + [1.0] * (n - 2), [4.0, 1.0] + [0.5] * (n - 2), [3.0] * (n - 1) + [1.0])
    assert f"after the test loss ({steps[1]})" in after and "excluded loss falls" in after
    flat = caption([4.0] * n, [4.0] * n, [1.0] * n)
    assert flat.startswith("Restricted loss does not fall") and "excluded loss does not clearly change" in flat


def test_fourier_caption_follows_the_gini(data):
    def caption(gini):
        return _one(_render(data, lambda d: d["grok"]["measures"][-1].update(gini_embed=gini)), "The final embedding")

    assert "is sparse in the Fourier basis" in caption(0.8) and "is not clearly sparse" in caption(0.2)


def test_lu_caption_follows_the_sweep(data):
    def caption(train, test):
        sweep = [{"norm": n, "train_loss": a, "test_loss": b, "test_acc": 0.5} for n, a, b in zip([1, 4, 16], train, test)]
        return _one(_render(data, lambda d: d.update(norm_sweep=sweep)), "Against the weight norm")

    assert "train loss is L-shaped and test loss is U-shaped" in caption([2.0, 0.1, 0.05], [2.0, 0.5, 1.5])
    assert "train loss is not L-shaped and test loss is not U-shaped" in caption([0.1, 0.5, 2.0], [0.5, 1.0, 2.0])
    fell = [f for f in _render(data, lambda d: d.update(norm_sweep=[
        {"norm": 1, "train_loss": 0.1, "test_loss": 1.0, "test_acc": 0.5},
        {"norm": 4, "train_loss": 2.0, "test_loss": 1.0, "test_acc": 0.5}])) if f.startswith("Training at fixed")]
    assert "train loss rose from 0.10" in fell[0]


def test_memorisation_and_pruning_wording(data):
    def edit_rows(a, b, final):
        def edit(d):
            d["memorization"]["pruning"] = [dict(d["memorization"]["pruning"][0], corrupt_mem_acc=a, pruned_frac=0.0),
                                            dict(d["memorization"]["pruning"][-1], corrupt_mem_acc=b, pruned_frac=0.5)]
            d["memorization"]["final"]["corrupt_mem_acc"] = final
        return _render(data, edit)

    removed = edit_rows(0.9, 0.0, 0.9)
    assert "neurons removes memorisation" in _one(removed, "Pruning the 50% lowest-IPR neurons r")
    assert "(memorised: accuracy on the corrupted labels ≥ 0.5)" in _one(removed, "An MLP")
    assert "neurons lowers memorisation" in _one(edit_rows(0.9, 0.5, 0.9), "Pruning the 50% lowest-IPR neurons l")
    kept = edit_rows(0.9, 0.85, 0.3)
    assert "does not clearly change memorisation" in _one(kept, "Pruning the 50% lowest-IPR neurons d")
    assert "(not memorised: accuracy on the corrupted labels < 0.5)" in _one(kept, "An MLP")
    none = _render(data, lambda d: d["memorization"].update(pruning=[]))
    assert "No pruning: without corrupted labels there is no memorisation to remove." in none


def test_induction_wording(data):
    def lines(score, icl, ind):
        def edit(d):
            d["induction"]["final_induction_scores"] = [[score, 0.0], [0.0, 0.0]]
            d["induction"].update(icl_change_step=icl, induction_change_step=ind)
        return _render(data, edit)

    every = data["induction"]["config"]["eval_every"]
    formed = lines(0.8, 30, 30 + every)
    assert _one(formed, "Induction heads formed").startswith("Induction heads formed (best induction score ≥ 0.3)")
    assert "the two coincide in one phase change" in _one(formed, "The ICL score")
    assert "they do not coincide" in _one(lines(0.8, 30, 30 + 10 * every), "The ICL score")
    none = lines(0.1, 30, 30 + every)
    assert _one(none, "No induction head formed") and "no phase change to place" in _one(none, "The ICL score")


def test_double_descent_wording(data):
    def finding(widths, test, n_train=10):
        def edit(d):
            dd = d["double_descent"]
            dd.update(widths=widths, test_loss=test, peak_width=widths[test.index(max(test))])
            dd["config"]["n_train"] = n_train
        return _one(_render(data, edit), "Random-features regression")

    peak = finding([2, 10, 40], [1.0, 9.0, 0.5])
    assert "peaks at 9.00 at width 10" in peak and "at the interpolation threshold (n_train = 10" in peak
    assert "away from the interpolation threshold (n_train = 40" in finding([2, 10, 40], [1.0, 9.0, 0.5], 40)
    assert "has no clear peak" in finding([2, 10, 40], [1.0, 1.2, 1.1])
    assert "no double descent in this sweep" in finding([2, 10, 40], [3.0, 2.0, 1.0])


def test_saved_grokking_run_is_reused(tmp_path):
    run_grokking(GrokConfig(p=7, train_frac=0.5, d_model=8, n_heads=2, d_mlp=16, steps=10, eval_every=5,
                            measure_every=5), out_dir=tmp_path / "grok")
    summary = _grokking(ReportContext(work_dir=tmp_path))
    assert summary["source"].startswith("saved run") and summary["steps_done"] == 10
