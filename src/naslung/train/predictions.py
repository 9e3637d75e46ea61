"""Per-nodule predictions of a run: the artefact that evaluation and ensembles read back.

``predictions.csv`` (and the same rows in ``predictions.json``) has one row per nodule of the validation and
test splits with the columns ``split, nodule_id, seriesuid, fold, label, prob_malignant, pred``.
``pred`` is ``prob_malignant >= 0.5`` (the paper's threshold, section 3.5).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from naslung.atomic import read_json, write_json_atomic, write_text_atomic
from naslung.train.rundir import RunDir

COLUMNS = ("split", "nodule_id", "seriesuid", "fold", "label", "prob_malignant", "pred")
THRESHOLD = 0.5


@dataclass
class Predictions:
    """Predictions of one model on one split; arrays of length N, aligned."""

    nodule_id: np.ndarray
    seriesuid: np.ndarray
    fold: np.ndarray
    label: np.ndarray
    prob: np.ndarray

    @property
    def pred(self) -> np.ndarray:
        return (self.prob >= THRESHOLD).astype(np.int64)

    def __len__(self) -> int:
        return int(self.label.size)

    def metrics(self) -> dict[str, Any]:
        from naslung.metrics import binary_metrics

        return binary_metrics(self.label, self.pred, self.prob)

    def records(self, split: str) -> list[dict[str, Any]]:
        return [
            {"split": split, "nodule_id": str(n), "seriesuid": str(s), "fold": int(f), "label": int(y),
             "prob_malignant": float(p), "pred": int(p >= THRESHOLD)}
            for n, s, f, y, p in zip(self.nodule_id, self.seriesuid, self.fold, self.label, self.prob,
                                     strict=True)
        ]

    @classmethod
    def from_records(cls, rows: list[dict[str, Any]]) -> Predictions:
        return cls(
            nodule_id=np.array([str(r["nodule_id"]) for r in rows], dtype=str),
            seriesuid=np.array([str(r["seriesuid"]) for r in rows], dtype=str),
            fold=np.array([int(r["fold"]) for r in rows], dtype=np.int64),
            label=np.array([int(r["label"]) for r in rows], dtype=np.int64),
            prob=np.array([float(r["prob_malignant"]) for r in rows], dtype=np.float64),
        )


def write_predictions(run_dir: str | Path, splits: dict[str, Predictions | None]) -> None:
    """Write ``predictions.csv`` and ``predictions.json`` (``{"val": [...], "test": [...]}``) atomically."""
    run_dir = Path(run_dir)
    rows = {name: p.records(name) for name, p in splits.items() if p is not None}
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for name_rows in rows.values():
        for row in name_rows:
            writer.writerow({**row, "prob_malignant": repr(row["prob_malignant"])})
    run = RunDir(run_dir)
    write_text_atomic(run.predictions_csv, buf.getvalue())
    write_json_atomic(run.predictions_json, rows)


def read_predictions(run_dir: str | Path, split: str = "test") -> Predictions:
    """Read one split back from ``predictions.json`` (else ``predictions.csv``) of a finished run."""
    run_dir = Path(run_dir)
    run = RunDir(run_dir)
    if run.predictions_json.exists():
        data = read_json(run.predictions_json, "predictions file")
        if not isinstance(data, dict) or not isinstance(data.get(split, []), list):
            raise ValueError(f"{run_dir / 'predictions.json'}: not a naslung predictions file")
        rows = data.get(split, [])
    elif run.predictions_csv.exists():
        with open(run.predictions_csv, newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r["split"] == split]
    else:
        raise FileNotFoundError(f"{run_dir}: no predictions.json/.csv (is this a finished training run?)")
    if not rows:
        raise ValueError(f"{run_dir}: no {split!r} predictions in this run")
    try:
        return Predictions.from_records(rows)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{run_dir}: malformed {split!r} predictions ({type(exc).__name__}: {exc})") \
            from None
