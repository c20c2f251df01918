"""The dynamics commands write a JSON summary and plots, and reject bad input with a clear message."""
import json

import typer
from typer.testing import CliRunner

from uncover.dynamics.cli import register
from tests.offline import network_loads


def _app():
    app = typer.Typer()
    register(app)
    return app


def test_double_descent_command_writes_summary_and_plot(tmp_path):
    result = CliRunner().invoke(_app(), ["double-descent", "--n-train", "20", "--repeats", "1", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "double_descent_summary.json").read_text())
    assert summary["peak_width"] == 20
    assert (tmp_path / "double_descent.html").exists() and (tmp_path / "plotly.min.js").exists()
    assert network_loads(tmp_path) == []


def test_induction_command_runs_a_few_steps(tmp_path):
    args = ["induction-phase", "--steps", "4", "--d-vocab", "12", "--seq-len", "10", "--d-model", "16", "--out", str(tmp_path)]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "induction_summary.json").read_text())
    assert [r["step"] for r in summary["curves"]][-1] == 4
    assert len(summary["final_induction_scores"]) == 2


def test_bad_input_gives_a_clear_error(tmp_path):
    result = CliRunner().invoke(_app(), ["grok", "--p", "12", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "prime" in result.output
    result = CliRunner().invoke(_app(), ["memorize", "--corrupt-frac", "1.5", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "corrupt-frac" in result.output
