"""The outcome of one training run: :class:`TrainResult`, written as ``result.json`` and read back."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from naslung import schemas
from naslung.atomic import read_json, read_jsonl
from naslung.train.predictions import Predictions, read_predictions
from naslung.train.rundir import RunDir

if TYPE_CHECKING:
    from torch import nn

RESULT_SCHEMA = schemas.TRAIN_RESULT
RESULT_SCHEMA_VERSION = 1


@dataclass
class TrainResult:
    """Outcome of :func:`naslung.train.engine.fit`.

    Attributes:
        spec: architecture string.
        test_fold: the test fold, or None for a development-only run (search).
        epoch: chosen epoch (1-based), picked on the validation split.
        val_metrics: validation metrics of the chosen epoch (``binary_metrics`` keys).
        test_metrics: test-fold metrics of the chosen epoch (None without a test fold).
        params: trainable parameters of the model.
        history: one record per epoch (train loss/accuracy, ``val`` metrics, lambda, seconds).
        val, test: per-nodule predictions of the chosen checkpoint.
        split: sizes of train / val / test.
        seconds: wall time of the whole run (summed over resumed pieces).
        out_dir: run folder, if any.
        model: the chosen model on CPU in eval mode (None when read back from disk).
    """

    spec: str
    test_fold: int | None
    epoch: int
    val_metrics: dict[str, Any]
    test_metrics: dict[str, Any] | None
    params: int
    history: list[dict[str, Any]]
    val: Predictions
    test: Predictions | None
    split: dict[str, int]
    seconds: float
    config: dict[str, Any] = field(default_factory=dict)
    out_dir: Path | None = None
    model: nn.Module | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The ``result.json`` payload."""
        return {
            "schema": RESULT_SCHEMA, "schema_version": RESULT_SCHEMA_VERSION, "spec": self.spec,
            "test_fold": self.test_fold, "epoch": self.epoch, "epochs": len(self.history),
            "val_metrics": self.val_metrics, "test_metrics": self.test_metrics, "params": self.params,
            "split": self.split, "seconds": self.seconds, "config": self.config,
        }

    @classmethod
    def load(cls, run_dir: str | Path) -> TrainResult:
        """Read a finished run folder back (without the model)."""
        run = RunDir(run_dir)
        run_dir, path = run.path, run.result
        if not path.exists():
            raise FileNotFoundError(f"{run_dir}: no result.json, the run has not finished")
        data = read_json(path, "training result")
        if not isinstance(data, dict) or data.get("schema") != RESULT_SCHEMA:
            raise ValueError(f"{path}: not a naslung training result")
        test = read_predictions(run_dir, "test") if data["test_fold"] is not None else None
        return cls(spec=data["spec"], test_fold=data["test_fold"], epoch=data["epoch"],
                   val_metrics=data["val_metrics"], test_metrics=data["test_metrics"], params=data["params"],
                   history=read_jsonl(run.epochs_log), val=read_predictions(run_dir, "val"),
                   test=test, split=data["split"], seconds=data["seconds"], config=data.get("config", {}),
                   out_dir=run_dir)
