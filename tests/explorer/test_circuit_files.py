"""A circuit that uncover discovers opens in the explorer: ``write_circuit`` and ``uncover circuit --out DIR``
write the circuit graph format that ``load_circuits`` / ``Explorer(circuits=...)`` read, with every edge's
score the discovery's score for that edge."""
from __future__ import annotations

import json
import re

import pytest
import torch
import typer
from typer.testing import CliRunner

from uncover.components.circuits import EdgePatcher, EdgeScores, discover, select, write_circuit
from uncover.data.tasks import Task
from tests.offline import network_loads

TOKEN = "test-token-0123456789"
pytestmark = pytest.mark.usefixtures("one_thread")


def _random_task(n: int = 3, pos: int = 6, vocab: int = 1000) -> Task:
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(1, vocab, (n, pos), generator=g)
    corrupt = clean.clone()
    corrupt[:, 1] = torch.randint(1, vocab, (n,), generator=g)
    return Task("random", clean, corrupt, torch.randint(1, vocab, (n,), generator=g),
                torch.randint(1, vocab, (n,), generator=g))


def _index(graph, source: str, target: str, kind: str | None) -> tuple[int, int]:
    """(source, receiver) indices of an edge from its node names, by the graph's index arithmetic (not its
    name lists, which the export uses)."""
    def node(name):
        m = re.fullmatch(r"L(\d+)\.(?:H(\d+)|MLP)", name)
        return (int(m[1]), None if m[2] is None else int(m[2])) if m else name

    s = node(source)
    s = 0 if s == "embed" else graph.mlp_source(s[0]) if s[1] is None else graph.head_source(*s)
    t = node(target)
    if t == "logits":
        assert kind is None
        return s, graph.logits_receiver
    if t[1] is None:
        assert kind is None
        return s, graph.mlp_receiver(t[0])
    return s, graph.head_receiver(t[0], t[1], kind)


def _expected_layer(name: str, n_layers: int) -> int:
    return {"embed": -1, "logits": n_layers}.get(name) if name in ("embed", "logits") else int(name[1:].split(".")[0])


def _check_against_scores(circuit: dict, scores: EdgeScores, keep: torch.Tensor) -> None:
    g = scores.graph
    found = {}
    for e in circuit["edges"]:
        s, r = _index(g, e["source"], e["target"], e.get("input"))
        assert (s, r) not in found, e
        found[(s, r)] = e["score"]
        assert e["score"] == pytest.approx(float(scores.scores[s, r]), rel=1e-6, abs=1e-9)
    assert set(found) == {tuple(x) for x in keep.nonzero().tolist()}
    named = dict(scores.top(g.n_edges))  # the scores by edge name, "source -> receiver"
    for e in circuit["edges"]:
        receiver = f"{e['target']}.{e['input']}" if "input" in e else e["target"]
        assert named[f"{e['source']} -> {receiver}"] == pytest.approx(e["score"], rel=1e-6, abs=1e-9)
    mags = [abs(e["score"]) for e in circuit["edges"]]
    assert mags == sorted(mags, reverse=True)  # largest first
    nodes = {e["source"] for e in circuit["edges"]} | {e["target"] for e in circuit["edges"]}
    assert len(circuit["nodes"]) == len(nodes) and {n["id"] for n in circuit["nodes"]} == nodes
    for n in circuit["nodes"]:
        assert n["layer"] == _expected_layer(n["id"], g.n_layers)
        assert n["kind"] == ("embed" if n["id"] == "embed" else "logits" if n["id"] == "logits"
                             else "mlp" if n["id"].endswith(".MLP") else "head")
    assert circuit["n_edges"] == int(keep.sum()) == len(circuit["edges"])


def test_a_discovered_circuit_opens_in_the_explorer(lm, tmp_path):
    from fastapi.testclient import TestClient

    from uncover.explorer.circuits import load_circuits
    from uncover.explorer.server import create_app
    from uncover.explorer.session import Explorer

    task = _random_task()
    patcher = EdgePatcher.build(lm, task)
    scores = discover(lm, task, "eap", patcher=patcher)
    g = patcher.graph
    keep = select(g, scores.scores, top_n=60)
    assert 10 < int(keep.sum()) <= 60
    js, dot = write_circuit(tmp_path, g, scores.scores, keep, "random_eap", model="tiny", method="eap")
    assert list(load_circuits([js])) == ["random_eap"]
    ex = Explorer(lm, circuits=[tmp_path])  # the folder: the .json is a circuit, the .dot is not read
    assert list(ex.circuits) == ["random_eap"]
    with TestClient(create_app(ex, TOKEN), base_url="http://127.0.0.1:8765", headers={"X-Uncover-Token": TOKEN}) as c:
        info = c.get("/api/info").json()
        circuit = c.get("/api/circuit/random_eap").json()
    assert circuit["format"] == "uncover.circuit-graph" and circuit["model"] == "tiny" and circuit["method"] == "eap"
    assert info["circuits"] == [{"name": "random_eap", "nodes": len(circuit["nodes"]), "edges": int(keep.sum())}]
    assert any("input" in e for e in circuit["edges"]) and any(e["target"] == "logits" for e in circuit["edges"])
    _check_against_scores(circuit, scores, keep)
    # the DOT file draws the same edges
    arrows = [l for l in dot.read_text().splitlines() if " -> " in l]
    assert len(arrows) == len(circuit["edges"])
    assert sum('label="' in l for l in arrows) == sum("input" in e for e in circuit["edges"])


def test_the_circuit_command_writes_a_file_the_explorer_opens(tmp_path, monkeypatch):
    import uncover
    from tests.report_models import report_lm
    from uncover.components.circuits.cli import register
    from uncover.explorer.session import Explorer

    app = typer.Typer()
    app.callback()(lambda: None)  # a group, so the command is named as on the real command line
    register(app)
    model = report_lm()
    monkeypatch.setattr(uncover, "load", lambda name: model)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["circuit", "tiny", "--task", "ioi", "--method", "eap", "--n", "3",
                                   "--top", "3", "--out", str(out)])
    assert res.exit_code == 0, res.output
    path = out / "ioi_eap_circuit.json"
    assert path.is_file() and (out / "ioi_eap_circuit.dot").is_file()
    assert (out / "ioi_eap_circuit.html").is_file() and network_loads(out) == []
    ex = Explorer(model, circuits=[out])  # the --out folder as it is
    assert list(ex.circuits) == ["ioi_eap_circuit"]
    circuit = ex.circuits["ioi_eap_circuit"]
    assert circuit == json.loads(path.read_text())
    assert circuit["task"] == "ioi" and circuit["method"] == "eap" and circuit["model"] == model.name
    assert circuit["metric"] == "logit difference (nats)" and circuit["n_layers"] == 3
    # the scores the command saved, and the circuit's edges as a mask
    scores = EdgeScores.load(out / "ioi_eap_scores")
    g = scores.graph
    keep = torch.zeros_like(g.allowed)
    for e in circuit["edges"]:
        keep[_index(g, e["source"], e["target"], e.get("input"))] = True
    assert (keep & ~g.allowed).sum() == 0
    _check_against_scores(circuit, scores, keep)
    assert circuit["n_edges_total"] == g.n_edges
