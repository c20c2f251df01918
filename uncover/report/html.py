"""Small HTML building blocks for report sections: figures, findings, tables.

Plotly figures are embedded as JSON and drawn by one inlined copy of plotly.js, so the page
opens offline.
"""
from __future__ import annotations

import html as _html
import re
from typing import Any, Sequence


STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
section{border-top:2px solid #eee;margin-top:2em}figure{margin:1em 0}figcaption{color:#555;font-size:.9em}
.findings li{margin:.3em 0}.summary li{margin:.3em 0}.summary a{font-size:.85em}.meta{color:#888;font-size:.8em}
.error{background:#fee;padding:1em;overflow:auto}
.tok{border-radius:2px;white-space:pre}.ctx{font-family:monospace;font-size:.9em}
"""


def document(title: str, heading: str, body: str) -> str:
    """A whole page: ``body`` (HTML) under an ``<h1>`` heading, with plotly.js inlined (opens offline)."""
    from plotly.offline import get_plotlyjs

    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<script>{get_plotlyjs()}</script><style>{STYLE}</style></head><body>"
            f"<h1>{escape(heading)}</h1>{body}</body></html>")


def escape(text: Any) -> str:
    return _html.escape(str(text))


def paragraph(text: str) -> str:
    return f"<p>{escape(text)}</p>"


def findings(sentences: Sequence[str], headline: int = 0) -> str:
    """A bulleted list of measured findings (each sentence should carry its number). The first ``headline``
    sentences are marked as the section's answer: the report's "What we found" summary repeats them."""
    items = "".join(f'<li class="headline">{escape(s)}</li>' if i < headline else f"<li>{escape(s)}</li>"
                    for i, s in enumerate(sentences))
    return f'<ul class="findings">{items}</ul>'


HEADLINE = re.compile(r'<li class="headline">(.*?)</li>', re.S)


def headlines(body: str) -> list[str]:
    """The sentences a rendered section marked as headline (HTML-escaped, as written)."""
    return HEADLINE.findall(body)


def table(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None) -> str:
    head = ""
    if header:
        head = "<thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr></thead>"
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table>{head}<tbody>{body}</tbody></table>"


_fig_counter = 0


def plotly_figure(fig: Any, caption: str = "") -> str:
    """Embed a plotly figure; the page's single plotly.js draws it."""
    global _fig_counter
    _fig_counter += 1
    div_id = f"fig{_fig_counter}"
    spec = fig.to_json()
    cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return (
        f'<figure><div id="{div_id}" class="plot"></div>{cap}'
        f"<script>(function(){{var s={spec};Plotly.newPlot('{div_id}',s.data,s.layout,"
        f"{{responsive:true,displaylogo:false}});}})();</script></figure>"
    )


def tokens_html(tokens: Sequence[str], values: Sequence[float], vmax: float | None = None) -> str:
    """Tokens highlighted by a non-negative value (feature or neuron activation)."""
    vmax = vmax or max([abs(v) for v in values] + [1e-9])
    spans = []
    for t, v in zip(tokens, values):
        a = min(abs(v) / vmax, 1.0)
        spans.append(
            f'<span class="tok" title="{v:.3g}" style="background:rgba(255,120,0,{a:.2f})">{escape(t)}</span>'
        )
    return '<span class="ctx">' + "".join(spans) + "</span>"

