"""Written HTML must open offline: no script, stylesheet, image or frame loaded from the network."""
from __future__ import annotations

import re
from pathlib import Path

# an element whose src/href is an absolute or protocol-relative URL, or a JavaScript import/fetch of one
NETWORK = re.compile(r"""<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*["']?(?:https?:)?//[^"'\s>]*"""
                     r"""|\b(?:import|fetch)\s*\(\s*["'](?:https?:)?//[^"']*""", re.I)


def network_loads(path: str | Path) -> list[str]:
    """Every network load in ``path`` (an HTML file) or in the .html / .js files under it (a folder)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in (".html", ".js"))
    assert files, f"no HTML written under {path}"
    return [f"{f.name}: {m.group(0)[:120]}" for f in files for m in NETWORK.finditer(f.read_text(errors="replace"))]
