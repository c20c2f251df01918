"""The components commands end to end on smollm2 (small sizes)."""

import pytest
import typer
from typer.testing import CliRunner

from uncover.components.cli import register
from tests.offline import network_loads


@pytest.fixture(scope="module")
def app():
    app = typer.Typer()
    register(app)
    return app


def test_patch_lens_heads(app, smollm, tmp_path, monkeypatch):
    import uncover
    from uncover.core.results import Result

    monkeypatch.setattr(uncover, "load", lambda name: smollm)
    runner = CliRunner()
    res = runner.invoke(app, ["patch", "smollm2-135m", "--task", "ioi", "--n", "2", "--site", "resid_pre",
                              "--by", "layer", "--out", str(tmp_path / "p")])
    assert res.exit_code == 0, res.output
    assert "logit difference" in res.output
    saved = Result.load(tmp_path / "p" / "ioi_resid_pre_layer_activation")  # the PatchResult folder
    assert saved.normalized and saved.meta["task"] == "ioi"
    res = runner.invoke(app, ["lens", "smollm2-135m", "--target", " Paris", "--out", str(tmp_path / "l")])
    assert res.exit_code == 0, res.output
    assert "' Paris'" in res.output and (tmp_path / "l" / "logit_lens.html").exists()
    res = runner.invoke(app, ["heads", "smollm2-135m", "--kind", "copying", "--top", "3", "--out", str(tmp_path / "h")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "h" / "copying.html").exists() and "L" in res.output
    assert network_loads(tmp_path) == []
    res = runner.invoke(app, ["heads", "smollm2-135m", "--kind", "inductive"])
    assert res.exit_code != 0 and "--kind must be one of" in res.output
