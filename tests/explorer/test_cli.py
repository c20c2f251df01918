"""`uncover serve`: the command wires its options into the explorer, and a real launch prints a URL whose
token opens the API (and nothing opens without it)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import httpx
import pytest
from typer.testing import CliRunner

from tests.conftest import tiny_hf
from tests.editing.conftest import word_tokenizer


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-serve")
    tiny_hf("llama").save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    return folder


def test_serve_passes_its_options_to_the_explorer(tiny_dir, assets, monkeypatch):
    import uncover.explorer.server as server
    from uncover.cli import app

    seen = {}
    monkeypatch.setattr(server, "serve", lambda explorer, host, port, allow, echo: seen.update(
        explorer=explorer, host=host, port=port, allow=allow))
    args = ["serve", str(tiny_dir), "--sae", str(assets / "saes" / "resid1"), "--direction", str(assets / "dirs"),
            "--circuit", str(assets / "circuits" / "toy.json"), "--corpus", str(assets / "corpus.txt"),
            "--port", "0", "--max-tokens", "16"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    ex = seen["explorer"]
    assert seen["host"] == "127.0.0.1" and seen["port"] == 0 and seen["allow"] == []
    assert list(ex.saes) == ["resid1"] and list(ex.directions) == ["random"] and list(ex.circuits) == ["toy"]
    assert ex.limits.max_tokens == 16 and ex.corpus == assets / "corpus.txt"


def test_serve_names_a_folder_without_an_sae(tiny_dir, tmp_path):
    from uncover.cli import app
    from uncover.errors import UncoverError

    result = CliRunner().invoke(app, ["serve", str(tiny_dir), "--sae", str(tmp_path)])
    assert isinstance(result.exception, UncoverError) and "no SAE there" in str(result.exception)


def test_a_launched_server_prints_a_tokened_url_and_refuses_requests_without_it(tiny_dir):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "300"}
    proc = subprocess.Popen([sys.executable, "-m", "uncover.cli", "serve", str(tiny_dir), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        lines, found = [], None
        deadline = time.monotonic() + 120
        while found is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            found = re.search(r"(http://127\.0\.0\.1:\d+)/\?token=([\w-]+)", line)
        assert found, "".join(lines)
        origin, token = found.groups()
        for _ in range(100):  # the URL is printed just before uvicorn starts accepting
            try:
                r = httpx.get(f"{origin}/api/info", headers={"X-Uncover-Token": token})
                break
            except httpx.ConnectError:
                time.sleep(0.1)
        assert r.status_code == 200 and r.json()["cfg"]["n_layers"] == 3
        assert httpx.get(f"{origin}/api/info").status_code == 403
        assert httpx.get(f"{origin}/api/info", headers={"X-Uncover-Token": token, "Host": "evil.example"}).status_code == 403
        assert httpx.post(f"{origin}/api/run", json={"prompt": ""}, headers={"X-Uncover-Token": token}).status_code == 400
        assert proc.poll() is None  # still serving after bad input
    finally:
        proc.terminate()
        proc.wait(20)
