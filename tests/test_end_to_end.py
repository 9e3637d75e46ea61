"""End to end, as a new user runs it: LIDC phantom -> crops -> POP search -> members -> ensemble.

A small phantom (40 nodules over the ten LUNA16 subsets) and one epoch everywhere keep it to about a
minute on 2 cores; it exercises the same code as ``make demo``. It also checks the resume path: a second
run over the same folder retrains nothing.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from naslung.cli.app import app


@pytest.mark.slow
def test_demo_pipeline_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("NASLUNG_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    args = ["demo", "--budget", "small", "--limit", "40", "--search-trials", "2", "--search-epochs", "1",
            "--members", "2", "--epochs", "1", "--out", str(out)]
    # One epoch on 40 phantom nodules cannot beat chance: the floor is the other tests' business.
    args += ["--min-auc", "0", "--min-balanced-accuracy", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "PHANTOM" in result.output

    summary = json.loads((out / "demo_summary.json").read_text())
    methods = [row["method"] for row in summary["rows"]]
    assert sum(m.startswith("member") for m in methods) == 2
    assert any(m.startswith("ensemble majority") for m in methods)
    assert "diameter-only logistic regression" in methods
    for row in summary["rows"]:
        assert 0.0 <= row["accuracy"] <= 1.0

    trials = [json.loads(line) for line in (out / "search" / "trials.jsonl").read_text().splitlines()]
    assert len([t for t in trials if t.get("status") == "ok"]) == 2
    search_cfg = json.loads((out / "search" / "search_config.json").read_text())
    cfg = search_cfg.get("config", search_cfg)
    assert set(cfg["exclude_folds"]) >= {1, 2, 3, 4, 5}, "the search must not see the paper's test folds"
    assert (out / "search" / "pareto.png").stat().st_size > 0
    # Explanations and the report come out of the same run.
    assert (out / "report.html").stat().st_size > 0 and "report.html" in result.output
    assert (out / "explain" / "explain.json").exists()

    # The members file is the hand-off: each member trains with exactly the config it records, in the
    # `naslung cv --members` layout that `naslung reproduce` uses too.
    members = json.loads((out / "search" / "members.json").read_text())["members"]
    assert len(members) == 2
    for member in members:
        res = json.loads((out / "members" / member["name"] / "fold_1" / "result.json").read_text())
        assert res["test_fold"] == 1 and res["config"] == member["config"]
    assert summary["config"]["budget"]["name"] == "small"
    assert summary["config"]["budget"]["overrides"] == ["search_trials", "search_epochs", "members", "epochs",
                                                          "min_auc", "min_balanced_accuracy"]

    # Resume: a rerun over the same folder reuses the search and the finished members.
    first = out / "members" / members[0]["name"] / "fold_1"
    before = (first / "result.json").read_text(), (first / "best.pt").stat().st_mtime_ns
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert ((first / "result.json").read_text(), (first / "best.pt").stat().st_mtime_ns) == before
    trials_after = (out / "search" / "trials.jsonl").read_text().splitlines()
    assert len(trials_after) == len(trials)


def test_demo_budget_is_checked_before_any_work(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--budget", "huge", "--out", str(tmp_path / "demo")])
    assert result.exit_code == 2
    assert "unknown budget 'huge'; valid: small, medium, paper" in result.output
    assert not (tmp_path / "demo").exists()
