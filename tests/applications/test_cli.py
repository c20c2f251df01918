"""`uncover prune` and `uncover align` end to end on a tiny model with a word tokenizer."""
from __future__ import annotations

import pytest
import torch
import typer
from typer.testing import CliRunner

import uncover as uc
from uncover.applications.alignment.cli import register as register_align
from uncover.applications.pruning.cli import register as register_prune
from uncover.errors import UncoverError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def app():
    app = typer.Typer()
    register_prune(app)
    register_align(app)
    return app


def test_prune_saves_a_smaller_model(app, align_lm, tmp_path, monkeypatch):
    monkeypatch.setattr(uc, "load", lambda name: align_lm)
    out = tmp_path / "pruned"
    res = CliRunner().invoke(app, ["prune", "tiny", "--by", "gradient", "--share", "0.25", "--calibration", "2",
                                   "--heldout", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "speed-up" in res.output and "parameters" in res.output
    monkeypatch.undo()
    smaller = uc.load(str(out))
    assert sum(len(h) for h in smaller.hf.config.uncover_pruning["removed_heads"]) == 3
    plan = uc.core.results.Result.load(out / "uncover-plan")
    tokens = torch.randint(3, 100, (1, 8))
    with torch.no_grad(), align_lm.hooks(plan.hooks()):
        assert (smaller(tokens) - align_lm(tokens)).abs().max() <= 1e-4


@pytest.mark.parametrize("args,message", [
    (["prune", "tiny", "--share", "1.5"], "between 0 and 1"),
    (["prune", "tiny", "--share", "0.2", "--unit", "layers"], "heads' or 'neurons"),
    (["prune", "tiny", "--by", "size"], "unknown importance method"),
    (["align", "lying", "tiny"], "no chat template"),
])
def test_bad_input_is_refused(app, align_lm, monkeypatch, args, message):
    monkeypatch.setattr(uc, "load", lambda name: align_lm)
    res = CliRunner().invoke(app, args + ["--calibration", "2", "--heldout", "2"] if args[0] == "prune" else args)
    assert isinstance(res.exception, UncoverError) and message in str(res.exception)


def test_align_bias_and_toxic(app, align_lm, monkeypatch):
    monkeypatch.setattr(uc, "load", lambda name: align_lm)
    res = CliRunner().invoke(app, ["align", "bias", "tiny", "--heldout", "2"])
    assert res.exit_code == 0, res.output
    assert "heads masked" in res.output
    res = CliRunner().invoke(app, ["align", "toxic", "tiny", "--word-list", "negative", "--heldout", "2"])
    assert res.exit_code == 0, res.output
    assert "provoking" in res.output
