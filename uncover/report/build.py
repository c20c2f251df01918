"""`uncover report`: run every section on a model and write one self-contained HTML page.

Each section's compute() output is cached as JSON under ``<out>/.cache/<section>-<key>.json``; the key
hashes the model name, the section's version and the run options, so a re-run only recomputes what
changed. A section that raises is shown in the page as a failure with its error, and the rest go on;
``build_report`` returns the page's path with the failed sections and their one-line errors, so the
``report`` command can exit non-zero after writing the page.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uncover.core.budget import budget_bytes, memory_budget, peak_rss_bytes, working_bytes
from uncover.core.memory import keep_no_freed_memory, release_memory
from uncover.core.results import RichProgress
from uncover.report import claims as C
from uncover.report import html as H
from uncover.report.section import ReportContext, Section

# "module:attribute" of every section, in page order (survey order: components -> applications).
SECTIONS = [
    "uncover.report.overview:SECTION",
    "uncover.components.report:SECTION",
    "uncover.components.circuits.report:SECTION",
    "uncover.features.report:SECTION",
    "uncover.representations.report:SECTION",
    "uncover.representations.world.report:SECTION",
    "uncover.dynamics.report:SECTION",
    "uncover.applications.editing.report:SECTION",
    "uncover.applications.pruning.report:SECTION",
]


# the survey's questions, in its order, and the sections that answer each (the summary and the contents)
QUESTIONS = [
    ("How do its components compute? (neurons, attention heads, MLPs, circuits)", ["overview", "components", "circuits"]),
    ("What features does it represent? (superposition, sparse autoencoders)", ["features"]),
    ("What do its representations encode? (probes, steering, world models)", ["representations", "world"]),
    ("How does generalisation arise in training? (grokking, memorisation, induction heads)", ["dynamics"]),
    ("How are these insights used? (editing, pruning, alignment)", ["editing", "pruning_alignment"]),
]


def load_sections(only: list[str] | None = None) -> list[Section]:
    sections = []
    for spec in SECTIONS:
        module_name, attr = spec.split(":")
        section = getattr(importlib.import_module(module_name), attr)
        if only is None or section.key in only:
            sections.append(section)
    return sections


def _cache_key(model_name: str, section: Section, ctx: ReportContext) -> str:
    raw = json.dumps([model_name, section.key, section.version, ctx.full, ctx.seed])
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


@dataclass
class BuiltReport:
    """The written page, the sections that failed as (key, title, one-line error), the data of those that
    did not ({section key: compute() output}) and the model's card (``model_card``: sizes)."""

    path: Path
    failed: list[tuple[str, str, str]] = field(default_factory=list)
    data: dict[str, dict[str, Any]] = field(default_factory=dict)
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


def _one_line(e: BaseException) -> str:
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def build_report(
    model_name: str = "smollm2-135m",
    out_dir: str | Path = "report",
    full: bool = False,
    only: list[str] | None = None,
    use_cache: bool = True,
    seed: int = 0,
    max_memory: float | None = None,
) -> BuiltReport:
    """Compute every section for ``model_name`` and write ``out_dir/index.html``; returns its path and
    the sections that failed (each is also shown in the page with its traceback). max_memory: a memory
    budget in GB (``uncover.core.budget``) that the sections' self-sized work follows; each section's
    footer states the run's peak resident memory so far and whether it stayed within the budget."""
    with memory_budget(max_memory):
        return _build(model_name, Path(out_dir), full, only, use_cache, seed)


def _build(model_name: str, out: Path, full: bool, only: list[str] | None, use_cache: bool, seed: int) -> BuiltReport:
    from uncover.core.loading import load

    cache_dir = out / ".cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    keep_no_freed_memory()  # sections are unlike steps: memory one frees is rarely the size the next needs
    model = load(model_name)
    working_bytes(model)  # a budget the weights alone exceed fails here, before any section
    sections = load_sections(only)
    parts: list[tuple[Section, str, float, bool, int]] = []
    failed: list[tuple[str, str, str]] = []
    computed: dict[str, dict[str, Any]] = {}
    with RichProgress() as progress:  # one bar for the report, one per long step of a section
        bar = progress.bars
        overall = bar.add_task("report", total=len(sections), status="")
        for section in sections:
            bar.update(overall, description=f"report: {section.title}")
            ctx = ReportContext(full=full, seed=seed, work_dir=out / ".work" / section.key, progress=progress)
            ctx.work_dir.mkdir(parents=True, exist_ok=True)
            path = cache_dir / f"{section.key}-{_cache_key(model.name, section, ctx)}.json"
            t0 = time.time()
            try:
                if use_cache and path.exists():
                    data = json.loads(path.read_text())
                else:
                    data = section.compute(model, ctx)
                    _write_json_atomic(path, data)
                body = section.render(data)
                computed[section.key] = data
                ok = True
            except Exception as e:  # a failing section is reported (page and exit code), not fatal
                body = "<pre class='error'>" + H.escape(traceback.format_exc()) + "</pre>"
                ok = False
                failed.append((section.key, section.title, _one_line(e)))
            seconds = time.time() - t0
            release_memory()
            parts.append((section, body, seconds, ok, peak_rss_bytes()))
            bar.console.print(f"{section.title}: {'done' if ok else 'FAILED'} in {seconds:.1f} s, "
                              f"peak memory so far {peak_rss_bytes() / 1e9:.2f} GB")
            bar.advance(overall)
    index = out / "index.html"
    card = model_card(model)
    index.write_text(_page(card, parts, full))
    return BuiltReport(index, failed, computed, card)


def model_card(model) -> dict[str, Any]:
    """The sizes a report states about a model (JSON-able)."""
    cfg = model.cfg
    return {"name": model.name, "architecture": f"{model.adapter.name} ({type(model.hf).__name__})",
            "n_layers": cfg.n_layers, "n_heads": cfg.n_heads, "n_kv_heads": cfg.n_kv_heads, "d_model": cfg.d_model,
            "d_head": cfg.d_head, "d_mlp": cfg.d_mlp, "d_vocab": cfg.d_vocab, "n_ctx": cfg.n_ctx,
            "parameters": sum(p.numel() for p in model.hf.parameters())}


def _page(c: dict[str, Any], parts, full: bool) -> str:
    card = H.table(
        [
            ["model", c["name"]],
            ["architecture", c["architecture"]],
            ["layers x heads (KV heads)", f"{c['n_layers']} x {c['n_heads']} ({c['n_kv_heads']})"],
            ["d_model / d_head / d_mlp", f"{c['d_model']} / {c['d_head']} / {c['d_mlp']}"],
            ["vocabulary / context", f"{c['d_vocab']} / {c['n_ctx']}"],
            ["parameters", f"{c['parameters'] / 1e6:.1f} M"],
            ["mode", "full-size reproductions" if full else "quick default run"],
        ]
    )
    toc, summary = _contents(parts)
    body = "".join(
        f'<section id="{s.key}"><h2>{H.escape(s.title)}</h2>{b}'
        f'<p class="meta">{"computed or loaded" if ok else "failed"} in {t:.1f} s; {memory_note(peak)}</p></section>'
        for s, b, t, ok, peak in parts
    )
    intro = ("<p>An uncover report: each section measures one part of the survey's question on this model.</p>"
             + card + summary + toc + body)
    return H.document(f"uncover report: {c['name']}", f"How {c['name']} works", intro)


def memory_note(peak: int) -> str:
    """The run's peak resident memory so far (bytes) in words, against the memory budget if one is set."""
    said = f"peak memory of the run so far {peak / 1e9:.2f} GB"
    budget = budget_bytes()
    if budget is None:
        return said
    within = C.at_most(peak / 1e9, C.Threshold("memory budget", budget / 1e9, "peak memory", "GB"),
                       "within the memory budget", "over the memory budget")
    return f"{said}, {within}"


def _contents(parts) -> tuple[str, str]:
    """(table of contents grouped by the survey's questions, the "What we found" summary).

    The summary is generated: under each question, the sentences each of its sections marked as headline
    findings (``html.findings(..., headline=k)``), each linking to its section; a failed section says so."""
    by_key = {s.key: (s, body, ok) for s, body, _, ok, _ in parts}
    groups = [(q, [k for k in keys if k in by_key]) for q, keys in QUESTIONS]
    known = {k for _, keys in QUESTIONS for k in keys}
    groups.append(("Other sections", [k for k in by_key if k not in known]))
    toc, found = [], []
    for question, keys in groups:
        if not keys:
            continue
        links = "".join(f'<li><a href="#{k}">{H.escape(by_key[k][0].title)}</a>{"" if by_key[k][2] else " (failed)"}'
                        "</li>" for k in keys)
        toc.append(f"<li>{H.escape(question)}<ul>{links}</ul></li>")
        items = []
        for k in keys:
            section, body, ok = by_key[k]
            link = f' <a href="#{k}">({H.escape(section.title)})</a>'
            if not ok:
                items.append(f"<li>The section {H.escape(section.title)} failed; see its error.{link}</li>")
            items += [f"<li>{sentence}{link}</li>" for sentence in H.headlines(body)]
        if items:
            found.append(f"<h3>{H.escape(question)}</h3><ul>{''.join(items)}</ul>")
    summary = ('<section id="summary" class="summary"><h2>What we found</h2><p>The headline measurements of '
               "each section below, grouped by the survey's questions; every number is computed in this run.</p>"
               + "".join(found) + "</section>") if found else ""
    return f"<h2>Contents</h2><ul>{''.join(toc)}</ul>", summary
