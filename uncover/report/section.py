"""The uniform interface every report section implements.

A section turns a model into JSON-able data (``compute``), and data into HTML (``render``).
Only ``compute`` is expensive; its output is cached on disk, so a re-run only recomputes sections
whose ``version`` or inputs changed. ``render`` must work from the cached data alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence, TypeVar

from uncover.core.memory import release_memory
from uncover.core.results import Progress, no_progress

if TYPE_CHECKING:
    from uncover.core.model import Model

T = TypeVar("T")


@dataclass
class ReportContext:
    """What a section may use besides the model.

    full: run the full-size reproduction instead of the quick default.
    seed: the seed every section should use for sampling.
    work_dir: a folder private to this section for large artefacts (checkpoints, SAEs).
    progress: the uncover Progress (``uncover.core.results``): ``ctx.progress(items, "what")`` reports a loop;
        pass it on to any long-running function's ``progress=``.
    """

    full: bool = False
    seed: int = 0
    work_dir: Path = field(default_factory=lambda: Path("."))
    progress: Progress = no_progress


class Section(Protocol):
    key: str        # short id, also the cache key and the HTML anchor
    title: str      # heading shown in the report
    version: str    # bump when compute() changes, to invalidate the cache

    def compute(self, model: "Model", ctx: ReportContext) -> dict[str, Any]:
        """Run the experiments; return JSON-able data (numbers, lists, strings)."""
        ...

    def render(self, data: dict[str, Any]) -> str:
        """HTML fragment (use uncover.report.html helpers) built from compute()'s data only."""
        ...


def run_parts(parts: Sequence[tuple[str, Callable[[], dict[str, Any]]]]) -> dict[str, dict[str, Any]]:
    """{name: fn()} for the independent parts of a section, each with its wall time in ``"seconds"``; a part
    that raises records ``{"error": "Type: message"}`` (which its render shows) and the others still run."""
    import time

    out: dict[str, dict[str, Any]] = {}
    for name, fn in parts:
        start = time.perf_counter()
        try:
            out[name] = fn()
        except Exception as e:  # one part failing leaves the others
            out[name] = {"error": f"{type(e).__name__}: {e}"}
        out[name]["seconds"] = time.perf_counter() - start
        release_memory()  # give back the memory this part freed (the allocator keeps it otherwise)
    return out
