"""RunDir / CVDir own the run-folder layout: names, states, fold discovery, schema-checked reads."""

from __future__ import annotations

import pytest

from naslung.train.config import TrainConfig
from naslung.train.engine import fit
from naslung.train.result import TrainResult
from naslung.train.rundir import CVDir, RunDir, finished_runs, parse_fold_dir, run_for_fold, runs_under

from .conftest import synthetic_dataset


def test_states_follow_a_real_run(tmp_path):
    ds = synthetic_dataset(n=60, folds=3, seed=4)
    run = CVDir(tmp_path / "cv").run(2)
    assert run.state() == "new" and not run.started()
    config = TrainConfig(arch="[4,4,[4],[4],[8]]", epochs=1, batch_size=16, device="cpu", num_threads=1)
    fit(ds, config, test_fold=2, out_dir=run.path)
    assert run.state() == "finished" and run.started()
    for path in (run.config, run.epochs_log, run.last, run.best, run.predictions_csv, run.predictions_json):
        assert path.is_file(), path
    assert TrainResult.load(run.path).test_fold == 2
    assert run.read_config()["config"]["arch"] == config.arch
    assert CVDir(tmp_path / "cv").folds() == [2]
    assert [r.path for r in finished_runs(tmp_path / "cv")] == [run.path]
    assert run_for_fold(tmp_path / "cv", 2) == run
    assert run_for_fold(run.path, None) == run
    run.result.unlink()
    assert run.state() == "partial"
    with pytest.raises(FileNotFoundError, match="no finished run"):
        finished_runs(tmp_path / "cv")


def test_fold_names():
    assert parse_fold_dir("fold_3") == 3 and parse_fold_dir("fold_12") == 12
    assert parse_fold_dir("fold_x") is None and parse_fold_dir("fold_3.bak") is None
    assert parse_fold_dir("myfold_3") is None


def test_cv_folds_sorted_numerically(tmp_path):
    for k in (10, 2, 1):
        (tmp_path / f"fold_{k}").mkdir()
    (tmp_path / "fold_oops").mkdir()
    (tmp_path / "fold_5").write_text("not a folder")
    assert CVDir(tmp_path).folds() == [1, 2, 10]
    assert CVDir(tmp_path).folds(finished_only=True) == []


def test_garbage_result_and_config_are_named(tmp_path):
    run = RunDir(tmp_path)
    run.result.write_text('{"schema": "something else"}')
    with pytest.raises(ValueError, match="result.json"):
        run.read_result()
    run.config.write_text("{trunc")
    with pytest.raises(ValueError, match="config.json"):
        run.read_config()


def test_runs_under_finds_finished_runs_at_any_depth_sorted(tmp_path):
    def touch(run: RunDir, finished: bool) -> RunDir:
        run.path.mkdir(parents=True)
        (run.result if finished else run.last).write_text("{}")
        return run

    cv10 = touch(CVDir(tmp_path / "exp" / "cv").run(10), True)
    cv2 = touch(CVDir(tmp_path / "exp" / "cv").run(2), True)
    touch(CVDir(tmp_path / "exp" / "cv").run(3), False)  # killed: not finished
    single = touch(RunDir(tmp_path / "exp" / "a" / "b" / "run"), True)
    (tmp_path / "exp" / "decoy" / "result.json").mkdir(parents=True)  # a folder, not a result
    assert runs_under(tmp_path / "exp") == sorted([cv10, cv2, single], key=lambda r: r.path)
    assert runs_under(single.path) == [single]
    assert runs_under(tmp_path / "exp" / "cv") == [cv10, cv2]  # by path: fold_10 before fold_2
    assert runs_under(tmp_path / "missing") == [] and runs_under(single.result) == []
