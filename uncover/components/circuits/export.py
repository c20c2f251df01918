"""A circuit as data: the circuit graph format (JSON; the explorer's circuit view opens it) and GraphViz DOT.

One JSON file per circuit:

    {"format": "uncover.circuit-graph", "version": 1,
     "model": "smollm2-135m", "title": "IOI circuit", "metric": "logit diff",     (optional, shown)
     "nodes": [{"id": "L9.H6", "layer": 9, "kind": "head", "score": 0.31}, ...],
     "edges": [{"source": "L5.H5", "target": "L9.H6", "score": 0.12, "input": "q"}, ...]}

nodes: ``id`` (unique string) and ``layer`` (a number: where the node sits in the forward pass; use -1 for
the embedding and n_layers for the logits) are required; ``kind`` ("embed", "head", "mlp", "logits", or
anything else), ``label`` and ``score`` (a node's own importance) are optional. edges: ``source`` and
``target`` name node ids, ``score`` is the edge's signed importance (e.g. an EAP or ACDC attribution). Any
other keys are kept. ``write_circuit_graph`` writes any such graph (checked); ``write_circuit`` /
``circuit_dict`` turn a discovered circuit into one.

A discovered circuit (``circuit_dict``): node ids are the graph's node names (graph.py): ``embed`` (layer -1),
``L{l}.H{h}`` and ``L{l}.MLP`` (layer ``l``, the block index), ``logits`` (layer n_layers). An edge's
``target`` is the node that receives it; a head's edges also say which input (``"input": "q" | "k" | "v"``),
so one source can reach one head by up to three edges. Edges come largest |score| first. The graph also
carries ``n_layers``, ``n_heads``, ``n_edges`` (edges kept) and ``n_edges_total`` (edges in the model's graph).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

from torch import Tensor

from uncover.components.circuits.graph import Graph
from uncover.errors import UncoverError

FORMAT = "uncover.circuit-graph"
VERSION = 1
MAX_NODES, MAX_EDGES = 20_000, 200_000


def check_circuit_graph(graph: Any, where: str = "circuit") -> dict[str, Any]:
    """The graph if it follows the format above, else an UncoverError naming the first problem."""
    if not isinstance(graph, dict) or not isinstance(graph.get("nodes"), list) or not isinstance(graph.get("edges"), list):
        raise UncoverError(f"{where}: a circuit graph is a JSON object with 'nodes' and 'edges' lists "
                           "(see uncover.components.circuits.export)")
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
    graph = {"format": FORMAT, "version": VERSION, **meta, "nodes": list(nodes), "edges": list(edges)}
    check_circuit_graph(graph, str(path))
    path = Path(path)
    path.write_text(json.dumps(graph, indent=1))
    return path


def node_info(g: Graph, name: str) -> dict[str, Any]:
    """A graph node as a circuit graph node: {"id", "layer", "kind"}."""
    if name == "embed":
        return {"id": name, "layer": -1, "kind": "embed"}
    if name == "logits":
        return {"id": name, "layer": g.n_layers, "kind": "logits"}
    layer, rest = name[1:].split(".", 1)
    return {"id": name, "layer": int(layer), "kind": "mlp" if rest == "MLP" else "head"}


def circuit_dict(g: Graph, scores: Tensor, keep: Tensor, **meta: Any) -> dict[str, Any]:
    """The kept edges of a circuit as a circuit graph (the format above; edges largest |score| first);
    ``meta`` adds keys such as model, task, metric, method."""
    from uncover.components.circuits.evaluate import circuit_nodes

    edges = []
    for s, r in keep.nonzero().tolist():
        receiver = g.receiver_names[r]
        e = {"source": g.source_names[s], "target": g.receiver_node(r), "score": float(scores[s, r])}
        if receiver != e["target"]:  # a head's q / k / v input
            e["input"] = receiver.rsplit(".", 1)[1]
        edges.append(e)
    edges.sort(key=lambda e: -abs(e["score"]))
    return {"format": FORMAT, "version": VERSION, **meta, "n_layers": g.n_layers, "n_heads": g.n_heads,
            "n_edges": len(edges), "n_edges_total": g.n_edges,
            "nodes": [node_info(g, n) for n in circuit_nodes(g, keep)], "edges": edges}


def to_dot(g: Graph, scores: Tensor, keep: Tensor, name: str = "circuit") -> str:
    """GraphViz DOT of the circuit: one node per head / MLP, one arrow per kept edge (label q/k/v), pen width
    proportional to |score| (1..6)."""
    data = circuit_dict(g, scores, keep)
    top = max((abs(e["score"]) for e in data["edges"]), default=1.0) or 1.0
    lines = [f'digraph "{name}" {{', "  rankdir=BT;", '  node [shape=box, fontname="Helvetica"];']
    for node in data["nodes"]:
        lines.append(f'  "{node["id"]}";')
    for e in data["edges"]:
        color = "firebrick" if e["score"] < 0 else "steelblue"
        width = 1 + 5 * abs(e["score"]) / top
        label = f', label="{e["input"]}"' if "input" in e else ""
        lines.append(f'  "{e["source"]}" -> "{e["target"]}" [penwidth={width:.2f}, color={color}{label}, '
                     f'tooltip="{e["score"]:.4g}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_circuit(folder: str | Path, g: Graph, scores: Tensor, keep: Tensor, name: str = "circuit",
                  **meta: Any) -> list[Path]:
    """Write ``{name}.json`` (a circuit graph: ``uncover serve --circuit`` opens it) and ``{name}.dot`` into
    ``folder``; ``meta`` adds keys such as model, task, metric, method; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = circuit_dict(g, scores, keep, **meta)
    js = write_circuit_graph(folder / f"{name}.json", data.pop("nodes"), data.pop("edges"),
                             **{k: v for k, v in data.items() if k not in ("format", "version")})
    dot = folder / f"{name}.dot"
    dot.write_text(to_dot(g, scores, keep, name))
    return [js, dot]
