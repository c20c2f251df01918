"""The features commands end to end on smollm2 at tiny sizes: sae train -> eval -> dashboard, neurons."""
import json

import pytest
import typer
from typer.testing import CliRunner

from uncover.features.cli import register
from uncover.features.sae import SAE
from tests.offline import network_loads


@pytest.fixture(scope="module")
def app():
    app = typer.Typer()
    register(app)
    return app


def test_sae_train_eval_dashboard_and_neurons(app, smollm, tmp_path, monkeypatch):
    import uncover

    monkeypatch.setattr(uncover, "load", lambda name: smollm)
    runner = CliRunner()
    out = tmp_path / "sae"
    res = runner.invoke(app, ["sae", "train", "smollm2-135m", "--hook", "blocks.3.hook_resid_post", "--tokens", "1024",
                              "--seq-len", "32", "--batch-size", "256", "--expansion", "2", "--k", "8",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    sae = SAE.load(out)
    assert sae.cfg.d_sae == 2 * smollm.cfg.d_model and sae.cfg.hook_name == "blocks.3.hook_resid_post"
    assert (out / "checkpoint" / "trainer.json").exists()

    res = runner.invoke(app, ["sae", "eval", str(out), "--n-seqs", "2", "--seq-len", "32",
                              "--out", str(tmp_path / "m.json")])
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert 0 < metrics["l0"] <= 8 and metrics["ce_loss_zero_ablation"] > metrics["ce_loss_clean"]

    res = runner.invoke(app, ["sae", "dashboard", str(out), "--latents", "0,1", "--n-seqs", "4", "--seq-len", "24",
                              "--out", str(tmp_path / "d.html")])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "d.html").read_text()
    assert "latent 0" in page and "latent 1" in page and "Plotly" in page

    res = runner.invoke(app, ["neurons", "smollm2-135m", "--layer", "3", "--neurons", "5,9", "--n-seqs", "4",
                              "--seq-len", "16", "--out", str(tmp_path / "n.html")])
    assert res.exit_code == 0, res.output
    assert "L3 neuron 5" in (tmp_path / "n.html").read_text()
    assert network_loads(tmp_path / "d.html") == [] and network_loads(tmp_path / "n.html") == []

    res = runner.invoke(app, ["neurons", "smollm2-135m", "--layer", "99"])
    assert res.exit_code != 0 and "layer must be in 0..29" in res.output
    res = runner.invoke(app, ["sae", "train", "smollm2-135m", "--hook", "blocks.3.hook_nothing"])
    assert res.exit_code != 0 and "unknown hook" in res.output
