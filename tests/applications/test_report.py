"""The report section: computes on a tiny model, renders offline, and its wording follows the data."""
from __future__ import annotations

import copy

import pytest

from tests.report_numbers import thresholds, unmatched_numbers
from uncover.applications.pruning import report as R
from uncover.report.section import ReportContext

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = {"calibration": 2, "heldout": 2, "seq_len": 16, "ioi": 0, "facts": 0, "shares": [0.1, 0.2, 0.3],
        "units": ["heads"], "bias_counts": [1, 2], "vectors": [4], "aligned": [4], "alphas": [0.1],
        "lists": ["negative"], "wrappers": None,
        "lying": None}  # lying heads and the wrapper toy have their own tests (test_lying.py, test_wrappers.py)


def _pruning_data(best_ppl=20.0):
    values = {m: {"perplexity": [10.0, 14.0, p, 30.0], "ioi": [3.0, 2.5, 2.0, 1.0], "facts": [1.0, 0.9, 0.8, 0.5]}
              for m, p in (("gradient", best_ppl), ("random", 25.0), ("magnitude", 22.0))}
    return {"n_facts": 10, "n_heldout_tokens": 100, "curves": {"heads": {"shares": [0, 0.1, 0.2, 0.3], "values": values}},
            "physical": {"method": "gradient", "share": 0.2, "removed": 54, "params": [134e6, 120e6],
                         "seconds": [0.2, 0.15], "max_diff": 3e-6}}


def test_pruning_findings_follow_the_data():
    good = " ".join(R.pruning_findings(_pruning_data(20.0)))
    assert "gradient, keeps perplexity lower than (" in good
    assert "logits equal (" in good and "runs faster" in good
    bad = _pruning_data(23.0)
    bad["physical"].update(max_diff=0.5, seconds=[0.2, 0.2])
    text = " ".join(R.pruning_findings(bad))
    assert "does not keep perplexity lower" in text and "logits differ from (" in text and "no clear speed-up" in text


def test_bias_findings_follow_the_data():
    data = {"counts": [0, 1, 2], "bias_test": [1.0, 0.4, 0.2], "bias_train": [1, 0.5, 0.1], "agreement": [0.8, 0.6, 0.5],
            "perplexity": [10.0, 10.5, 12.0], "top": ["L1H1"], "crossing": 1}
    assert "Masking the top 1 heads halves" in " ".join(R.bias_findings(data))
    data["crossing"] = None
    assert "No head count tried" in " ".join(R.bias_findings(data))


def test_toxic_findings_follow_the_data():
    rows = [{"kind": "none", "strength": 0, "neutral": 0.01, "provoking": 0.04, "perplexity": 10.0},
            {"kind": "scale", "strength": 16, "neutral": 0.005, "provoking": 0.01, "perplexity": 10.4}]
    data = {"words": [" bad"], "skipped": [" gloomy"], "rows": rows, "probe": {"test": 0.9, "layer": 2},
            "svd_cosines": [0.8], "best": rows[1], "top_vectors": []}
    text = " ".join(R.toxic_findings("negative", data))
    assert "by 4.00x" in text and "' gloomy'" not in text and "gloomy" in text
    data["best"] = None
    assert "No intervention lowers" in " ".join(R.toxic_findings("negative", data))


def test_section_computes_and_renders_on_a_tiny_model(align_lm, tmp_path):
    import json

    data = R.SECTION.compute(align_lm, ReportContext(work_dir=tmp_path), sizes=TINY)
    json.dumps(data)  # the report caches section data as JSON
    for part in ("pruning", "bias", "toxic"):
        assert "error" not in data[part], data[part]
    html = R.SECTION.render(copy.deepcopy(data))
    assert "Pruning heads by importance" in html and "Bias heads" in html and "http" not in html.replace("https://", "")
    # every printed number is a computed value, a value derived here from them, or a stated threshold
    phys, bias = data["pruning"]["physical"], data["bias"]
    derived = [phys["seconds"][0] / phys["seconds"][1], 1e3 * phys["seconds"][0], 1e3 * phys["seconds"][1],
               phys["params"][0] / 1e6, phys["params"][1] / 1e6]
    derived += [100 * (p / bias["perplexity"][0] - 1) for p in bias["perplexity"]]
    for d in (v for v in data["toxic"].values() if isinstance(v, dict)):
        base = next(r for r in d["rows"] if r["kind"] == "none")
        derived += [len(d["words"]), len(d["skipped"])]
        derived += [base[k] / r[k] for r in d["rows"] for k in ("provoking", "neutral")]
        derived += [100 * (r["perplexity"] / base["perplexity"] - 1) for r in d["rows"]]
    constants = thresholds(R) + [round(100 * R.AT_SHARE), round(100 * R.PPL_RISE), R.BIAS_HALF]
    assert unmatched_numbers(html, data, derived, constants) == []
    # and the headline numbers are the computed ones at their printed precision
    assert f"{phys['params'][1] / 1e6:.2f} M parameters instead of {phys['params'][0] / 1e6:.2f} M" in html
    assert f"{bias['bias_test'][0]:+.3f} nats" in html


def test_wrapper_part_renders_a_saved_result_and_a_failure():
    import dataclasses
    import json

    from uncover.applications.wrappers import WrapperConfig, WrapperResult

    fields = {"config": dataclasses.asdict(WrapperConfig()), "pretrained_acc": 0.99, "pretrained_finetune_acc": 0.3,
              "finetuned_acc": 0.3, "finetuned_finetune_acc": 0.95, "random_acc": 0.05, "probe_sites": ["blocks.0"],
              "probe": {"pretrained": [0.99], "finetuned": [0.8], "random": [0.5]}, "n_units": 100,
              "prune_counts": [0, 2], "prune": {"greedy search": {"capability": [0.3, 0.9], "finetune": [0.95, 0.4],
                                                                  "units": ["L0N1", "L1N2"]}},
              "revive_curve": [0.3, 0.95], "scratch_curve": [0.05, 0.2, 0.95], "revive_steps": 1, "scratch_steps": 2}
    html = R.render_wrapper_part(json.loads(json.dumps({"result": R._plain(WrapperResult(**fields).to_fields())})))
    assert "Fine-tuning wrappers" in html and "Plotly.newPlot" in html
    assert "failed: boom" in R.render_wrapper_part({"error": "boom"})
    assert "Lying heads failed: boom" in R.render_lying_part({"error": "boom"})


def test_lying_part_survives_the_json_cache():
    import json

    import torch

    from uncover.applications.alignment.lying import LyingResult
    from uncover.applications.report import render_lying

    g = torch.Generator().manual_seed(0)
    t = lambda *shape: torch.rand(*shape, generator=g)  # noqa: E731
    result = LyingResult(
        [{"name": "plain", "tokens": 30, "n": 8, "honest_acc": 0.9, "lying_acc": 0.1, "honest_raw_acc": 0.8,
          "lying_raw_acc": 0.2, "honest_true_share": 0.5, "lying_true_share": 0.5, "follows": True}],
        "plain", True, 0.9, 0.1, 2.0, -1.5, t(2), t(2, 3), t(2, 3), t(2, 3), t(2, 3),
        [(0, 0), (1, 2)], [1, 2], [0.6, 0.9], [0.4, 0.8], 0.95, 1.1, 2, {"n": 8, "candidates": None})
    cached = json.loads(json.dumps({"result": R._plain(result.to_fields())}))
    import re

    def same_ids(page):  # plot ids count up across the page
        return re.sub(r"fig\d+", "fig", page)
    assert same_ids(R.render_lying_part(cached)) == same_ids(render_lying(result))
