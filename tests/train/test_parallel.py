"""cv --jobs: folds and members trained side by side give the numbers of one-at-a-time runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from naslung.data.dataset import load_dataset
from naslung.train.cv import run_cv
from naslung.train.rundir import CVDir

from .conftest import tiny, write_synthetic


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("par") / "syn2d.h5", dims=2, n=120, folds=4, seed=2)


@pytest.mark.slow
def test_side_by_side_equals_one_at_a_time(data_file: Path, tmp_path: Path) -> None:
    dataset, config = load_dataset(data_file), tiny(epochs=2)
    one = run_cv(dataset, config, [0, 1], tmp_path / "one", source=str(data_file), baselines=("diameter",))
    two = run_cv(dataset, config, [0, 1], tmp_path / "two", source=str(data_file), baselines=("diameter",),
                 jobs=2)
    for a, b in zip(one.results, two.results, strict=True):
        assert a.test_metrics == b.test_metrics and a.epoch == b.epoch
    for fold in (0, 1):
        rows = [json.loads(CVDir(tmp_path / name).run(fold).path.joinpath("predictions.json").read_text())
                for name in ("one", "two")]
        assert rows[0] == rows[1]
    best = CVDir(tmp_path / "two").run(0).path / "best.pt"
    before = best.stat().st_mtime_ns
    run_cv(dataset, config, [0, 1], tmp_path / "two", source=str(data_file), baselines=("diameter",), jobs=2)
    assert best.stat().st_mtime_ns == before  # finished runs are read back, not retrained


def test_jobs_need_the_dataset_file(data_file: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="load the dataset from its file, and none"):
        run_cv(load_dataset(data_file), tiny(), [0], tmp_path / "cv", source=None, jobs=2)
