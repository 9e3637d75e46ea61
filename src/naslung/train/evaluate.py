"""Metrics of finished runs, recomputed from their saved per-nodule predictions (no re-inference)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from naslung.train.predictions import read_predictions
from naslung.train.rundir import RunDir, finished_runs


def run_dirs(path: str | Path) -> list[Path]:
    """The finished run folders in ``path``: itself, or the finished folds of a cv folder, by fold."""
    return [run.path for run in finished_runs(path)]


def evaluate_run(run_dir: str | Path) -> dict[str, Any]:
    """``{"run", "spec", "test_fold", "epoch", "val", "test"}`` for one finished run folder."""
    run_dir = Path(run_dir)
    result = RunDir(run_dir).read_result()
    test = read_predictions(run_dir, "test").metrics() if result.get("test_fold") is not None else None
    return {"run": str(run_dir), "spec": result.get("spec"), "test_fold": result.get("test_fold"),
            "epoch": result.get("epoch"), "params": result.get("params"),
            "val": read_predictions(run_dir, "val").metrics(), "test": test}


def evaluate_runs(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """:func:`evaluate_run` for every run folder in ``paths`` (cv folders expand to their folds)."""
    return [evaluate_run(d) for p in paths for d in run_dirs(p)]
