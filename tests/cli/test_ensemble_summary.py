"""`naslung ensemble` over several folds ends with a mean +- std table of the votes, members and baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.console import Console

from naslung.atomic import write_json_atomic
from naslung.cli.ensemble import _summary_table
from naslung.ensemble.vote import ensemble_predict, load_members
from naslung.train.predictions import Predictions, write_predictions
from naslung.train.rundir import CVDir


def _run(path: Path, fold: int, ids: list[str], labels: list[int], probs: list[float]) -> None:
    """A finished run folder holding only what the vote reads: predictions and a result stub."""
    test = Predictions(nodule_id=np.array(ids), seriesuid=np.array([f"s{i}" for i in ids]),
                       fold=np.full(len(ids), fold), label=np.array(labels), prob=np.array(probs))
    write_predictions(path, {"val": test, "test": test})
    write_json_atomic(path / "result.json", {"schema": "naslung-train-result", "test_fold": fold})


def test_summary_over_folds(tmp_path: Path) -> None:
    ids, y = ["a", "b", "c", "d"], [1, 0, 1, 0]
    probs = {"cv_a": [[0.9, 0.1, 0.8, 0.2], [0.9, 0.1, 0.2, 0.2]],  # fold 1 all right, fold 2 misses c
             "cv_b": [[0.9, 0.1, 0.8, 0.6], [0.9, 0.1, 0.8, 0.2]]}  # fold 1 calls d, fold 2 all right
    dirs = [tmp_path / name for name in probs]
    for d, (_, per_fold) in zip(dirs, probs.items(), strict=True):
        for fold, p in zip((1, 2), per_fold, strict=True):
            run = CVDir(d).run(fold).path
            run.mkdir(parents=True)
            _run(run, fold, ids, y, p)
    for fold, acc in ((1, 0.75), (2, 0.5)):
        metrics = {"accuracy": acc, "sensitivity": 0.5, "specificity": 1.0, "f1": 0.5, "auc": 0.75}
        write_json_atomic(CVDir(dirs[0]).run(fold).baselines, {"diameter": {"test_metrics": metrics}})
    results = [ensemble_predict(load_members(dirs, f), "majority") for f in (1, 2)]
    console = Console(record=True, width=200)
    console.print(_summary_table(results, dirs))
    text = console.export_text()
    rows = {line.split("│")[1].strip(): line for line in text.splitlines() if line.count("│") > 2}
    # a 2-member majority needs both votes: fold 1 -> a, c right, b right, d benign (right) = 100 %;
    # fold 2 -> c has one vote of two -> benign, wrong: 75 %
    assert "87.50 ± 17.68" in rows["majority vote"]
    assert "87.50 ± 17.68" in rows["cv_a"] and "87.50 ± 17.68" in rows["cv_b"]
    assert "62.50 ± 17.68" in rows["diameter baseline"]
    assert np.isclose(results[0].majority["accuracy"], 1.0)
