"""The offline check itself, and the explorer's static pages (the report, compare page, dashboards and CLI
figures are checked with ``tests.offline.network_loads`` in their own tests)."""
from __future__ import annotations

from pathlib import Path

from tests.offline import network_loads


def test_the_check_flags_network_loads(tmp_path):
    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter(x=[0, 1], y=[1, 2]))
    fig.write_html(tmp_path / "cdn.html", include_plotlyjs="cdn")
    assert any("cdn.plot.ly" in hit for hit in network_loads(tmp_path / "cdn.html"))
    fig.write_html(tmp_path / "inline.html", include_plotlyjs=True)  # plotly.js itself names URLs in strings
    assert network_loads(tmp_path / "inline.html") == []
    (tmp_path / "other.html").write_text('<link rel="stylesheet" href="//fonts.example/x.css">'
                                         '<script>import("https://esm.sh/d3")</script><img src="local.png">')
    assert len(network_loads(tmp_path / "other.html")) == 2


def test_the_explorer_pages_load_nothing_from_the_network():
    import uncover.explorer

    static = Path(uncover.explorer.__file__).parent / "static"
    assert network_loads(static) == []
