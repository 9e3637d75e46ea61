"""Real training on a tiny dataset: the CLI with the local executor; Ray Tune with 2 concurrent trials."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from naslung.cli.app import app
from naslung.search import records as rec

TINY = [
    "--epochs",
    "1",
    "--channels",
    "4,8",
    "--max-depth",
    "4",
    "--latency-samples",
    "6",
    "--latency-repeats",
    "2",
    "--batch-size",
    "8",
    "--threads",
    "1",
]

#: ``search select`` without its floor against members at the class prior.
NO_FLOOR = ["--min-auc", "0", "--min-balanced-accuracy", "0"]


def _check_records(out: Path, executor: str, n: int) -> list[dict]:
    records = rec.read_trials(out)
    assert len(records) == n
    for r in records:
        assert tuple(r) == rec.TRIAL_KEYS
        assert r["status"] == "ok", r["error"]
        assert r["executor"] == executor and r["epochs"] == 1 and r["latency_ms"] > 0
        assert set(r["val_metrics"]) >= {"accuracy", "f1", "sensitivity", "specificity"}
        assert "test" not in json.dumps(r["val_metrics"])
    return records


def test_cli_local_search_and_select(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "local"
    runner = CliRunner()
    res = runner.invoke(
        app,
        ["search", "--data", str(tiny_dataset), "--budget-trials", "2", "--out", str(out), *TINY, "--json"],
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout[res.stdout.index("{") :])["summary"]
    assert summary["trained"] == 2 and summary["space"] == 19
    _check_records(out, "local", 2)
    config = rec.read_config(out)["config"]
    assert config["exclude_folds"] == [1, 2, 3, 4, 5] and config["train"]["attention"] == "cbam"
    # One epoch on 40 blobs leaves the candidates at the class prior, which the selection floor drops
    # (tests/search/test_select.py); turned off here, the wiring is what is checked.
    res = runner.invoke(app, ["search", "select", "--out", str(out), "--top", "2", "--json", *NO_FLOOR])
    assert res.exit_code == 0, res.output
    assert len(json.loads(res.stdout)) == 2
    # the same folder without --resume is refused; with it, the finished budget trains nothing
    res = runner.invoke(
        app, ["search", "--data", str(tiny_dataset), "--budget-trials", "2", "--out", str(out), *TINY]
    )
    assert res.exit_code == 2 and "--resume" in res.output
    res = runner.invoke(
        app,
        [
            "search",
            "--data",
            str(tiny_dataset),
            "--budget-trials",
            "2",
            "--out",
            str(out),
            *TINY,
            "--resume",
            "--json",
        ],
    )
    assert res.exit_code == 0 and len(rec.read_trials(out)) == 2


def test_cli_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["search", "--budget-trials", "2"])
    assert res.exit_code == 2 and "--data" in res.output
    res = runner.invoke(app, ["search", "--data", "x.h5", "--metric", "recall"])
    assert res.exit_code == 2 and "unknown metric" in res.output
    res = runner.invoke(app, ["search", "--data", str(tmp_path / "missing.h5")])
    assert res.exit_code != 0


@pytest.mark.slow
def test_ray_search_two_concurrent_trials_then_resume(tiny_dataset: Path, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    from naslung.search.config import ExecutorConfig, LatencyConfig, SearchConfig, SpaceConfig
    from naslung.search.runner import run_search
    from naslung.train.config import TrainConfig

    def cfg(budget: int) -> SearchConfig:
        return SearchConfig(
            out=str(tmp_path / "ray"),
            data=str(tiny_dataset),
            budget_trials=budget,
            train=TrainConfig(epochs=1, batch_size=8, num_threads=1, select_min_balanced_accuracy=0.6),
            executor=ExecutorConfig(name="ray", concurrency=2),
            space=SpaceConfig(channels=(4, 8), depth_range=(3, 4)),
            latency=LatencyConfig(samples=6, repeats=2),
        )

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        # first through the CLI (its progress callbacks must not reach Tune's pickled state)
        args = [
            "search",
            "--data",
            str(tiny_dataset),
            "--budget-trials",
            "2",
            "--out",
            str(tmp_path / "ray"),
            "--executor",
            "ray",
            "--concurrency",
            "2",
            *TINY,
        ]
        out = CliRunner().invoke(app, args)
        assert out.exit_code == 0, out.output
        records = _check_records(tmp_path / "ray", "ray", 2)
        # the two trials ran at once: each started before the other finished
        assert max(r["started"] for r in records) < min(r["finished"] for r in records)
        res = run_search(cfg(3), resume=True)
    finally:
        ray.shutdown()
    assert res.new_trials == 1
    records = _check_records(tmp_path / "ray", "ray", 3)
    assert len({r["index"] for r in records}) == 3
    state = res.state
    from naslung.search.pop import prune_mask

    assert (state.pruned == prune_mask(state.keys, state.latency, state.scores(), state.done_mask())).all()
    assert (tmp_path / "ray" / rec.PARETO).exists() and (tmp_path / "ray" / rec.PLOT).exists()
