"""The progress protocol: how long-running library functions report what they are doing.

The library calls a :class:`Progress` object and never draws anything itself; the CLI passes one that draws
(``naslung.cli.progress.RichProgress``). A task is named by a short label; ``start`` on a name that is
already running restarts it (e.g. the batches of the next epoch).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Progress(Protocol):
    """Receives the start, advance and end of named tasks."""

    def start(self, task: str, total: int | None) -> None:
        """Begin (or restart) ``task`` with ``total`` steps (None: unknown)."""

    def advance(self, task: str, n: int = 1, **info: Any) -> None:
        """``n`` more steps of ``task`` are done; ``info`` describes the latest (e.g. ``loss=0.31``)."""

    def finish(self, task: str) -> None:
        """``task`` is over (completed, stopped early or failed)."""


class NullProgress:
    """A :class:`Progress` that ignores everything: the default of every library function."""

    def start(self, task: str, total: int | None) -> None:
        pass

    def advance(self, task: str, n: int = 1, **info: Any) -> None:
        pass

    def finish(self, task: str) -> None:
        pass


class RecordingProgress:
    """A :class:`Progress` that keeps every call as a tuple in :attr:`events`, in order: ``("start", task,
    total)``, ``("advance", task, n, info)``, ``("finish", task)`` (for scripts that log, and for tests)."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def start(self, task: str, total: int | None) -> None:
        self.events.append(("start", task, total))

    def advance(self, task: str, n: int = 1, **info: Any) -> None:
        self.events.append(("advance", task, n, info))

    def finish(self, task: str) -> None:
        self.events.append(("finish", task))


def as_progress(progress: Progress | None) -> Progress:
    """``progress`` itself, or a :class:`NullProgress` for None (or False, the old "no bar" flag)."""
    if progress is None or progress is False:
        return NullProgress()
    if isinstance(progress, bool) or not isinstance(progress, Progress):
        raise TypeError(f"progress must be a naslung.progress.Progress or None, got {progress!r} "
                        "(the CLI passes naslung.cli.progress.RichProgress to draw a bar)")
    return progress


@contextmanager
def tracked(progress: Progress | None, task: str, total: int | None) -> Iterator[Callable[..., None]]:
    """Run ``task`` on ``progress`` for the ``with`` block; yields ``advance(n=1, **info)`` for it.

    ``finish`` is called however the block ends, so a failed step leaves no task running.
    """
    sink = as_progress(progress)
    sink.start(task, total)
    try:
        yield lambda n=1, **info: sink.advance(task, n, **info)
    finally:
        sink.finish(task)
