"""Progress bars for the terminal: the rich implementation of :class:`naslung.progress.Progress`."""

from __future__ import annotations

from types import TracebackType
from typing import Any


def format_info(info: dict[str, Any]) -> str:
    """``{"loss": 0.3124, "val_f1": 0.8}`` -> ``"loss 0.312  val f1 0.800"`` (floats with 3 decimals)."""
    parts = []
    for key, value in info.items():
        text = f"{value:.3f}" if isinstance(value, float) else str(value)
        parts.append(f"{key.replace('_', ' ')} {text}")
    return "  ".join(parts)


class RichProgress:
    """One rich bar per running task, on stderr; a finished task's bar is removed.

    The display starts with the first task and stops once no task is running, or when the ``with`` block
    ends (so an error leaves the terminal clean). ``quiet`` draws nothing (e.g. ``--json``).
    """

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> RichProgress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _display(self) -> Any:
        if self._bar is None:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.fields[info]}"),
                                 console=Console(stderr=True, quiet=self.quiet), transient=False)
            self._bar.start()
        return self._bar

    def start(self, task: str, total: int | None) -> None:
        bar = self._display()
        if task in self._tasks:
            bar.reset(self._tasks[task], total=total, info="")
        else:
            self._tasks[task] = bar.add_task(task, total=total, info="")

    def advance(self, task: str, n: int = 1, **info: Any) -> None:
        if task not in self._tasks:
            self.start(task, None)
        fields = {"info": format_info(info)} if info else {}
        self._bar.update(self._tasks[task], advance=n, **fields)

    def finish(self, task: str) -> None:
        task_id = self._tasks.pop(task, None)
        if task_id is not None and self._bar is not None:
            self._bar.remove_task(task_id)
        if not self._tasks:
            self.close()

    def close(self) -> None:
        """Stop the display (idempotent)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        self._tasks.clear()


def progress_bar(quiet: bool) -> RichProgress | None:
    """A :class:`RichProgress`, or None when ``quiet`` (``--json``: nothing but the JSON is printed)."""
    return None if quiet else RichProgress()
