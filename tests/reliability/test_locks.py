"""One writer per output: the lock names its holder, refuses a second writer; a stale one is taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from naslung.lock import LOCK_NAME, LockError, output_lock, pid_alive, read_lock

from .runtime_support import SEARCH_FAST, TRAIN_FAST, cli, error_line, kill9, spawn, wait_for, write_tiny


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _fake_lock(folder: Path, pid: int, host: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(),
                                                "what": "naslung train", "since": "then"}))


def test_lock_names_holder_and_is_released(tmp_path: Path) -> None:
    with output_lock(tmp_path, "first") as info:
        held = read_lock(tmp_path / LOCK_NAME)
        assert held is not None and held["pid"] == os.getpid() and held["host"] == socket.gethostname()
        assert info["token"] == held["token"]
        with output_lock(tmp_path):  # re-entrant within one process
            pass
        assert (tmp_path / LOCK_NAME).exists()
    assert not (tmp_path / LOCK_NAME).exists()


def test_live_holder_refused_stale_taken_over(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _fake_lock(tmp_path / "live", sleeper.pid)
        with pytest.raises(LockError, match=f"pid {sleeper.pid} on {socket.gethostname()}"), \
                output_lock(tmp_path / "live"):
            pass
    finally:
        kill9(sleeper)  # type: ignore[arg-type]
    assert not pid_alive(sleeper.pid)
    _fake_lock(tmp_path / "other-host", os.getpid(), host="elsewhere.example")
    with pytest.raises(LockError, match="elsewhere.example"), output_lock(tmp_path / "other-host"):
        pass
    warnings: list[str] = []
    _fake_lock(tmp_path / "stale", _dead_pid())
    with output_lock(tmp_path / "stale", on_warning=warnings.append):
        assert read_lock(tmp_path / "stale" / LOCK_NAME)["pid"] == os.getpid()
    assert len(warnings) == 1 and "stale lock" in warnings[0]


@pytest.mark.parametrize("command", ["train", "cv", "search"])
def test_second_writer_refused_by_the_cli(tmp_path: Path, command: str) -> None:
    data = write_tiny(tmp_path / "d.h5")
    out = tmp_path / "out"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _fake_lock(out, sleeper.pid)  # another live writer holds the folder
        args = {"train": ["train", "--data", data, "--fold", 1, "--out", out, *TRAIN_FAST],
                "cv": ["cv", "--data", data, "--folds", "1", "--out", out, *TRAIN_FAST],
                "search": ["search", "--data", data, "--out", out, "--budget-trials", "1", *SEARCH_FAST]}
        line = error_line(cli(*args[command]))
    finally:
        kill9(sleeper)  # type: ignore[arg-type]
    assert f"in use by pid {sleeper.pid}" in line and socket.gethostname() in line
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing written beside the lock


@pytest.mark.slow
def test_two_train_processes_on_one_out(tmp_path: Path) -> None:
    """A real second process: refused while the first trains; after the first is killed, resume warns."""
    from naslung.train.checkpoint import load_checkpoint

    data = write_tiny(tmp_path / "d.h5")
    out = tmp_path / "run"
    args = ["train", "--data", data, "--fold", 1, "--out", out, *TRAIN_FAST, "--loss", "softmax"]
    first = spawn(*args, "--epochs", "200")
    try:
        assert wait_for(lambda: (out / "last.pt").exists(), first), first.stderr.read().decode()
        line = error_line(cli(*args, "--resume"))
        assert f"pid {first.pid}" in line
    finally:
        kill9(first)
    done = int(load_checkpoint(out / "last.pt")["epoch"])
    resumed = cli(*args, "--resume", "--epochs", done + 1, "--json")
    assert resumed.exit_code == 0, resumed.output
    assert "stale lock" in resumed.stderr and f"pid {first.pid}" in resumed.stderr
    assert json.loads((out / "result.json").read_text())["epochs"] == done + 1
    assert not (out / LOCK_NAME).exists()


#: (id, bytes of a damaged lock file): none names a holder that could be checked.
GARBAGE_LOCKS = [
    ("binary", b"\xff\xfe\x00garbage\x9c"),
    ("not-json", b"locked by me\n"),
    ("json-list", b"[1, 2]\n"),
    ("pid-not-int", b'{"pid": "abc", "host": "h"}\n'),
    ("empty", b""),
]


@pytest.mark.parametrize("command", ["train", "prepare"])
@pytest.mark.parametrize("content", [g[1] for g in GARBAGE_LOCKS], ids=[g[0] for g in GARBAGE_LOCKS])
def test_garbage_lock_is_named(tmp_path: Path, command: str, content: bytes) -> None:
    """A lock file holding garbage: one line naming the lock file and what to do; nothing else touched."""
    data = write_tiny(tmp_path / "d.h5")
    if command == "train":
        out = tmp_path / "run"
        out.mkdir()
        lock = out / LOCK_NAME
        args = ["train", "--data", data, "--fold", 1, "--out", out, *TRAIN_FAST]
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
        from luna_synth import make_tree

        tree = make_tree(tmp_path / "luna")
        out = tmp_path / "crops.h5"
        lock = tmp_path / f".{out.name}.lock"
        args = ["data", "prepare", "--luna", tree.root, "--out", out, "--size", 8, "--margin", 1]
    lock.write_bytes(content)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    line = error_line(cli(*args))
    assert str(lock) in line and "unreadable" in line and "delete it" in line, line
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
