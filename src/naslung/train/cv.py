"""Cross-validation over test folds (paper section 4.1.1: mean over test folds 1-5).

Each test fold is one :func:`fit` run in its own run folder (layout: :class:`~naslung.train.rundir.CVDir`;
resumable, finished folds are read back), and the non-deep baselines are fitted on that fold's inner
training split and tested on the same fold. ``OUT/cv.json`` and ``OUT/cv.csv`` hold per-fold rows and a
mean +- std summary per method.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from naslung import schemas
from naslung.atomic import write_json_atomic, write_text_atomic
from naslung.data.dataset import NoduleDataset
from naslung.options import check_folds
from naslung.progress import Progress
from naslung.train.baselines import BASELINES, fit_baseline
from naslung.train.config import TrainConfig
from naslung.train.engine import data_split, fit
from naslung.train.init import WeightInit, check_init, init_record
from naslung.train.result import TrainResult
from naslung.train.rundir import CVDir

SUMMARY_METRICS = ("accuracy", "sensitivity", "specificity", "f1", "auc")
CNN = "cnn"


@dataclass
class CVResult:
    """Per-fold rows (one per method and fold) and the per-method summary."""

    folds: list[int]
    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    results: list[TrainResult]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"schema": schemas.CV, "schema_version": 1, "folds": self.folds, "per_fold": self.rows,
                "summary": self.summary, "seconds": self.seconds,
                "std": "sample standard deviation over folds (ddof=1); NaN folds are skipped"}


def run_cv(
    dataset: NoduleDataset,
    config: TrainConfig,
    folds: Sequence[int],
    out_dir: str | Path,
    *,
    baselines: Sequence[str] = BASELINES,
    progress: Progress | None = None,
    source: str | None = None,
    jobs: int = 1,
    init: WeightInit | None = None,
) -> CVResult:
    """Train and test ``config`` on every fold in ``folds``; baselines on the same splits beside it.

    Everything that can be checked is checked before the first fold trains (:func:`validate_cv`); the cv
    folder is locked against a second writer and refuses a dataset other than the one it was made with.
    ``jobs > 1`` trains that many folds at once, single-threaded, in spawned processes that load the dataset
    from ``source`` (:mod:`naslung.train.parallel`); the numbers equal a ``jobs=1`` run with one thread.
    ``init``: trained weights every fold starts from (:mod:`naslung.train.init`); a test fold they were
    trained on is refused before anything trains.
    """
    from naslung.fingerprint import fingerprint_of
    from naslung.lock import output_lock

    out = Path(out_dir)
    validate_cv(dataset, config, folds, tuple(baselines))
    check_init(init, config, dataset, folds, source)
    fingerprint = fingerprint_of(dataset)
    with output_lock(out, "naslung cv"):
        _check_cv_dataset(out, fingerprint)
        if jobs > 1:
            from naslung.train.parallel import fit_side_by_side

            fit_side_by_side(source or "", [(config, int(f), CVDir(out).run(f).path) for f in folds], jobs,
                             progress, init=init)
        return _run_cv(dataset, config, list(folds), out, tuple(baselines), progress, source, fingerprint,
                       init)


def validate_cv(dataset: NoduleDataset, config: TrainConfig, folds: Sequence[int],
                baselines: Sequence[str] = BASELINES) -> None:
    """Raise ``ValueError`` for folds outside 0-9 or absent from the data, and for a fold whose training or
    validation split would hold a single class (nothing could be learned or selected there)."""
    folds = list(folds)
    if not folds:
        raise ValueError("--folds: no test fold given")
    check_folds(folds, "--folds: folds")
    present = sorted({int(f) for f in np.asarray(dataset.fold).tolist()})
    missing = sorted({int(f) for f in folds} - set(present))
    if missing:
        raise ValueError(f"--folds: folds {missing} hold no nodule in this dataset (present: {present})")
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; valid: {', '.join(BASELINES)}")
    labels = np.asarray(dataset.labels)
    for fold in folds:
        try:
            split = data_split(dataset, config, int(fold))
        except ValueError as exc:
            raise ValueError(f"test fold {fold}: {exc}") from None
        for name, rows in (("training", split.train), ("validation", split.val)):
            classes = sorted({int(c) for c in labels[rows].tolist()})
            if len(classes) < 2:
                raise ValueError(
                    f"test fold {fold}: the inner {name} split ({rows.size} nodules) holds only class "
                    f"{classes}; the dataset ({len(dataset)} nodules) is too small for cross-validation")


def _check_cv_dataset(out: Path, fingerprint: str) -> None:
    """Refuse a cv folder (its ``cv.json`` or any fold run) that was made with another dataset."""
    import json

    from naslung.fingerprint import check_same
    from naslung.train.guards import recorded_fingerprint

    cv_json = CVDir(out).summary_json
    if cv_json.exists():
        try:
            saved = (json.loads(cv_json.read_text(encoding="utf-8")).get("dataset") or {}).get("fingerprint")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            raise ValueError(f"{cv_json}: not valid cv JSON; the cv folder is damaged") from None
        check_same(saved, fingerprint, out, "add folds")
    for run in CVDir(out).runs(finished_only=False):
        check_same(recorded_fingerprint(run.path), fingerprint, out, "add folds")


def _run_cv(dataset: NoduleDataset, config: TrainConfig, folds: list[int], out: Path,
            baselines: tuple[str, ...], progress: Progress | None, source: str | None,
            fingerprint: str, init: WeightInit | None = None) -> CVResult:
    results, rows = [], []
    for fold in folds:
        result = fit(dataset, config, test_fold=fold, out_dir=CVDir(out).run(fold).path, resume=True,
                     progress=progress, source=source, init=init)
        results.append(result)
        rows.append({"method": CNN, "fold": fold, "epoch": result.epoch, "params": result.params,
                     "seconds": result.seconds, **_pick(result.test_metrics)})
        split = data_split(dataset, config, fold)
        fold_baselines = {}
        for name in baselines:
            base = fit_baseline(name, dataset, split, seed=config.seed)
            fold_baselines[name] = base.to_dict()
            rows.append({"method": name, "fold": fold, "epoch": None, "params": None, "seconds": None,
                         **_pick(base.test.metrics() if base.test is not None else None)})
        write_json_atomic(CVDir(out).run(fold).baselines, fold_baselines)
    methods = [CNN, *baselines]
    summary = [summarize([r for r in rows if r["method"] == m], m) for m in methods]
    result = CVResult(folds=list(folds), rows=rows, summary=summary, results=results,
                      seconds=float(sum(r.seconds for r in results)))
    write_json_atomic(CVDir(out).summary_json, {
        **result.to_dict(), "config": config.to_dict(), "init": init_record(init), "source": source,
        "dataset": {"source": source, "fingerprint": fingerprint}})
    write_text_atomic(CVDir(out).summary_csv, to_csv(rows, summary))
    return result


def summarize(rows: list[dict[str, Any]], method: str) -> dict[str, Any]:
    """Mean and sample std (ddof=1) of each metric over the fold rows of one method, NaN-skipping."""
    out: dict[str, Any] = {"method": method, "folds": len(rows)}
    for key in SUMMARY_METRICS:
        values = np.array([r[key] for r in rows], dtype=np.float64)
        values = values[np.isfinite(values)]
        out[f"{key}_mean"] = float(values.mean()) if values.size else math.nan
        out[f"{key}_std"] = float(values.std(ddof=1)) if values.size > 1 else math.nan
    params = [r["params"] for r in rows if r.get("params") is not None]
    out["params"] = int(params[0]) if params else None
    return out


def to_csv(rows: list[dict[str, Any]], summary: list[dict[str, Any]]) -> str:
    """Per-fold rows then ``mean`` and ``std`` rows per method."""
    cols = ["method", "fold", *SUMMARY_METRICS, "params", "epoch"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    for s in summary:
        for stat in ("mean", "std"):
            writer.writerow({"method": s["method"], "fold": stat, "params": s["params"],
                             **{k: s[f"{k}_{stat}"] for k in SUMMARY_METRICS}})
    return buf.getvalue()


def _pick(metrics: dict[str, Any] | None) -> dict[str, Any]:
    metrics = metrics or {}
    return {k: metrics.get(k, math.nan) for k in (*SUMMARY_METRICS, "tp", "fp", "tn", "fn", "n")}
