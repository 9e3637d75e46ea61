import csv
import json

import pytest

import naslung.train.engine as engine
from naslung.train.config import TrainConfig
from naslung.train.cv import run_cv
from naslung.train.evaluate import evaluate_runs

from .conftest import synthetic_dataset


def test_cv_writes_tables_and_skips_finished_folds(tmp_path, monkeypatch):
    ds = synthetic_dataset(n=80, folds=4, seed=4)
    cfg = TrainConfig(arch="[4,4,[4],[4],[8]]", epochs=1, batch_size=16, lr=3e-3, device="cpu", num_threads=1)
    result = run_cv(ds, cfg, [0, 2], tmp_path / "cv")
    assert [r.test_fold for r in result.results] == [0, 2]
    methods = [s["method"] for s in result.summary]
    assert methods == ["cnn", "diameter", "crop-stats"]
    cv = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert cv["folds"] == [0, 2] and len(cv["per_fold"]) == 6
    rows = list(csv.DictReader((tmp_path / "cv" / "cv.csv").read_text().splitlines()))
    assert {r["fold"] for r in rows} == {"0", "2", "mean", "std"}
    assert (tmp_path / "cv" / "fold_2" / "baselines.json").exists()

    # Finished folds are read back, never retrained.
    def boom(*a, **k):
        raise AssertionError("retrained a finished fold")

    monkeypatch.setattr(engine, "train_epoch", boom)
    again = run_cv(ds, cfg, [0, 2], tmp_path / "cv")
    assert again.summary[0]["accuracy_mean"] == pytest.approx(result.summary[0]["accuracy_mean"])

    # evaluate() recomputes the same test metrics from the saved predictions.
    records = evaluate_runs([tmp_path / "cv"])
    assert [r["test_fold"] for r in records] == [0, 2]
    for rec, res in zip(records, result.results, strict=True):
        assert rec["test"]["accuracy"] == pytest.approx(res.test_metrics["accuracy"])
