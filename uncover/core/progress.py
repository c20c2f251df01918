"""The one progress protocol every technique uses (see :mod:`uncover.core.results`); torch-free, so the
command line can import :class:`RichProgress` without loading a model's dependencies."""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Protocol, TypeVar, runtime_checkable

T = TypeVar("T")


@runtime_checkable
class Progress(Protocol):
    """``progress(items, description="", total=None)`` -> the same items, reported as they are consumed.

    ``total`` is the number of items when ``items`` has no ``len`` (a generator).
    """

    def __call__(self, items: Iterable[T], description: str = "", total: int | None = None) -> Iterable[T]: ...


def no_progress(items: Iterable[T], description: str = "", total: int | None = None) -> Iterable[T]:
    """The default Progress: the items, unchanged."""
    return items


def show_status(items: Iterable, text: str) -> None:
    """Set the live status line of an iterable a Progress returned (no-op when it has none)."""
    setter = getattr(items, "set_status", None)
    if callable(setter):
        setter(text)


class RichProgress:
    """A Progress that draws one rich bar per call (with a live status line).

    The display is shown while a tracked iteration runs or a ``with RichProgress() as progress:`` block is
    open, so one instance can be created once (a CLI module) and passed to any long-running function.
    """

    def __init__(self, transient: bool = False):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress as Bars, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.bars = Bars(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                         TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
                         transient=transient)
        self.users = 0  # open with-blocks and running iterations; the display shows while > 0

    def open(self) -> None:
        if self.users == 0:
            self.bars.start()
        self.users += 1

    def close(self) -> None:
        self.users -= 1
        if self.users == 0:
            self.bars.stop()

    def __enter__(self) -> "RichProgress":
        self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __call__(self, items: Iterable[T], description: str = "", total: int | None = None) -> "_Tracked[T]":
        return _Tracked(self, items, description, total)


class _Tracked(Iterable[T]):
    """Items whose consumption advances one rich task (added on first iteration, removed at the end)."""

    def __init__(self, owner: RichProgress, items: Iterable[T], description: str, total: int | None):
        self.owner, self.bars, self.items, self.description = owner, owner.bars, items, description
        self.total = total if total is not None else (len(items) if hasattr(items, "__len__") else None)
        self.task: Any = None

    def __len__(self) -> int:
        return len(self.items)  # type: ignore[arg-type]

    def set_status(self, text: str) -> None:
        if self.task is not None:
            self.bars.update(self.task, status=text)

    def __iter__(self) -> Iterator[T]:
        self.owner.open()
        self.task = self.bars.add_task(self.description, total=self.total, status="")
        try:
            for item in self.items:
                yield item
                self.bars.advance(self.task)
        finally:
            self.bars.remove_task(self.task)
            self.task = None
            self.owner.close()
