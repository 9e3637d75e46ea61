"""The progress protocol, its null default and the CLI's rich implementation."""

from __future__ import annotations

import pytest

from naslung.cli.progress import LogProgress, RichProgress, format_info, progress_bar
from naslung.progress import NullProgress, Progress, RecordingProgress, as_progress, tracked


def test_tracked_finishes_even_when_the_block_fails():
    rec = RecordingProgress()
    with pytest.raises(RuntimeError), tracked(rec, "scans", 3) as advance:
        advance(scan="a")
        raise RuntimeError("boom")
    assert rec.events == [("start", "scans", 3), ("advance", "scans", 1, {"scan": "a"}), ("finish", "scans")]


def test_as_progress():
    assert isinstance(as_progress(None), NullProgress) and isinstance(as_progress(False), NullProgress)
    rec = RecordingProgress()
    assert as_progress(rec) is rec and isinstance(rec, Progress)
    with pytest.raises(TypeError, match="RichProgress"):
        as_progress(True)


def test_rich_progress_stops_once_no_task_runs():
    bar = RichProgress(quiet=True)
    bar.start("epochs", 2)
    bar.start("batches", 4)
    bar.advance("batches", 2)
    bar.start("batches", 4)  # restart for the next epoch
    bar.advance("epochs", 1, loss=0.25)
    bar.finish("batches")
    assert bar._bar is not None
    bar.finish("epochs")
    assert bar._bar is None
    bar.finish("never started")  # harmless
    # Which one progress_bar gives depends on whether stderr is a terminal (tests/cli/test_log_progress.py).
    assert progress_bar(True) is None and isinstance(progress_bar(False), (RichProgress, LogProgress))


def test_format_info():
    text = format_info({"loss": 0.31249, "val_f1": 0.8, "scan": "...abc"})
    assert text == "loss 0.312  val f1 0.800  scan ...abc"
