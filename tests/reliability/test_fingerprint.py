"""Dataset content fingerprints: stable, content-sensitive, cached; resume/mix against other data refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from naslung import fingerprint as fp
from naslung.fingerprint import (
    DatasetMismatchError,
    check_same,
    file_fingerprint,
    fingerprint_of,
    load_dataset,
)

from .runtime_support import TRAIN_FAST, cli, error_line, write_tiny


def test_same_content_same_fingerprint_other_content_differs(tmp_path: Path) -> None:
    a = file_fingerprint(write_tiny(tmp_path / "a.h5"))
    b = file_fingerprint(write_tiny(tmp_path / "b.h5"))  # same arrays, another file (and date)
    c = file_fingerprint(write_tiny(tmp_path / "c.h5", seed=1))
    w = file_fingerprint(write_tiny(tmp_path / "w.h5", window=(-1200.0, 600.0)))
    assert a == b and a.startswith(fp.PREFIX)
    assert len({a, c, w}) == 3


def test_cached_by_path_size_and_mtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_tiny(tmp_path / "d.h5")
    first = file_fingerprint(path)
    calls: list[Path] = []
    monkeypatch.setattr(fp, "_hash_file", lambda p: calls.append(p) or "blake2b:new")
    fp._MEMO.clear()
    assert file_fingerprint(path) == first and not calls  # from the on-disk cache
    write_tiny(path, seed=3)  # replaced in place: new size/mtime
    os.utime(path, ns=(1, 1))
    assert file_fingerprint(path) == "blake2b:new" and calls == [path]


def test_loaded_dataset_carries_its_file_fingerprint(tmp_path: Path) -> None:
    path = write_tiny(tmp_path / "e.h5")
    ds = load_dataset(path)
    assert fingerprint_of(ds) == file_fingerprint(path)
    sub = ds.subset([0, 1, 2])
    assert fingerprint_of(sub).startswith(fp.MEMORY_PREFIX)  # a subset is other data
    with pytest.raises(DatasetMismatchError, match="another dataset"):
        check_same("blake2b:aaa", "blake2b:bbb", tmp_path)
    check_same(None, "blake2b:bbb", tmp_path)  # folders from before fingerprints pass


def test_train_resume_and_cv_refuse_other_data(tmp_path: Path) -> None:
    one, two = write_tiny(tmp_path / "one.h5"), write_tiny(tmp_path / "two.h5", seed=5)
    run = tmp_path / "run"
    assert cli("train", "--data", one, "--fold", 1, "--out", run, *TRAIN_FAST, "--epochs", "1").exit_code == 0
    recorded = json.loads((run / "config.json").read_text())["dataset"]["fingerprint"]
    assert recorded == file_fingerprint(one)
    before = (run / "epochs.jsonl").read_bytes()
    line = error_line(cli("train", "--data", two, "--fold", 1, "--out", run, *TRAIN_FAST, "--resume"))
    assert "another dataset" in line and str(run) in line
    assert (run / "epochs.jsonl").read_bytes() == before  # nothing trained on the other data
    # cv into a folder made with other data: refused before any fold trains
    cv_dir = tmp_path / "cv"
    (cv_dir / "fold_1").mkdir(parents=True)
    (cv_dir / "fold_1" / "config.json").write_text(json.dumps({"schema": "naslung-train-config",
                                                                    "dataset": {"fingerprint": recorded}}))
    line = error_line(cli("cv", "--data", two, "--folds", "1,2", "--out", cv_dir, *TRAIN_FAST))
    assert "another dataset" in line
    assert not (cv_dir / "fold_2").exists()
