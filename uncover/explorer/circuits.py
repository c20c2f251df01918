"""The circuit graphs the explorer opens. The format (one JSON file per circuit: nodes with a layer, edges
with a score) is defined beside the circuits work that writes it, in ``uncover.components.circuits.export``
(``uncover circuit ... --out DIR`` writes one); this module reads the files named on the command line."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from uncover.components.circuits.export import (FORMAT, MAX_EDGES, MAX_NODES, check_circuit_graph,
                                                write_circuit_graph)
from uncover.errors import UncoverError

__all__ = ["FORMAT", "MAX_EDGES", "MAX_NODES", "check_circuit_graph", "load_circuits", "write_circuit_graph"]


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
