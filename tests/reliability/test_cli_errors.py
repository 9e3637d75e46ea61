"""Every error path of the CLI: exit 2, one line naming the file or option and the problem, no traceback.

One finished training run (module fixture) serves the probes that need run folders.
"""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from naslung import atomic

from .runtime_support import SEARCH_FAST, TRAIN_FAST, cli, error_line, write_tiny

#: A folder nobody may create anything in, even root (sysfs).
UNWRITABLE = Path("/sys/naslung-probe")
needs_unwritable = pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs Linux sysfs")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli-errors")
    data = write_tiny(root / "d.h5")
    run = root / "run"
    trained = cli("train", "--data", data, "--fold", 1, "--out", run, *TRAIN_FAST, "--epochs", "1")
    assert trained.exit_code == 0, trained.output
    return {"root": root, "data": data, "run": run, "small": write_tiny(root / "five.h5", n=5),
            "nolabels": write_tiny(root / "nolabels.h5", drop=("labels",))}


def _copy_run(base: dict[str, Path], tmp_path: Path, damage: Callable[[Path], None]) -> Path:
    run = tmp_path / "run"
    shutil.copytree(base["run"], run)
    damage(run)
    return run


def _truncate(name: str) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        text = (run / name).read_text()
        (run / name).write_text(text[: len(text) // 2])

    return damage


def _garbage(run: Path) -> None:
    (run / "result.json").write_text(json.dumps({"hello": "world"}))


# (probe id, arguments (placeholders filled from `base`), fragments the one line must hold)
PROBES: list[tuple[str, list[object], tuple[str, ...]]] = [
    ("train --threads 0", ["train", "--data", "DATA", "--threads", "0"], ("--threads", "positive")),
    ("train --threads -2", ["train", "--data", "DATA", "--threads", "-2"], ("--threads",)),
    ("cv --threads 0", ["cv", "--data", "DATA", "--threads", "0"], ("--threads",)),
    ("search --threads 0", ["search", "--data", "DATA", "--out", "TMP/s", *SEARCH_FAST, "--threads", "0"],
     ("threads",)),
    ("search --batch-size 0", ["search", "--data", "DATA", "--out", "TMP/s", *SEARCH_FAST,
                               "--batch-size", "0"], ("batch_size",)),
    ("search --exclude-folds 0-9", ["search", "--data", "DATA", "--out", "TMP/s", *SEARCH_FAST,
                                    "--exclude-folds", "0-9"], ("excluded folds",)),
    ("search without labels", ["search", "--data", "NOLABELS", "--out", "TMP/s", *SEARCH_FAST], ("labels",)),
    ("train without labels", ["train", "--data", "NOLABELS", "--fold", "1", "--out", "TMP/r"], ("labels",)),
    ("train --lr inf", ["train", "--data", "DATA", "--lr", "inf", "--out", "TMP/r"], ("lr",)),
    ("cv --folds 1-11", ["cv", "--data", "DATA", "--folds", "1-11", "--out", "TMP/cv", *TRAIN_FAST],
     ("--folds", "outside")),
    ("cv on 5 nodules", ["cv", "--data", "SMALL", "--folds", "0-2", "--out", "TMP/cv", *TRAIN_FAST],
     ("fold",)),
    ("train missing data", ["train", "--data", "TMP/none.h5"], ("--data", "not found")),
    ("train into a finished run", ["train", "--data", "DATA", "--fold", "1", "--out", "RUN", *TRAIN_FAST],
     ("--resume",)),
    ("demo --test-fold 0", ["demo", "--test-fold", "0", "--out", "TMP/demo"], ("test fold 0", "leak")),
    ("search select on nothing", ["search", "select", "--out", "TMP/nothing"], ("nothing",)),
    ("unknown option", ["train", "--data", "DATA", "--bogus"], ("--bogus",)),
]


@pytest.mark.parametrize(("args", "fragments"), [p[1:] for p in PROBES], ids=[p[0] for p in PROBES])
def test_probe(base: dict[str, Path], tmp_path: Path, args: list[object], fragments: tuple[str, ...]) -> None:
    subst = {"DATA": base["data"], "NOLABELS": base["nolabels"], "SMALL": base["small"], "RUN": base["run"]}
    argv = [str(subst.get(str(a), a)).replace("TMP/", f"{tmp_path}/") for a in args]
    line = error_line(cli(*argv))
    for fragment in fragments:
        assert fragment in line, line
    # late validation: nothing was trained or written before the error
    for name in ("cv", "demo", "s"):
        folder = tmp_path / name
        assert not folder.exists() or not any(folder.rglob("*.pt")), sorted(folder.rglob("*"))


@pytest.mark.parametrize(
    ("damage", "command", "fragment"),
    [
        (_truncate("result.json"), "ensemble", "result.json"),
        (_garbage, "ensemble", "result.json"),
        (_truncate("predictions.json"), "ensemble", "predictions.json"),
        (_truncate("result.json"), "evaluate", "result.json"),
        (_truncate("predictions.json"), "evaluate", "predictions.json"),
    ],
    ids=["ensemble-truncated-result", "ensemble-garbage-result", "ensemble-truncated-predictions",
         "evaluate-truncated-result", "evaluate-truncated-predictions"],
)
def test_damaged_run_files_are_named(base: dict[str, Path], tmp_path: Path, damage: Callable[[Path], None],
                                     command: str, fragment: str) -> None:
    run = _copy_run(base, tmp_path, damage)
    args = ["ensemble", "--runs", run, "--fold", "1"] if command == "ensemble" else ["evaluate", run]
    line = error_line(cli(*args))
    assert str(run / fragment) in line


@needs_unwritable
@pytest.mark.parametrize("command", ["train", "cv", "search", "preview", "cache"])
def test_unwritable_output(base: dict[str, Path], tmp_path: Path, command: str) -> None:
    out = UNWRITABLE / "out"
    args = {
        "train": ["train", "--data", base["data"], "--fold", 1, "--out", out, *TRAIN_FAST],
        "cv": ["cv", "--data", base["data"], "--folds", 1, "--out", out, *TRAIN_FAST],
        "search": ["search", "--data", base["data"], "--out", out, *SEARCH_FAST],
        "preview": ["data", "preview", base["data"], "--out", out / "p.png"],
        "cache": ["search", "--data", base["data"], "--out", tmp_path / "s", *SEARCH_FAST,
                  "--budget-trials", 1],
    }[command]
    env = {"NASLUNG_CACHE": str(UNWRITABLE / "cache")} if command == "cache" else None
    line = error_line(cli(*args, env=env))
    assert "permission denied" in line and str(UNWRITABLE) in line


def test_disk_full_while_writing_a_checkpoint(base: dict[str, Path], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.save's C++ writer loses the errno ("iostream error"); on a full disk the file is still named."""
    import torch

    def full(*_a: object, **_k: object) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . basic_ios::clear: iostream error")

    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda _p: shutil._ntuple_diskusage(10, 10, 0))
    out = tmp_path / "run"
    line = error_line(cli("train", "--data", base["data"], "--fold", 1, "--out", out, *TRAIN_FAST))
    assert "no space left on device" in line and str(out) in line and ".pt" in line
    assert not list(out.glob(".*.tmp"))  # the temporary is gone, nothing half-written stays


def test_disk_full_in_a_plain_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "x.json"
    target.write_text("old")

    def no_space(self: Path, *_a: object, **_k: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", no_space)
    with pytest.raises(OSError, match="No space left") as info:
        atomic.write_json_atomic(target, {"a": 1})
    assert info.value.filename == str(target) and info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.json"]


@pytest.mark.slow
def test_real_disk_full(base: dict[str, Path], tmp_path: Path) -> None:
    """A 96 KiB tmpfs in a private mount namespace: train runs out of space for real."""
    unshare = shutil.which("unshare")
    mnt = tmp_path / "small"
    mnt.mkdir()
    mount = f"mount -t tmpfs -o size=96k none {mnt}"
    probe = subprocess.run([unshare or "unshare", "-rm", "sh", "-c", mount], capture_output=True)
    if unshare is None or probe.returncode != 0:
        pytest.skip("needs unshare and a private tmpfs mount")
    code = (f"{mount} && exec {sys.executable} -m naslung train --data "
            f"{base['data']} --fold 1 --out {mnt}/run " + " ".join(TRAIN_FAST))
    proc = subprocess.run([unshare, "-rm", "sh", "-c", code], capture_output=True, text=True, timeout=120)
    # stderr is a pipe here, so progress comes as plain log lines; the error itself is one line.
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and "no space left on device" in lines[0] and str(mnt) in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
