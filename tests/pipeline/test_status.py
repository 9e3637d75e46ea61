"""The status file (stage keys, atomic rewrites) and the remaining-time estimates."""

from __future__ import annotations

import json
import math

import pytest

from naslung.pipeline import estimate as est
from naslung.pipeline.status import StatusFile, stage_key


def test_stage_keys_chain_so_a_changed_input_changes_every_later_key():
    first = stage_key({"trials": 2})
    later = stage_key({"members": 3}, first)
    assert stage_key({"trials": 2}) == first
    assert stage_key({"members": 3}, stage_key({"trials": 3})) != later
    assert stage_key({"members": 4}, first) != later


def test_a_stage_is_done_only_with_the_same_key(tmp_path):
    path = tmp_path / "reproduce.json"
    status = StatusFile(path, {"data": "d.h5"})
    status.start("search", "k1")
    assert json.loads(path.read_text())["stages"]["search"]["status"] == "running"
    status.finish("search", "k1", {"trials": 2})
    again = StatusFile(path, {"data": "d.h5"})
    assert again.done("search", "k1") and not again.done("search", "k2") and not again.done("train", "k1")
    assert again.result("search") == {"trials": 2} and again.seconds("search") >= 0
    assert again.saved_job == {"data": "d.h5"}


def test_a_foreign_status_file_is_refused(tmp_path):
    path = tmp_path / "reproduce.json"
    path.write_text(json.dumps({"schema": "something-else"}))
    with pytest.raises(ValueError, match="reproduce.json: not a naslung status file"):
        StatusFile(path, {})


@pytest.mark.parametrize(("work", "text"), [
    (est.Work(left=3, unit="epoch", unit_seconds=None), "unknown"),
    (est.Work(left=0, unit="epoch", unit_seconds=None), "nothing left"),
    (est.Work(left=4, unit="epoch", unit_seconds=10.0, source="member epochs"),
     "~40 s (4 epochs x 10.0 s, measured on member epochs)"),
    (est.Work(left=100, unit="epoch", unit_seconds=60.0, source="x", upper_bound=True),
     "at most 1.7 h (100 epochs x 60.0 s, measured on x)"),
    (est.Work(left=math.inf, unit="trial", unit_seconds=5.0, cap_seconds=8 * 3600),
     "at most 8.0 h (time budget)"),
    (est.Work(left=math.inf, unit="trial", unit_seconds=5.0), "unknown"),
])
def test_work_describes_the_time_left(work, text):
    assert work.describe() == text


def test_epochs_left_counts_finished_runs_as_done(tmp_path):
    finished, partial, missing = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for run, n in ((finished, 2), (partial, 1)):
        run.mkdir()
        (run / "epochs.jsonl").write_text("".join(json.dumps({"epoch": k, "seconds": 3.0}) + "\n"
                                                  for k in range(n)))
    (finished / "result.json").write_text("{}")  # stopped early after 2 of 5 epochs
    left, seconds = est.epochs_left([finished, partial, missing], planned=5)
    assert left == 0 + 4 + 5 and seconds == [3.0, 3.0, 3.0]
