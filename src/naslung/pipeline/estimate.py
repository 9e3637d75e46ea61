"""Remaining-time estimates of a multi-stage job, from the seconds its finished trials and epochs took.

Nothing is guessed: a stage with no measured unit (trial, epoch, or an earlier run of the same stage) is
``unknown``. Early stopping and a search's time budget make the count of units an upper bound, which the
text says ("at most").
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

UNKNOWN = "unknown"


@dataclass(frozen=True)
class Work:
    """What is left of one stage.

    Attributes:
        left: units (trials, epochs) still to do.
        unit: their name, for the text.
        unit_seconds: measured mean seconds per unit, or None before any measurement.
        source: where ``unit_seconds`` was measured (e.g. "search trials").
        upper_bound: ``left`` may not all be needed (early stopping, a search that stops on its own).
        cap_seconds: the stage stops after this long anyway (a time budget), or None.
    """

    left: float
    unit: str
    unit_seconds: float | None
    source: str = ""
    upper_bound: bool = False
    cap_seconds: float | None = None

    def describe(self) -> str:
        """``"~4 min (12 epochs x 20.1 s, member epochs)"``, ``"at most 8.0 h ..."`` or ``"unknown"``."""
        if self.left <= 0:
            return "nothing left"
        seconds = None if self.unit_seconds is None else self.left * self.unit_seconds
        capped = self.cap_seconds is not None and (seconds is None or seconds > self.cap_seconds)
        if capped:
            return f"at most {duration(self.cap_seconds)} (time budget)"
        if seconds is None or not math.isfinite(seconds):  # no measurement, or no end but the time budget
            return UNKNOWN
        prefix = "at most " if self.upper_bound else "~"
        return (f"{prefix}{duration(seconds)} ({self.left:g} {self.unit}s x {self.unit_seconds:.1f} s, "
                f"measured on {self.source})")


def duration(seconds: float | None) -> str:
    """Seconds as ``"45 s"``, ``"12 min"`` or ``"3.5 h"``."""
    if seconds is None or not math.isfinite(seconds):
        return UNKNOWN
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def measured(seconds: float | None) -> str:
    """A one-shot stage: its duration the last time it ran, else unknown."""
    return UNKNOWN if seconds is None else f"~{duration(seconds)} (its last run)"


def trial_seconds(search_dir: str | Path) -> list[float]:
    """Wall seconds of every recorded trial of a search folder (none when there is no search yet)."""
    from naslung.search.records import read_trials

    if not Path(search_dir).is_dir():
        return []
    return [float(r["wall_s"]) for r in read_trials(search_dir) if isinstance(r.get("wall_s"), (int, float))]


def trial_epoch_seconds(search_dir: str | Path) -> list[float]:
    """Seconds per training epoch of the search's successful trials (their training time / epochs)."""
    from naslung.search.records import read_trials

    if not Path(search_dir).is_dir():
        return []
    return [float(r["train_seconds"]) / int(r["epochs"]) for r in read_trials(search_dir)
            if r.get("status") == "ok" and r.get("train_seconds") and r.get("epochs")]


def epochs_left(run_dirs: Iterable[str | Path], planned: int) -> tuple[int, list[float]]:
    """``(epochs still to train, measured seconds of every epoch done)`` over run folders of ``planned``
    epochs each; a finished run (early stopping included) has none left, a missing one all of them."""
    from naslung.atomic import read_jsonl
    from naslung.train.rundir import RunDir

    left, seconds = 0, []
    for path in run_dirs:
        run = RunDir(path)
        records = read_jsonl(run.epochs_log) if run.epochs_log.is_file() else []
        seconds += [float(r["seconds"]) for r in records if isinstance(r.get("seconds"), (int, float))]
        left += 0 if run.finished() else max(planned - len(records), 0)
    return left, seconds


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
