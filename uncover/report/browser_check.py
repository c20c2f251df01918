"""Open a report page in headless Chromium and check every plotly figure as a reader would see it.

    python -m uncover.report.browser_check report/index.html --screenshots shots/

needs Playwright for Python (``pip install playwright``) and a chromium (Debian: ``apt-get install chromium``;
``--chromium PATH`` or ``$UNCOVER_CHROMIUM`` picks another). It loads the page, waits until every figure has
been drawn, reads each figure's data and axes from plotly's own state (``gd._fullLayout``, ``gd._fullData``),
saves a screenshot of every figure and of the whole page, and reports problems (``--json`` prints them and
every figure's axes as JSON). Exit status 1 when there are any, 2 when Playwright or chromium is missing.
From Python: ``check_page(path, screenshots=folder)`` returns a ``CheckResult``; ``standalone_page(html)``
wraps report fragments (figures, section bodies) in a page to check.

The rules, each a ``Problem.rule``:

``js-error``        an uncaught exception in the page (``pageerror``) or a ``console.error`` message.
``not-rendered``    a figure container (``div.plot`` / ``.plotly-graph-div``) that plotly did not draw, or drew
                    with no size.
``empty``           a figure with no visible trace, or whose traces hold no finite value to draw.
``empty-trace``     a visible trace with nothing to draw: no finite z cell (heatmaps), no point with both x and y
                    set (NaN and Infinity reach the page as null), or no finite value in its one data array.
``nonfinite-range`` a drawn linear or log axis whose range is not two finite numbers (log ranges are log10).
``log-decades``     a log axis spanning more than ``MAX_DECADES`` (12) decades: nothing is readable over it,
                    and it is the mark of a value that blew up (a loss of 1e108) or collapsed to ~0 (1e-30).
``outlier-range``   a linear axis whose span is more than ``MAX_SPAN_RATIO`` (1e6) times the robust span of
                    the data on it (10th to 90th percentile; ``max(1, |median|)`` when that is 0): one outlier
                    squeezes every other point onto a line.
``off-range``       an axis with data on it (numeric, finite) none of which lies inside the range shown.
``no-colour-key``   a heatmap (any trace coloured by z) without a colour bar, not sharing one with another trace
                    of the same colour scale, and without text on its cells: its colours cannot be read.
``odd-ticks``       an axis whose automatic ticks are not round numbers (a linear step other than 1, 2, 2.5 or
                    5 x 10^k, or ticks off its multiples; log ticks of more than 2 significant digits, unless
                    evenly spaced by a round step): what plotly's ``tickmode="sync"`` gives a secondary axis,
                    with labels like 0.276 and 74.9.
``clipped-text``    a title, axis title, tick label, annotation or legend entry that sticks out of the figure by
                    more than 2 px.
``overlapping-text`` two of those labels drawn over or against each other: titles, axis titles, annotations
                    and legend entries closer than ``NEAR_PX`` (6) px (a legend running into an axis title, a
                    title on a subplot title); a tick label overlapping any of them by over 2 px; tick labels of
                    one axis overlapping by over a third of the smaller box in both directions (crowded minor
                    log ticks). Not compared: legend entries with each other (plotly lays them out), rotated
                    tick labels of one axis, tick labels of different axes.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MAX_DECADES = 12.0
MAX_SPAN_RATIO = 1e6
CLIP_TOLERANCE_PX = 2.0
NEAR_PX = 6.0  # titles, annotations and legend entries closer than this read as one
MAX_LISTED = 5  # overlaps listed per figure
NICE_STEPS = (1.0, 2.0, 2.5, 5.0, 10.0)
FIGURES = "div.plot, div.plotly-graph-div"


@dataclass
class Problem:
    figure: str     # "#fig12 (dynamics): Double descent" or "page"
    rule: str       # one of the rules in the module docstring
    detail: str     # what was seen: the axis and its range, the trace, the error
    axis: str = ""
    range: list[Any] | None = None

    def __str__(self) -> str:
        return f"{self.figure}: [{self.rule}] {self.detail}"


@dataclass
class FigureInfo:
    id: str
    title: str
    section: str
    traces: int
    axes: dict[str, dict[str, Any]]
    screenshot: str | None = None

    @property
    def name(self) -> str:
        where = f" ({self.section})" if self.section else ""
        return f"#{self.id}{where}: {self.title or '(untitled)'}"


@dataclass
class CheckResult:
    page: str
    figures: list[FigureInfo] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # JavaScript errors, as the page reported them
    screenshots: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def report(self) -> str:
        lines = [f"{self.page}: {len(self.figures)} figures, {len(self.problems)} problems"]
        lines += [f"  {p}" for p in self.problems]
        if self.screenshots:
            lines.append(f"screenshots: {self.screenshots}")
        return "\n".join(lines)


def find_chromium(path: str | None = None) -> str | None:
    """The chromium to use: ``path``, ``$UNCOVER_CHROMIUM``, Debian's /usr/bin/chromium, or one on PATH."""
    for candidate in (path, os.environ.get("UNCOVER_CHROMIUM"), "/usr/bin/chromium"):
        if candidate and Path(candidate).exists():
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


def missing() -> str | None:
    """Why the check cannot run here (no Playwright or no chromium), or None."""
    if importlib.util.find_spec("playwright") is None:
        return "the browser check needs Playwright for Python: `pip install playwright`"
    if find_chromium() is None:
        return ("the browser check needs a chromium: `apt-get install -y chromium` "
                "(or set UNCOVER_CHROMIUM=/path/to/chromium)")
    return None


# Runs in the page: every figure's state, read from plotly's computed layout and data.
_READ = r"""
(selector) => {
  const num = v => typeof v === 'number' && isFinite(v);
  const out = [];
  document.querySelectorAll(selector).forEach((el, i) => {
    if (!el.id) el.id = 'uncover-figure-' + i;
    const sec = el.closest('section');
    const fig = el.closest('figure');
    const cap = fig && fig.querySelector('figcaption');
    const rect = el.getBoundingClientRect();
    const info = {id: el.id, section: sec ? (sec.id || '') : '', caption: cap ? cap.textContent.trim() : '',
                  rendered: !!(el._fullLayout && el.querySelector('.main-svg')),
                  width: rect.width, height: rect.height, title: '', traces: [], axes: {}, clipped: []};
    out.push(info);
    if (!info.rendered) return;
    const L = el._fullLayout;
    const t = el.layout && el.layout.title;  // the author's title (_fullLayout holds a placeholder when none)
    info.title = (typeof t === 'string' ? t : (t && t.text)) || '';
    for (const key of Object.keys(L)) {
      if (!/^[xy]axis\d*$/.test(key)) continue;
      const ax = L[key];
      if (!ax || !ax._id) continue;
      const ut = ((el.layout || {})[key] || {}).title;  // the author's (_fullLayout holds a placeholder)
      info.axes[key] = {id: ax._id, type: ax.type, range: (ax.range || []).map(v => num(v) ? v : String(v)),
                        title: (typeof ut === 'string' ? ut : (ut && ut.text)) || '', values: [], used: false};
    }
    const byId = {};
    for (const [key, ax] of Object.entries(info.axes)) byId[ax.id] = ax;
    const arrays = ['x', 'y', 'z', 'values', 'r', 'lat', 'lon', 'a', 'b', 'c', 'u', 'v', 'w', 'open', 'close'];
    (el._fullData || []).forEach((t, k) => {
      if (t.visible !== true) return;
      const tr = {name: t.name || ('trace ' + k), type: t.type, finite: 0, total: 0};
      if ('showscale' in t && t.z && !t.coloraxis) {  // a colour-coded trace: is there a key to its colours?
        tr.showscale = !!t.showscale;
        tr.colorscale = JSON.stringify(t.colorscale || null);
        tr.labelled = !!(t.texttemplate || (t.text && t.text.length));
      }
      info.traces.push(tr);
      // drawable points: finite z cells; else (x, y) pairs with both set; else whichever array it has
      const flat = arr => [].concat(...Array.from(arr, v => Array.isArray(v) || ArrayBuffer.isView(v)
                                                           ? Array.from(v) : [v]));
      const ok = v => num(v) || (typeof v === 'string' && v !== '');
      const has = a => t[a] && typeof t[a] !== 'string' && typeof t[a].length === 'number' && t[a].length > 0;
      if (has('z')) { const z = flat(t.z); tr.total = z.length; tr.finite = z.filter(num).length; }
      else if (has('x') && has('y')) {
        tr.total = Math.max(t.x.length, t.y.length);
        for (let j = 0; j < Math.min(t.x.length, t.y.length); j++) if (ok(t.x[j]) && ok(t.y[j])) tr.finite += 1;
      } else {
        for (const a of arrays) {
          if (!has(a)) continue;
          const v = flat(t[a]);
          tr.total += v.length;
          tr.finite += v.filter(ok).length;
        }
      }
      for (const [a, id] of [['x', t.xaxis], ['y', t.yaxis]]) {
        const ax = byId[id];
        if (!ax) continue;
        ax.used = true;
        let arr = t[a];
        if ((!arr || !arr.length) && t.z && t.z.length) {  // heatmap without x/y: cell indices
          const n = a === 'y' ? t.z.length : (t.z[0] || []).length;
          arr = Array.from({length: n}, (_, j) => j);
        }
        if (!arr || typeof arr.length !== 'number') continue;
        for (const v of Array.from(arr)) if (num(v)) ax.values.push(v);
        if (t.type === 'bar' && ((t.orientation === 'h') === (a === 'x'))) ax.values.push(num(t.base) ? t.base : 0);
      }
    });
    // ticks as drawn: values (log10 units on log axes) and how they were chosen
    for (const [key, ax] of Object.entries(info.axes)) {
      const a = L[key];
      ax.tickmode = a.tickmode;
      ax.ticks = (a._vals || []).filter(v => num(v.x) && !v.minor).map(v => v.x);
    }
    // every label: figure title, axis titles, tick labels, annotations (subplot titles), legend entries
    const texts = [];
    el.querySelectorAll('text').forEach(t => {
      const cls = t.getAttribute('class') || '', parent = (t.parentNode && t.parentNode.getAttribute('class')) || '';
      let group = null;
      if (cls === 'gtitle') group = 'title';
      else if (/^[xy]\d*title$/.test(cls)) group = cls;
      else if (cls === 'annotation-text') group = 'annotation ' + texts.length;
      else if (cls === 'legendtext') group = 'legend';
      else if (/tick$/.test(parent.split(' ')[0])) group = parent.split(' ')[0];
      if (!group) return;
      const r = t.getBoundingClientRect();
      if (!r.width || !r.height || !t.textContent.trim()) return;
      texts.push({group, text: t.textContent.trim().slice(0, 60), r,
                  rotated: /rotate\((?!-?90[,)]|0[,)])/.test(t.getAttribute('transform') || '')});
    });
    for (const t of texts) {  // text that sticks out of the figure
      const r = t.r;
      const over = Math.max(rect.left - r.left, r.right - rect.right, rect.top - r.top, r.bottom - rect.bottom);
      if (over > %TOL%) info.clipped.push({text: t.text, by: Math.round(over)});
    }
    info.overlaps = [];
    const tick = t => /tick$/.test(t.group);
    for (let i = 0; i < texts.length; i++) for (let j = i + 1; j < texts.length; j++) {
      const a = texts[i], b = texts[j];
      if (a.group === 'legend' && b.group === 'legend') continue;  // plotly lays out its own legend
      const w = Math.min(a.r.right, b.r.right) - Math.max(a.r.left, b.r.left);  // < 0: the gap between them
      const h = Math.min(a.r.bottom, b.r.bottom) - Math.max(a.r.top, b.r.top);
      let hit;
      if (tick(a) && tick(b)) {
        // ticks of one axis: boxes include the font's ascent and descent, so a third of the smaller box;
        // a rotated label's box is not its shape, and ticks of different axes meet at the corner
        hit = a.group === b.group && !a.rotated && !b.rotated && w > Math.min(a.r.width, b.r.width) / 3
              && h > Math.min(a.r.height, b.r.height) / 3;
      } else if (tick(a) || tick(b)) hit = w > 2 && h > 2;
      else hit = w > -%NEAR% && h > -%NEAR% && (w > 0 || h > 0);  // titles, legend: closer than NEAR px reads as one
      if (hit) info.overlaps.push({a: a.text, b: b.text, ga: a.group, gb: b.group});
    }
  });
  return out;
}
"""

_ALL_DRAWN = r"""
(selector) => Array.from(document.querySelectorAll(selector))
                   .every(el => el._fullLayout && el.querySelector('.main-svg'))
"""


def _percentile(sorted_values: list[float], q: float) -> float:
    i = q * (len(sorted_values) - 1)
    lo, hi = math.floor(i), math.ceil(i)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (i - lo)


def _round(x: float, steps=NICE_STEPS) -> bool:
    """x is m * 10^k with m one of ``steps`` (to 1e-6)."""
    if x == 0:
        return True
    m = abs(x) / 10 ** math.floor(math.log10(abs(x)))
    return any(abs(m - s) < 1e-6 * s for s in steps)


def _odd_ticks(kind: str, ticks: list[float]) -> str:
    """The tick labels, when they are not round: on a linear axis, a step that is not 1, 2, 2.5 or 5 x 10^k or
    ticks off its multiples; on a log axis (ticks in log10 units), values of more than 2 significant digits that
    are not evenly spaced by a round step either."""
    if kind == "log":  # within a decade plotly spaces log ticks evenly (1060, 1070, ...): either is round
        values = sorted(10 ** t for t in ticks)
        two_digits = all(_round(v, tuple(d / 10 for d in range(10, 101))) for v in values)
        return "" if two_digits or _even_round(values) else ", ".join(f"{v:.4g}" for v in values)
    return "" if _even_round(sorted(ticks)) else ", ".join(f"{t:.4g}" for t in sorted(ticks))


def _even_round(ticks: list[float]) -> bool:
    """Sorted ticks a round step apart (the median step), each on a multiple of it."""
    steps = sorted(b - a for a, b in zip(ticks, ticks[1:]))
    step = steps[len(steps) // 2]
    return step > 0 and _round(step) and all(abs(t / step - round(t / step)) < 1e-6 for t in ticks)


def axis_problems(name: str, key: str, axis: dict[str, Any]) -> list[Problem]:
    """The range rules for one axis (``axis``: type, range, values = the finite data on it)."""
    kind, rng = axis.get("type"), axis.get("range") or []
    if kind not in ("linear", "log") or not axis.get("used"):
        return []  # category and date axes: positions are not numbers to judge
    label = f"{key} ({axis.get('title') or 'untitled'})"
    shown = f"10^{rng[0]:.3g} .. 10^{rng[1]:.3g}" if kind == "log" and all(isinstance(v, (int, float)) for v in rng) \
        else f"{rng}"
    if len(rng) != 2 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in rng):
        return [Problem(name, "nonfinite-range", f"{label} range {rng}", key, rng)]
    lo, hi = sorted(rng)
    values = [v for v in axis.get("values", []) if isinstance(v, (int, float)) and math.isfinite(v)]
    if kind == "log":
        values = [math.log10(v) for v in values if v > 0]
    out = []
    if kind == "log" and hi - lo > MAX_DECADES:
        out.append(Problem(name, "log-decades", f"{label} log axis spans {hi - lo:.0f} decades ({shown}); "
                           f"more than {MAX_DECADES:g}", key, rng))
    if kind == "linear" and values:
        s = sorted(values)
        robust = _percentile(s, 0.9) - _percentile(s, 0.1)
        ref = robust if robust > 0 else max(1.0, abs(_percentile(s, 0.5)))
        if hi - lo > MAX_SPAN_RATIO * ref:
            out.append(Problem(name, "outlier-range", f"{label} spans {hi - lo:.3g}, over {MAX_SPAN_RATIO:g} x the "
                               f"data's 10-90% span {ref:.3g} ({shown})", key, rng))
    ticks = [t for t in axis.get("ticks", []) if isinstance(t, (int, float)) and math.isfinite(t)]
    if axis.get("tickmode") in ("auto", "sync") and len(ticks) >= 2:
        odd = _odd_ticks(kind, ticks)
        if odd:
            out.append(Problem(name, "odd-ticks", f"{label} ticks at {odd} (tickmode {axis.get('tickmode')}): not "
                               "round numbers", key, rng))
    if values and not any(lo <= v <= hi for v in values):
        out.append(Problem(name, "off-range", f"{label} range {shown} holds none of its {len(values)} data values "
                           f"({min(values):.3g} .. {max(values):.3g}{' in log10' if kind == 'log' else ''})", key, rng))
    return out


def _title(info: dict[str, Any]) -> str:
    """A figure's title, or the start of its caption."""
    return info.get("title") or info.get("caption", "")[:80]


def figure_problems(info: dict[str, Any]) -> list[Problem]:
    """Every rule but js-error, for one figure as read from the page."""
    name = FigureInfo(info["id"], _title(info), info.get("section", ""), 0, {}).name
    if not info["rendered"] or info["width"] < 10 or info["height"] < 10:
        return [Problem(name, "not-rendered",
                        f"drawn: {info['rendered']}, size {info['width']:.0f}x{info['height']:.0f}")]
    out = []
    traces = info["traces"]
    if not traces or not any(t["finite"] for t in traces):
        out.append(Problem(name, "empty", f"{len(traces)} visible traces, no finite value to draw"))
    else:
        out += [Problem(name, "empty-trace", f"trace '{t['name']}' ({t['type']}): none of its {t['total']} points has "
                        "finite values to draw") for t in traces if not t["finite"]]
    keyed = {t["colorscale"] for t in traces if t.get("showscale")}
    out += [Problem(name, "no-colour-key", f"{t['type']} '{t['name']}' has no colour bar (nor one shared with another "
                    "trace of its colour scale) and no text on its cells") for t in traces
            if t.get("showscale") is False and not t.get("labelled") and t.get("colorscale") not in keyed]
    for key, axis in sorted(info["axes"].items()):
        out += axis_problems(name, key, axis)
    out += [Problem(name, "clipped-text", f"'{c['text']}' sticks out of the figure by {c['by']} px")
            for c in info.get("clipped", [])]
    out += [Problem(name, "overlapping-text", f"'{o['a']}' ({o['ga']}) overlaps '{o['b']}' ({o['gb']})")
            for o in info.get("overlaps", [])[:MAX_LISTED]]
    if len(info.get("overlaps", [])) > MAX_LISTED:
        out.append(Problem(name, "overlapping-text", f"... and {len(info['overlaps']) - MAX_LISTED} more overlaps"))
    return out


def standalone_page(body: str, title: str = "figures") -> str:
    """An HTML page around report fragments (``uncover.report.html`` figures, section bodies), with plotly.js
    inlined as the report has it: to check figures without building a whole report."""
    from uncover.report.html import document

    return document(title, title, body)


def _slug(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9]+", "-", text).strip("-").lower()[:50]


def check_page(page_path: str | Path, screenshots: str | Path | None = None, chromium: str | None = None,
               width: int = 1200, timeout_s: float = 60.0) -> CheckResult:
    """Load ``page_path`` in headless chromium and apply every rule; screenshots (one PNG per figure, named by
    its order, section and title, plus ``page.png``) go to ``screenshots`` when given."""
    from playwright.sync_api import sync_playwright

    why = missing() if chromium is None else None
    if why:
        raise RuntimeError(why)
    page_path = Path(page_path).resolve()
    result = CheckResult(str(page_path))
    shots = Path(screenshots) if screenshots else None
    if shots:
        shots.mkdir(parents=True, exist_ok=True)
        result.screenshots = str(shots)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=find_chromium(chromium), args=["--no-sandbox", "--disable-gpu"])
        try:
            context = browser.new_context(viewport={"width": width, "height": 900})
            page = context.new_page()
            page.on("pageerror", lambda e: result.errors.append(f"pageerror: {e}"))
            page.on("console", lambda m: m.type == "error" and result.errors.append(f"console.error: {m.text}"))
            page.goto(page_path.as_uri(), wait_until="load", timeout=timeout_s * 1000)
            try:
                page.wait_for_function(_ALL_DRAWN, arg=FIGURES, timeout=timeout_s * 1000)
            except Exception:  # the not-rendered rule names the figures that were not drawn
                pass
            page.wait_for_timeout(300)  # responsive figures settle to their container's width
            script = _READ.replace("%TOL%", str(CLIP_TOLERANCE_PX)).replace("%NEAR%", str(NEAR_PX))
            infos = page.evaluate(script, FIGURES)
            for i, info in enumerate(infos):
                problems = figure_problems(info)
                result.problems += problems
                fig = FigureInfo(info["id"], _title(info), info.get("section", ""),
                                 len(info["traces"]), {k: {kk: vv for kk, vv in a.items() if kk != "values"}
                                                       for k, a in info["axes"].items()})
                if shots and info["rendered"]:
                    path = shots / f"{i + 1:03d}-{_slug(fig.section)}-{_slug(fig.title) or fig.id}.png"
                    try:
                        page.locator(f"#{info['id']}").screenshot(path=str(path), timeout=10_000)
                        fig.screenshot = str(path)
                    except Exception as e:  # a hidden figure cannot be photographed; say so, go on
                        result.problems.append(Problem(fig.name, "not-rendered", f"no screenshot: {e}".split("\n")[0]))
                result.figures.append(fig)
            if shots:
                page.screenshot(path=str(shots / "page.png"), full_page=True)
            context.close()
        finally:
            browser.close()
    result.problems[:0] = [Problem("page", "js-error", e) for e in result.errors]
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m uncover.report.browser_check", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("page", help="the report's index.html")
    ap.add_argument("--screenshots", help="folder for one PNG per figure and page.png")
    ap.add_argument("--chromium", help="path to a chromium (default: $UNCOVER_CHROMIUM, /usr/bin/chromium, PATH)")
    ap.add_argument("--json", action="store_true", help="print the problems and figures as JSON")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the page and its figures")
    args = ap.parse_args(argv)
    why = missing() if args.chromium is None else None
    if why:
        print(why, file=sys.stderr)
        return 2
    result = check_page(args.page, args.screenshots, args.chromium, timeout_s=args.timeout)
    if args.json:
        print(json.dumps({"problems": [asdict(p) for p in result.problems],
                          "figures": [asdict(f) for f in result.figures]}, indent=1))
    else:
        print(result.report())
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
