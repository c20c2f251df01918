"""The GPU benchmark's whole pipeline (8x8 games, training, probes, interventions) at toy size on the CPU."""
import importlib.util
from pathlib import Path

import pytest


@pytest.mark.usefixtures("one_thread")
def test_othello_gpu_benchmark_runs_tiny_on_cpu(tmp_path, capsys):
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "othello_gpu.py"
    spec = importlib.util.spec_from_file_location("othello_gpu", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    summary = module.main(["--tiny", "--device", "cpu", "--no-progress", "--out", str(tmp_path / "run")])
    assert summary["training"]["config"]["size"] == 8 and summary["probes"]["size"] == 8
    assert [r["step"] for r in summary["training"]["curves"]] == [0, 5, 10]
    assert set(summary["interventions"]) == {"linear", "gradient"}
    assert (tmp_path / "run" / "othello_run.json").exists()
    assert "top-1 legal move rate" in capsys.readouterr().out
