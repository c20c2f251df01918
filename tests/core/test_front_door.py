"""The front door stays light: `uncover --help`, `uncover models` and `uncover <area> --help` import no
torch, transformers or plotly (checked in a fresh interpreter, not timed), and the lazily imported area
packages still work once used."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = ["torch", "transformers", "plotly", "sklearn", "safetensors"]

# Runs the CLI in-process in a fresh interpreter, then reports its exit code, output and heavy imports.
SCRIPT = """
import contextlib, io, json, sys
heavy = json.loads(sys.argv[2])
sys.argv = ["uncover", *json.loads(sys.argv[1])]
out = io.StringIO()
code = 0
with contextlib.redirect_stdout(out):
    try:
        from uncover.cli import main
        main()
    except SystemExit as e:
        code = e.code or 0
print(json.dumps({"code": code, "out": out.getvalue(), "loaded": [m for m in heavy if m in sys.modules]}))
"""


def _front_door(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(list(args)), json.dumps(HEAVY)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("args", [["--help"], ["models"], ["circuit", "--help"], ["sae", "--help"],
                                  ["prune", "--help"], ["edit", "--help"], ["othello", "train", "--help"]])
def test_front_door_imports_nothing_heavy(args):
    result = _front_door(*args)
    assert result["code"] == 0, result["out"]
    assert result["loaded"] == [], f"`uncover {' '.join(args)}` imported {result['loaded']}"


def test_help_lists_every_area_and_models_every_bundled_model():
    from uncover.core.zoo import BUNDLED

    listed = _front_door("--help")["out"]
    for command in ["models", "run", "report", "serve", "lens", "circuit", "probe", "grok", "trace", "edit",
                    "prune", "align", "wrappers", "toy", "sae", "othello"]:
        assert f" {command} " in listed, command
    models = _front_door("models")["out"]
    assert all(name in models for name in BUNDLED) and "pip install" in models


def test_import_uncover_is_light_and_its_names_still_load():
    code = ("import sys, uncover as uc; light = 'torch' not in sys.modules; "
            "print(light, uc.load.__module__, uc.Model.__name__, uc.interventions.__name__, uc.circuits.__name__, "
            "'load' in dir(uc))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "uncover.core.loading", "Model", "uncover.core.interventions",
                                   "uncover.components.circuits", "True"]


def test_lazily_registered_area_packages_run_on_first_use():
    code = """
import sys
import uncover.cli as cli
cli._register_areas()
assert "torch" not in sys.modules
import uncover.applications.editing.cli as ecli
from uncover.applications.editing import rome
from unittest import mock
with mock.patch("uncover.applications.pruning.cli.console") as console:
    import uncover.applications.pruning.cli as pcli
    assert pcli.console is console
import uncover.representations as reps
assert reps.probes.__name__ == "uncover.representations.probes" and "torch" in sys.modules
assert reps.world.cli is sys.modules["uncover.representations.world.cli"]
print("ok", rome.__module__)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok", "uncover.applications.editing.rome"]


def test_deferred_area_packages_survive_torchs_import_time_module_inspection():
    """torch's import walks sys.modules with inspect.getmodule (hasattr(module, '__file__')); a deferred
    area package must not run its __init__ then, in the middle of another import (it closed an import
    cycle through uncover.core.results and broke `uncover report` in a fresh process)."""
    code = """
import sys
import uncover.cli as cli
cli._register_areas()
from uncover.report.build import build_report
import uncover.components.circuits as circuits
print("ok", "torch" in sys.modules, circuits.EdgeScores.__module__)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok", "True", "uncover.components.circuits.discovery"]
