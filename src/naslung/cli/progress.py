"""Progress for the terminal and for logs: implementations of :class:`naslung.progress.Progress`.

On a terminal, rich bars (:class:`RichProgress`); when stderr is a file or a pipe (a log, ``nohup``, a batch
job), plain lines (:class:`LogProgress`), since a bar redrawn in place writes nothing useful there.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any, TextIO


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


class LogProgress:
    """Progress as plain lines for a log: a line at each quarter of a task's total (or every ``interval_s``
    seconds, for a task of unknown total or a slow quarter), and its end with the time taken. A task
    shorter than ``min_s`` (the batches of one epoch, say) writes nothing: a log holds stages, not steps."""

    def __init__(self, stream: TextIO | None = None, interval_s: float = 30.0, min_s: float = 10.0) -> None:
        self.stream = stream if stream is not None else sys.__stderr__
        self.interval_s = interval_s
        self.min_s = min_s
        self._tasks: dict[str, dict[str, Any]] = {}

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _line(self, text: str) -> None:
        if self.stream is not None:
            print(text, file=self.stream, flush=True)

    def start(self, task: str, total: int | None) -> None:
        now = time.monotonic()
        self._tasks[task] = {"total": total, "done": 0, "t0": now, "last": now, "step": 0}

    def advance(self, task: str, n: int = 1, **info: Any) -> None:
        if task not in self._tasks:
            self.start(task, None)
        state = self._tasks[task]
        state["done"] += n
        now, total = time.monotonic(), state["total"]
        step = int(4 * state["done"] / total) if total else 0
        if now - state["t0"] < self.min_s:
            return
        if step > state["step"] or now - state["last"] >= self.interval_s:
            state["step"], state["last"] = max(step, state["step"]), now
            count = f"{state['done']}/{total}" if total else str(state["done"])
            extra = f"  {format_info(info)}" if info else ""
            if not (total and state["done"] >= total):  # the last step is finish's line
                self._line(f"{task}: {count}  {now - state['t0']:.0f} s{extra}")

    def finish(self, task: str) -> None:
        state = self._tasks.pop(task, None)
        if state is not None and time.monotonic() - state["t0"] >= self.min_s:
            self._line(f"{task}: done, {state['done']} in {time.monotonic() - state['t0']:.0f} s")

    def close(self) -> None:
        """Forget the running tasks (idempotent)."""
        self._tasks.clear()


def progress_bar(quiet: bool) -> RichProgress | LogProgress | None:
    """Rich bars on a terminal, plain lines when stderr is a log, None when ``quiet`` (``--json``).

    The log lines go to the process's own stderr (``sys.__stderr__``), not to a captured ``sys.stderr``.
    """
    if quiet:
        return None
    stream = sys.__stderr__
    if stream is not None and not stream.isatty():
        return LogProgress(stream)
    return RichProgress()
