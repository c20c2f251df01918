"""The core CLI commands and the report skeleton (caching, failing sections shown in the page)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from uncover.report import build
from tests.offline import network_loads


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "uncover.cli", *args], capture_output=True, text=True, timeout=600)


def test_cli_run_and_errors(smollm):
    out = cli("run", "smollm2-135m", "The Eiffel Tower is located in the city of", "--top", "3")
    assert out.returncode == 0, out.stderr
    assert "Paris" in out.stdout
    bad = cli("run", "smollm-135", "x")
    assert bad.returncode == 1
    assert "unknown model" in bad.stdout and "smollm2-135m" in bad.stdout and "Traceback" not in bad.stdout + bad.stderr


def test_cli_models_and_hooks(smollm):
    out = cli("models")
    assert out.returncode == 0 and "smollm2-135m" in out.stdout and "pip install" in out.stdout
    out = cli("hooks", "smollm2-135m", "--pattern", "blocks.0.attn.*")
    assert out.returncode == 0, out.stderr
    assert "blocks.0.attn.hook_k" in out.stdout and "[1, 4, 3, 64]" in out.stdout


class Boom:
    key, title, version = "boom", "A section that fails", "1"

    def compute(self, model, ctx):
        raise RuntimeError("measured nothing")

    def render(self, data):
        return ""


def test_report_overview_cache_and_failure(tmp_path, smollm, monkeypatch):
    import uncover.report.overview as ov

    monkeypatch.setattr(ov, "PROMPTS", ov.PROMPTS[:2])
    monkeypatch.setitem(sys.modules, "boom_section", type(sys)("boom_section"))
    sys.modules["boom_section"].SECTION = Boom()
    monkeypatch.setattr(build, "SECTIONS", ["uncover.report.overview:SECTION", "boom_section:SECTION"])
    built = build.build_report("smollm2-135m", tmp_path)
    page = built.path.read_text()
    assert built.failed == [("boom", "A section that fails", "RuntimeError: measured nothing")]
    assert "Paris" in page and "Plotly.newPlot" in page
    assert "measured nothing" in page and "(failed)" in page, "a failing section is shown, not fatal"
    cached = list((tmp_path / ".cache").glob("overview-*.json"))
    assert len(cached) == 1
    data = json.loads(cached[0].read_text())
    # logit lens at the last layer is the model's own output distribution
    top_prob = data["rows"][0]["top"][0][1]
    assert data["rows"][0]["answer_prob_by_layer"][-1] == pytest.approx(top_prob, rel=1e-5)
    # a re-run loads the cached data instead of recomputing
    monkeypatch.setattr(ov.Overview, "compute", lambda *a: pytest.fail("should have used the cache"))
    build.build_report("smollm2-135m", tmp_path)


class Fine:
    key, title, version = "fine", "A section that works", "1"

    def compute(self, model, ctx):
        return {"n_layers": model.cfg.n_layers}

    def render(self, data):
        return f"<p>{data['n_layers']} layers</p>"


@pytest.fixture
def tiny_dir(tmp_path):
    from tests.conftest import tiny_hf
    from tests.editing.conftest import word_tokenizer

    tiny_hf("llama").save_pretrained(tmp_path / "tiny")
    word_tokenizer().save_pretrained(tmp_path / "tiny")
    return tmp_path / "tiny"


def report_command(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """``uncover report ARGS`` in-process: (exit code, stdout with whitespace runs as single spaces)."""
    import uncover.cli as cli

    monkeypatch.setattr(cli, "AREAS", [])  # only the report command is needed
    monkeypatch.setattr(sys, "argv", ["uncover", "report", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as e:
        code = e.code
    return code, " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("failing", [True, False])
def test_report_command_exit_code_names_the_failed_sections(tiny_dir, tmp_path, monkeypatch, capsys, failing):
    module = type(sys)("two_sections")
    module.BOOM, module.FINE = Boom(), Fine()
    monkeypatch.setitem(sys.modules, "two_sections", module)
    monkeypatch.setattr(build, "SECTIONS", ["two_sections:FINE"] + (["two_sections:BOOM"] if failing else []))
    code, out = report_command(monkeypatch, capsys, str(tiny_dir), "--out", str(tmp_path / "out"))
    page = (tmp_path / "out" / "index.html").read_text()  # the page is written either way
    assert "3 layers" in page and network_loads(tmp_path / "out" / "index.html") == []
    if failing:
        assert code == 1
        assert "1 section(s) failed" in out and "boom (A section that fails): RuntimeError: measured nothing" in out
        assert "measured nothing" in page
    else:
        assert code == 0 and "failed" not in out and f"report written to {tmp_path / 'out' / 'index.html'}" in out


@pytest.mark.parametrize("gb", ["1000", "0"])
def test_report_command_max_memory(tiny_dir, tmp_path, monkeypatch, capsys, gb):
    module = type(sys)("one_section")
    module.FINE = Fine()
    monkeypatch.setitem(sys.modules, "one_section", module)
    monkeypatch.setattr(build, "SECTIONS", ["one_section:FINE"])
    code, out = report_command(monkeypatch, capsys, str(tiny_dir), "--out", str(tmp_path / "out"), "--max-memory", gb)
    if gb == "0":
        assert code == 1 and "a memory budget is a positive number of GB, got 0.0" in out and "Traceback" not in out
    else:
        assert code == 0 and "peak memory so far" in out
        assert "within the memory budget (peak memory ≤ 1000 GB)" in (tmp_path / "out" / "index.html").read_text()
