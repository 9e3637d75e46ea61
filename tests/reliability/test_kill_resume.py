"""kill -9 in the middle of `train` and `search`, then --resume: the same records as an uninterrupted run.

Same seed, CPU, 1 thread. After the kill, every file left in the folder is either absent or complete (atomic
writes; a torn last JSONL line is ignored), and the lock the killed process held is taken over.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from naslung.atomic import read_jsonl
from naslung.search import records as rec
from naslung.train.checkpoint import load_checkpoint

from .runtime_support import SEARCH_FAST, TRAIN_FAST, cli, kill9, spawn, wait_for, write_tiny

TIMING = {"seconds", "wall_s", "train_seconds", "started", "finished", "latency_ms", "front_changed",
          "latency_device", "latency_threads"}


def _no_half_files(folder: Path) -> None:
    for path in folder.rglob("*.json"):
        json.loads(path.read_text())  # atomic: complete or absent
    for path in folder.rglob("*.pt"):
        load_checkpoint(path)
    for path in folder.rglob("*.jsonl"):
        read_jsonl(path)


def _strip(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny(tmp_path_factory.mktemp("kill") / "d.h5")


@pytest.mark.slow
def test_train_killed_then_resumed_equals_uninterrupted(data: Path, tmp_path: Path) -> None:
    args = ["train", "--data", data, "--fold", 1, *TRAIN_FAST, "--epochs", "6", "--json"]
    killed = tmp_path / "killed"
    proc = spawn(*args[:-1], "--out", killed)
    try:
        # kill -9 once an epoch is logged (between or inside later epochs' writes)
        assert wait_for(lambda: len(read_jsonl(killed / "epochs.jsonl")) >= 1, proc), proc.stderr.read()
    finally:
        kill9(proc)
    assert not (killed / "result.json").exists(), "the run finished before the kill: nothing was tested"
    _no_half_files(killed)
    resumed = cli(*args, "--out", killed, "--resume")
    assert resumed.exit_code == 0, resumed.output
    whole = cli(*args, "--out", tmp_path / "whole")
    assert whole.exit_code == 0, whole.output
    a, b = json.loads(resumed.stdout), json.loads(whole.stdout)
    for key in ("epoch", "epochs", "val_metrics", "test_metrics", "split", "params"):
        assert a[key] == b[key], key
    logged = _strip(read_jsonl(killed / "epochs.jsonl"))
    assert logged == _strip(read_jsonl(tmp_path / "whole" / "epochs.jsonl"))
    pred = json.loads((killed / "predictions.json").read_text())
    assert pred == json.loads((tmp_path / "whole" / "predictions.json").read_text())


@pytest.mark.slow
def test_search_killed_then_resumed_equals_uninterrupted(data: Path, tmp_path: Path) -> None:
    args = ["search", "--data", data, *SEARCH_FAST, "--budget-trials", "4", "--json"]
    killed = tmp_path / "killed"
    proc = spawn(*args[:-1], "--out", killed)
    try:
        assert wait_for(lambda: len(rec.read_trials(killed)) >= 1, proc), proc.stderr.read()
    finally:
        kill9(proc)
    assert len(rec.read_trials(killed)) < 4, "the search finished before the kill: nothing was tested"
    _no_half_files(killed)
    resumed = cli(*args, "--out", killed, "--resume")
    assert resumed.exit_code == 0, resumed.output
    # the uninterrupted search uses the latency model the first one cached (same predictions, same pruning)
    whole = cli(*args, "--out", tmp_path / "whole")
    assert whole.exit_code == 0, whole.output
    got, want = rec.read_trials(killed), rec.read_trials(tmp_path / "whole")
    assert len(got) == 4 and all(r["status"] == "ok" for r in got)
    assert _strip(got) == _strip(want)
