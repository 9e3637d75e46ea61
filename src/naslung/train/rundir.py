"""The training run folder and the cv folder: the one owner of their file names and layout.

A **run folder** (``naslung train --out``; one :func:`naslung.train.engine.fit`) holds::

    config.json        resolved TrainConfig, split sizes and validation ids, dataset fingerprint, provenance
    epochs.jsonl       one record per finished epoch (train loss, validation metrics, lambda, lr, seconds)
    last.pt            the resumable state after the last finished epoch
    best.pt            the weights of the epoch chosen on the inner validation split
    predictions.csv    per-nodule probabilities of the chosen weights (val, and test when there is one)
    predictions.json   the same, as JSON
    result.json        written last: its presence means "finished"

A **cv folder** (``naslung cv --out``) holds one run folder per test fold, ``fold_<K>/`` (with the
baselines of that fold's split in ``fold_<K>/baselines.json``), then ``cv.json`` and ``cv.csv``.

Everything that reads or writes these names goes through :class:`RunDir` and :class:`CVDir`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from naslung import schemas

FOLD_DIR = re.compile(r"^fold_(\d+)$")


@dataclass(frozen=True)
class RunDir:
    """Paths and state of one training run folder."""

    path: Path

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def epochs_log(self) -> Path:
        return self.path / "epochs.jsonl"

    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    @property
    def best(self) -> Path:
        return self.path / "best.pt"

    @property
    def predictions_csv(self) -> Path:
        return self.path / "predictions.csv"

    @property
    def predictions_json(self) -> Path:
        return self.path / "predictions.json"

    @property
    def result(self) -> Path:
        return self.path / "result.json"

    @property
    def baselines(self) -> Path:
        return self.path / "baselines.json"

    @property
    def lock(self) -> Path:
        return self.path / ".lock"

    def finished(self) -> bool:
        """``result.json`` is written last, so its presence means the run finished."""
        return self.result.is_file()

    def started(self) -> bool:
        """A checkpoint or a result exists: a fresh run here would overwrite work."""
        return self.last.is_file() or self.result.is_file()

    def state(self) -> str:
        """``"new"``, ``"partial"`` (resumable from ``last.pt``) or ``"finished"``."""
        if self.finished():
            return "finished"
        return "partial" if self.last.is_file() else "new"

    def read_result(self) -> dict[str, Any]:
        """``result.json`` as a dict, schema-checked; errors name the file."""
        from naslung.atomic import read_json

        data = read_json(self.result, "training result")
        if not isinstance(data, dict) or data.get("schema") != schemas.TRAIN_RESULT:
            raise ValueError(f"{self.result}: not a naslung training result")
        return data

    def read_config(self) -> dict[str, Any]:
        """``config.json`` as a dict, schema-checked; errors name the file."""
        from naslung.atomic import read_json

        if not self.config.is_file():
            raise FileNotFoundError(f"{self.config}: not found; is {self.path} a naslung run folder?")
        data = read_json(self.config, "training config")
        if not isinstance(data, dict) or data.get("schema") != schemas.TRAIN_CONFIG:
            raise ValueError(f"{self.config}: not a naslung training config")
        return data


@dataclass(frozen=True)
class CVDir:
    """Paths of a cv folder: ``fold_<K>/`` run folders plus the summaries."""

    path: Path

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    @property
    def summary_json(self) -> Path:
        return self.path / "cv.json"

    @property
    def summary_csv(self) -> Path:
        return self.path / "cv.csv"

    @property
    def lock(self) -> Path:
        return self.path / ".lock"

    def run(self, fold: int) -> RunDir:
        """The run folder of test fold ``fold``."""
        return RunDir(self.path / f"fold_{int(fold)}")

    def folds(self, finished_only: bool = False) -> list[int]:
        """Test folds that have a run folder here (only finished ones with ``finished_only``), sorted."""
        if not self.path.is_dir():
            return []
        out = []
        for child in self.path.iterdir():
            fold = parse_fold_dir(child.name)
            if fold is not None and child.is_dir() and (not finished_only or RunDir(child).finished()):
                out.append(fold)
        return sorted(out)

    def runs(self, finished_only: bool = True) -> list[RunDir]:
        return [self.run(k) for k in self.folds(finished_only)]


def parse_fold_dir(name: str) -> int | None:
    """``"fold_3"`` -> 3; anything else -> None."""
    match = FOLD_DIR.match(name)
    return int(match.group(1)) if match else None


def finished_runs(path: str | Path) -> list[RunDir]:
    """The finished runs in ``path``: the run itself, or the finished folds of a cv folder (by fold).

    Raises ``FileNotFoundError`` naming ``path`` when there is none.
    """
    run = RunDir(path)
    if run.finished():
        return [run]
    found = CVDir(path).runs(finished_only=True)
    if not found:
        raise FileNotFoundError(f"{path}: no finished run (result.json) here or in fold_*/")
    return found


def runs_under(root: str | Path) -> list[RunDir]:
    """Every finished run in or under ``root`` (``root`` itself included, at any depth), sorted by path.

    ``[]`` when there is none, or when ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    result_name = RunDir(root).result.name
    return [RunDir(p) for p in sorted({f.parent for f in root.rglob(result_name) if f.is_file()})]


def run_for_fold(path: str | Path, fold: int | None) -> RunDir:
    """The finished run of ``fold`` in ``path``: the run itself, or ``path/fold_<K>`` of a cv folder."""
    run = RunDir(path)
    if run.finished():
        return run
    if fold is not None and CVDir(path).run(fold).finished():
        return CVDir(path).run(fold)
    where = f" (nor {CVDir(path).run(fold).path})" if fold is not None else ""
    raise FileNotFoundError(f"{path}: no finished run here{where}; expected result.json")
