"""A circuit as data: JSON (nodes, edges with scores) and GraphViz DOT."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import Tensor

from uncover.components.circuits.graph import Graph


def circuit_dict(g: Graph, scores: Tensor, keep: Tensor) -> dict[str, Any]:
    """{"nodes": [...], "edges": [{"source", "receiver", "node", "score"}]} of the kept edges, largest first."""
    from uncover.components.circuits.evaluate import circuit_nodes

    edges = [{"source": g.source_names[s], "receiver": g.receiver_names[r], "node": g.receiver_node(r),
              "score": float(scores[s, r])}
             for s, r in keep.nonzero().tolist()]
    edges.sort(key=lambda e: -abs(e["score"]))
    return {"n_layers": g.n_layers, "n_heads": g.n_heads, "nodes": circuit_nodes(g, keep), "edges": edges}


def to_dot(g: Graph, scores: Tensor, keep: Tensor, name: str = "circuit") -> str:
    """GraphViz DOT of the circuit: one node per head / MLP, one arrow per kept edge (label q/k/v), pen width
    proportional to |score| (1..6)."""
    data = circuit_dict(g, scores, keep)
    top = max((abs(e["score"]) for e in data["edges"]), default=1.0) or 1.0
    lines = [f'digraph "{name}" {{', "  rankdir=BT;", '  node [shape=box, fontname="Helvetica"];']
    for node in data["nodes"]:
        lines.append(f'  "{node}";')
    for e in data["edges"]:
        kind = e["receiver"].rsplit(".", 1)[1] if e["receiver"].endswith((".q", ".k", ".v")) else ""
        color = "firebrick" if e["score"] < 0 else "steelblue"
        width = 1 + 5 * abs(e["score"]) / top
        label = f', label="{kind}"' if kind else ""
        lines.append(f'  "{e["source"]}" -> "{e["node"]}" [penwidth={width:.2f}, color={color}{label}, '
                     f'tooltip="{e["score"]:.4g}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_circuit(folder: str | Path, g: Graph, scores: Tensor, keep: Tensor, name: str = "circuit") -> list[Path]:
    """Write ``{name}.json`` and ``{name}.dot`` into ``folder``; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    js, dot = folder / f"{name}.json", folder / f"{name}.dot"
    js.write_text(json.dumps(circuit_dict(g, scores, keep), indent=1))
    dot.write_text(to_dot(g, scores, keep, name))
    return [js, dot]
