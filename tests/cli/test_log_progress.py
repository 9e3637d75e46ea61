"""Progress in a log: plain lines when stderr is not a terminal (issue 25, "It works in silence")."""

from __future__ import annotations

import io

from naslung.cli.progress import LogProgress, RichProgress, progress_bar


def test_log_progress_writes_a_line_per_quarter_and_the_end() -> None:
    stream = io.StringIO()
    with LogProgress(stream, interval_s=1e9, min_s=0.0) as progress:
        progress.start("prepare", 8)
        for _ in range(8):
            progress.advance("prepare", loss=0.5)
        progress.finish("prepare")
    lines = stream.getvalue().splitlines()
    assert [line.split()[1] for line in lines[:-1]] == ["2/8", "4/8", "6/8"]
    assert "loss 0.500" in lines[0]
    assert lines[-1].startswith("prepare: done, 8 in")


def test_unknown_total_reports_on_the_interval() -> None:
    stream = io.StringIO()
    progress = LogProgress(stream, interval_s=0.0, min_s=0.0)
    progress.advance("labels")  # a task never started is started with no total
    progress.advance("labels")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and all(line.startswith("labels: ") for line in lines)


def test_progress_bar_picks_by_the_stream(monkeypatch) -> None:
    assert progress_bar(True) is None

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.__stderr__", io.StringIO())
    assert isinstance(progress_bar(False), LogProgress)
    monkeypatch.setattr("sys.__stderr__", Tty())
    assert isinstance(progress_bar(False), RichProgress)


def test_a_short_task_writes_nothing() -> None:
    stream = io.StringIO()
    progress = LogProgress(stream, min_s=60.0)
    progress.start("batches", 4)
    for _ in range(4):
        progress.advance("batches")
    progress.finish("batches")
    assert stream.getvalue() == ""
