"""`uncover trace` and `uncover edit` on a tiny random model saved as a local folder."""
from __future__ import annotations

import json

import pytest
import torch
import typer
from typer.testing import CliRunner

import uncover as uc
from tests.conftest import tiny_hf
from tests.editing.conftest import word_tokenizer
from uncover.applications.editing.cli import register
from uncover.applications.editing.rome import WeightEdit
from uncover.applications.editing.tracing import TraceResult, trace
from tests.offline import network_loads


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    tiny_hf("llama").save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def app():
    app = typer.Typer()
    register(app)
    return app


def test_trace_command_writes_the_same_trace_as_the_function(app, tiny_dir, tmp_path):
    args = ["trace", str(tiny_dir), "The capital of France is", "--subject", "France", "--kinds", "mlp,resid",
            "--samples", "2", "--window", "2", "--out", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "peak layer" in result.output and (tmp_path / "trace.html").exists()
    assert network_loads(tmp_path / "trace.html") == []
    saved = TraceResult.load(tmp_path / "trace")
    direct = trace(uc.load(str(tiny_dir)), "The capital of France is", "France", kinds=["mlp", "resid"],
                   n_samples=2, window=2)
    assert saved.target == direct.target
    for kind in ("mlp", "resid"):
        assert torch.allclose(saved.scores[kind], direct.scores[kind], atol=1e-6)


def test_trace_command_rejects_a_missing_subject(app, tiny_dir):
    result = CliRunner().invoke(app, ["trace", str(tiny_dir), "The capital of France is", "--subject", "Spain"])
    assert result.exit_code == 2 and "must appear in the prompt" in " ".join(result.output.split())


def test_edit_command_reports_scores_and_saves_a_rank_one_edit(app, tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("UNCOVER_CACHE", str(tmp_path / "cache"))
    args = ["edit", str(tiny_dir), "--subject", "France", "--prompt", "The capital of {} is", "--target", " Rome",
            "--layer", "1", "--cov-tokens", "256", "--out", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "efficacy" in text and "Restored: all 30 weight tensors are bit for bit what they were" in text
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["layers"] == [1] and len(scores["paraphrases"]) == 3
    assert set(scores["after"]) >= {"rewrite", "paraphrase", "neighbourhood"}
    edit = WeightEdit.load(tmp_path / "edit")
    assert torch.linalg.matrix_rank(edit.deltas[1], rtol=1e-4) == 1  # float32 storage


def test_edit_command_says_so_when_the_weights_were_not_restored(app, tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("UNCOVER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(WeightEdit, "restore", lambda self, model: None)  # a restore that restores nothing
    args = ["edit", str(tiny_dir), "--subject", "France", "--prompt", "The capital of {} is", "--target", " Rome",
            "--layer", "1", "--cov-tokens", "256", "--out", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    text = " ".join(result.output.split())
    assert result.exit_code == 1, result.output
    assert "1 of 30 weight tensors differ from before the edit: model.layers.1.mlp.down_proj.weight" in text
    assert "bit for bit" not in text


def test_edit_command_rejects_a_prompt_without_placeholder(app, tiny_dir):
    args = ["edit", str(tiny_dir), "--subject", "France", "--prompt", "The capital of France is", "--target", " Rome"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "exactly one" in " ".join(result.output.split())
