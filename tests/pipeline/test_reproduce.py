"""`naslung reproduce` end to end on a tiny phantom-like dataset: every stage, every report table, resume.

Tiny budgets (2 trials of 1 epoch, 2 members, 1 epoch everywhere) on test folds 1-2 keep the whole run
under a minute on 2 cores; the numbers are meaningless, the wiring is what is checked.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from naslung.cli.app import app
from naslung.pipeline.reproduce import STAGES

TINY = ["--folds", "1,2", "--device", "cpu", "--threads", "1",
        "--set", "search_trials=2", "--set", "search_epochs=1", "--set", "members=2", "--set", "epochs=1",
        "--set", "ablation_epochs=1", "--set", "latency_samples=6", "--set", "latency_repeats=2",
        "--set", "bootstrap=50", "--set", "min_auc=0", "--set", "min_balanced_accuracy=0"]
#: Every table of the report page, by id prefix.
REPORT_TABLES = ("table-models", "table-paired", "table-cv-", "table-ablation-table2-",
                 "table-ablation-table3-", "table-dbi", "table-calibration", "table-protocol",
                 "table-provenance")


def _invoke(data: Path, out: Path) -> object:
    return CliRunner().invoke(app, ["reproduce", "--data", str(data), "--out", str(out), *TINY])


def _mtimes(out: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in sorted(out.rglob("best.pt"))}


@pytest.fixture(scope="module")
def first_run(phantom_like: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("reproduce") / "out"
    return out, _invoke(phantom_like, out)


@pytest.mark.slow
def test_every_stage_runs_and_every_report_table_is_filled(first_run):
    out, result = first_run
    assert result.exit_code == 0, result.output
    status = json.loads((out / "reproduce.json").read_text(encoding="utf-8"))
    assert status["schema"] == "naslung-reproduce"
    assert {name: status["stages"][name]["status"] for name in STAGES} == dict.fromkeys(STAGES, "done")
    # Before the first stage nothing was measured; later stages are estimated from measured epochs.
    first = next(line for line in result.output.splitlines() if line.startswith("[1/7] search"))
    assert "search unknown" in first and "train unknown" in first
    assert re.search(r"\[4/7\] ensemble.*ablate ~\d+ s \(\d+ epochs x [\d.]+ s, measured on member epochs\)",
                     result.output)
    assert f"report: {out / 'report.html'}" in result.output
    assert "ensemble majority (n=2)" in result.output and "PHANTOM" in result.output

    # Table 5 style: per test fold, both members, the two votes and the diameter baseline.
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["folds"] == [1, 2]
    per_fold = {(r["method"], r["fold"]) for r in results["per_fold"]}
    methods = ("member 1", "member 2", "ensemble majority (n=2)", "ensemble soft (n=2)",
               "diameter-only logistic regression")
    assert per_fold == {(m, f) for m in methods for f in (1, 2)}
    for row in results["per_fold"]:
        assert 0.0 <= row["accuracy"] <= 1.0 and row["n"] > 0
    assert [s["method"] for s in results["summary"]] == list(methods)

    # Each member trained on each test fold with the config members.json records (final epochs set).
    members = json.loads((out / "search" / "members.json").read_text(encoding="utf-8"))
    assert len(members["members"]) == 2 and set(members["exclude_folds"]) >= {1, 2, 3, 4, 5}
    for member in members["members"]:
        assert member["config"]["epochs"] == 1
        for fold in (1, 2):
            res = json.loads((out / "members" / member["name"] / f"fold_{fold}" / "result.json").read_text())
            assert res["test_fold"] == fold and res["config"] == member["config"]

    html = (out / "report.html").read_text(encoding="utf-8")
    tables = dict(re.findall(r"<table id=([\w-]+)>.*?<tbody>(.*?)</tbody>", html))
    for prefix in REPORT_TABLES:
        found = [body for name, body in tables.items() if name.startswith(prefix)]
        assert found, f"report table {prefix}* missing"
        assert all("<tr" in body for body in found), f"report table {prefix}* is empty"
    assert not re.search(r"<p>No [^<]*</p>", html), "a report section says it has nothing"
    assert "majority vote, 2 cv folders in members" in html  # the members' ensemble, not the ablations'
    assert "PHANTOM" in html
    ablation = json.loads((out / "ablate" / "ablation.json").read_text(encoding="utf-8"))
    assert ablation["folds"] == [1, 2] and len(ablation["archs"]) == 1
    assert ablation["archs"][0] == members["members"][0]["config"]["arch"]
    dbi = json.loads((out / "explain" / "dbi.json").read_text(encoding="utf-8"))
    assert {r["loss"] for r in dbi} == {"asoftmax", "softmax"}  # Table 4: both losses side by side
    assert (out / "explain" / "montage.png").stat().st_size > 0


@pytest.mark.slow
def test_rerun_reuses_every_finished_stage(first_run, phantom_like):
    out, result = first_run
    assert result.exit_code == 0, result.output
    before, trials = _mtimes(out), (out / "search" / "trials.jsonl").read_text()
    assert len(before) == 2 * 2 + 5 * 2  # members x folds, ablation variants x folds
    again = _invoke(phantom_like, out)
    assert again.exit_code == 0, again.output
    for name in STAGES:
        assert f"{name}: done earlier, reused" in again.output
    assert _mtimes(out) == before, "a finished training was redone"
    assert (out / "search" / "trials.jsonl").read_text() == trials


@pytest.mark.slow
def test_a_stage_killed_midway_resumes_without_redoing_finished_runs(first_run, phantom_like):
    out, result = first_run
    assert result.exit_code == 0, result.output
    # As a kill during the training stage leaves it: marked running, one fold run without result.json.
    status_path = out / "reproduce.json"
    status = json.loads(status_path.read_text(encoding="utf-8"))
    status["stages"]["train"]["status"] = "running"
    status_path.write_text(json.dumps(status), encoding="utf-8")
    members = json.loads((out / "search" / "members.json").read_text(encoding="utf-8"))["members"]
    victim = out / "members" / members[1]["name"] / "fold_2"
    (victim / "result.json").unlink()
    others = {p: t for p, t in _mtimes(out).items() if victim not in p.parents}

    again = _invoke(phantom_like, out)
    assert again.exit_code == 0, again.output
    assert "[3/7] train; estimated time left" in again.output
    assert "search: done earlier, reused" in again.output
    assert (victim / "result.json").is_file()
    assert {p: t for p, t in _mtimes(out).items() if victim not in p.parents} == others
    status = json.loads(status_path.read_text(encoding="utf-8"))
    assert status["stages"]["train"]["status"] == "done"
