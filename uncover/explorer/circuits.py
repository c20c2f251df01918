"""The circuit graph format the explorer opens: one JSON file per circuit.

    {"format": "uncover.circuit-graph", "version": 1,
     "model": "smollm2-135m", "title": "IOI circuit", "metric": "logit diff",     (optional, shown)
     "nodes": [{"id": "L9H6", "layer": 9, "kind": "head", "score": 0.31}, ...],
     "edges": [{"source": "L5H5", "target": "L9H6", "score": 0.12}, ...]}

nodes: ``id`` (unique string) and ``layer`` (a number: where the node sits in the forward pass; use -1 for
the embedding and n_layers for the logits) are required; ``kind`` ("embed", "head", "mlp", "logits", or
anything else), ``label`` and ``score`` (a node's own importance) are optional. edges: ``source`` and
``target`` name node ids, ``score`` is the edge's signed importance (e.g. an EAP or ACDC attribution). Any
other keys are kept and shown. ``write_circuit_graph`` writes the file; the circuits work saves through it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

from uncover.errors import UncoverError

FORMAT = "uncover.circuit-graph"
MAX_NODES, MAX_EDGES = 20_000, 200_000


def check_circuit_graph(graph: Any, where: str = "circuit") -> dict[str, Any]:
    """The graph if it follows the format above, else an UncoverError naming the first problem."""
    if not isinstance(graph, dict) or not isinstance(graph.get("nodes"), list) or not isinstance(graph.get("edges"), list):
        raise UncoverError(f"{where}: a circuit graph is a JSON object with 'nodes' and 'edges' lists "
                           "(see uncover.explorer.circuits)")
    if graph.get("format", FORMAT) != FORMAT:
        raise UncoverError(f"{where}: format {graph.get('format')!r} is not {FORMAT!r}")
    nodes, edges = graph["nodes"], graph["edges"]
    if len(nodes) > MAX_NODES or len(edges) > MAX_EDGES:
        raise UncoverError(f"{where}: {len(nodes)} nodes and {len(edges)} edges; the explorer shows at most "
                           f"{MAX_NODES} nodes and {MAX_EDGES} edges: prune the graph first")
    ids = set()
    for i, n in enumerate(nodes):
        if not isinstance(n, dict) or not isinstance(n.get("id"), str) or not _number(n.get("layer")):
            raise UncoverError(f"{where}: node {i} needs a string 'id' and a numeric 'layer', got {n!r}")
        if n["id"] in ids:
            raise UncoverError(f"{where}: node id {n['id']!r} appears twice")
        if "score" in n and not _number(n["score"]):
            raise UncoverError(f"{where}: node {n['id']!r} has a non-numeric score {n['score']!r}")
        ids.add(n["id"])
    for i, e in enumerate(edges):
        if not isinstance(e, dict) or not _number(e.get("score")):
            raise UncoverError(f"{where}: edge {i} needs 'source', 'target' and a numeric 'score', got {e!r}")
        missing = [e.get(k) for k in ("source", "target") if e.get(k) not in ids]
        if missing:
            raise UncoverError(f"{where}: edge {i} names node(s) {missing} that are not in 'nodes'")
    return graph


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def write_circuit_graph(path: str | Path, nodes: Sequence[dict], edges: Sequence[dict], **meta: Any) -> Path:
    """Write a circuit graph file (checked first); ``meta`` adds keys such as model, title, metric."""
    graph = {"format": FORMAT, "version": 1, **meta, "nodes": list(nodes), "edges": list(edges)}
    check_circuit_graph(graph, str(path))
    path = Path(path)
    path.write_text(json.dumps(graph, indent=1))
    return path


def load_circuits(paths: Sequence[str | Path]) -> dict[str, dict[str, Any]]:
    """Circuit graphs by name (file stem) from .json files and folders of them (one level)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix == ".json" and f.is_file())
            if not found:
                raise UncoverError(f"--circuit {p}: the folder holds no .json circuit graphs")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise UncoverError(f"--circuit {p}: no such file or folder")
    out: dict[str, dict[str, Any]] = {}
    for f in files:
        try:
            graph = json.loads(f.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UncoverError(f"--circuit {f}: not JSON ({e})")
        name, i = f.stem, 2
        while name in out:
            name, i = f"{f.stem}-{i}", i + 1
        out[name] = check_circuit_graph(graph, str(f))
    return out
