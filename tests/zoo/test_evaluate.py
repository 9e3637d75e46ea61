"""`--model NAME` in `naslung explain` and `naslung evaluate --data`: a model re-run on a dataset's folds, the
folds it saw refused unless --allow-seen-fold."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from naslung.cli.app import app
from naslung.train.rundir import CVDir
from naslung.zoo.registry import MODELS_ENV


@pytest.fixture(autouse=True)
def _tiny_models(bundle, monkeypatch):
    monkeypatch.setenv(MODELS_ENV, str(bundle["root"]))


def test_evaluate_a_cv_folder_on_its_dataset_gives_its_test_metrics(bundle, tmp_path):
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(app, ["evaluate", "--run", str(bundle["cv"]), "--data", str(bundle["data"]),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "AUC" in result.output and "pooled" in result.output
    doc = json.loads(out.read_text())
    assert doc["schema"] == "naslung-evaluation" and doc["folds"] == [1, 2] and doc["notes"] == []
    for row in doc["per_fold"]:
        saved = CVDir(bundle["cv"]).run(row["fold"]).read_result()["test_metrics"]
        for k in ("accuracy", "f1", "auc", "sensitivity", "specificity", "n"):
            assert row["metrics"][k] == pytest.approx(saved[k], abs=1e-9), k
    again = CliRunner().invoke(app, ["evaluate", "--run", str(bundle["cv"]), "--data", str(bundle["data"]),
                                     "--out", str(out)])
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_evaluate_refuses_the_folds_a_model_saw(bundle, tmp_path):
    data = str(bundle["data"])
    named = CliRunner().invoke(app, ["evaluate", "--model", "voi3d-default", "--data", data])
    assert named.exit_code == 2
    assert "voi3d-default" in named.output and "trained on folds 0, 1, 2, 3" in named.output
    assert "--allow-seen-fold" in named.output
    run = CliRunner().invoke(app, ["evaluate", "--run", str(CVDir(bundle["cv"]).run(1).path), "--data", data,
                                   "--folds", "2"])
    assert run.exit_code == 2 and "fold 2 was training or validation data" in run.output
    out = tmp_path / "seen.json"
    allowed = CliRunner().invoke(app, ["evaluate", "--model", "voi3d-default", "--data", data, "--folds",
                                       "1,3", "--allow-seen-fold", "--out", str(out), "--json"])
    assert allowed.exit_code == 0, allowed.output
    doc = json.loads(out.read_text())
    assert doc["kind"] == "bundled model" and [r["fold"] for r in doc["per_fold"]] == [1, 3]
    assert doc["notes"] and all("evaluated anyway" in n for n in doc["notes"])
    assert doc["pooled"]["n"] == sum(r["n"] for r in doc["per_fold"])


def test_evaluate_options_are_checked(bundle):
    both = CliRunner().invoke(app, ["evaluate", "--model", "voi3d-default", "--run", str(bundle["cv"]),
                                    "--data", str(bundle["data"])])
    assert both.exit_code == 2 and "exactly one" in both.output
    no_data = CliRunner().invoke(app, ["evaluate", "--model", "voi3d-default"])
    assert no_data.exit_code == 2 and "--data" in no_data.output
    saved = CliRunner().invoke(app, ["evaluate", str(bundle["cv"]), "--json"])
    assert saved.exit_code == 0 and len(json.loads(saved.output)) == 2


def test_explain_by_model_name(bundle, tmp_path):
    args = ["explain", "--model", "voi3d-default", "--data", str(bundle["data"]), "--fold", "1",
            "--per-group", "1"]
    refused = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "r")])
    assert refused.exit_code == 2 and "its card: trained on folds" in refused.output
    out = tmp_path / "e"
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--allow-seen-fold", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "explain.json").read_text())
    assert summary["runs"][0]["run"] == "voi3d-default" and (out / "montage.png").is_file()
    assert any("explained anyway" in n for n in summary["notes"])
    unknown = CliRunner().invoke(app, ["explain", "--model", "nope", "--data", str(bundle["data"]), "--fold",
                                       "1", "--out", str(tmp_path / "u")])
    assert unknown.exit_code == 2 and "known:" in unknown.output
