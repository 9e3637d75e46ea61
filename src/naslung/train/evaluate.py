"""Metrics of finished runs, recomputed from their saved per-nodule predictions (no re-inference)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from naslung.atomic import read_json
from naslung.train.predictions import read_predictions


def run_dirs(path: str | Path) -> list[Path]:
    """The finished run folders in ``path``: itself, or its ``fold_<K>`` children (a cv folder)."""
    path = Path(path)
    if (path / "result.json").exists():
        return [path]
    found = sorted((p.parent for p in path.glob("fold_*/result.json")),
                   key=lambda p: int(p.name.split("_", 1)[1]) if p.name.split("_", 1)[1].isdigit() else 0)
    if not found:
        raise FileNotFoundError(f"{path}: no finished run (result.json) here or in fold_*/")
    return found


def evaluate_run(run_dir: str | Path) -> dict[str, Any]:
    """``{"run", "spec", "test_fold", "epoch", "val", "test"}`` for one finished run folder."""
    run_dir = Path(run_dir)
    result = read_json(run_dir / "result.json", "training result")
    if not isinstance(result, dict) or result.get("schema") != "naslung-train-result":
        raise ValueError(f"{run_dir / 'result.json'}: not a naslung training result")
    test = read_predictions(run_dir, "test").metrics() if result.get("test_fold") is not None else None
    return {"run": str(run_dir), "spec": result.get("spec"), "test_fold": result.get("test_fold"),
            "epoch": result.get("epoch"), "params": result.get("params"),
            "val": read_predictions(run_dir, "val").metrics(), "test": test}


def evaluate_runs(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """:func:`evaluate_run` for every run folder in ``paths`` (cv folders expand to their folds)."""
    return [evaluate_run(d) for p in paths for d in run_dirs(p)]
