"""CLI smoke tests: train, cv, evaluate, ensemble, ensemble-size on a tiny dataset file."""

import json

import pytest
from typer.testing import CliRunner

from naslung.cli.app import app

from .conftest import write_synthetic

TINY = "[4,4,[4],[4],[8]]"
FAST = ["--epochs", "1", "--batch", "16", "--lr", "3e-3", "--device", "cpu", "--threads", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("data") / "crops.h5", n=60, folds=3)


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


@pytest.mark.slow
def test_train_cv_evaluate_ensemble(data, tmp_path):
    runs = []
    for seed in (0, 1, 2):
        out = tmp_path / f"run{seed}"
        invoke("train", "--data", data, "--arch", TINY, "--fold", 1, "--seed", seed, "--out", out, *FAST)
        runs.append(out)
    assert json.loads((runs[0] / "result.json").read_text())["test_fold"] == 1
    # --resume on a finished run reads it back
    out = invoke("train", "--data", data, "--arch", TINY, "--fold", 1, "--out", runs[0], "--resume", "--json",
                 *FAST)
    assert json.loads(out)["spec"] == TINY

    records = json.loads(invoke("evaluate", *runs, "--json"))
    assert [r["test_fold"] for r in records] == [1, 1, 1]

    ens = json.loads(invoke("ensemble", "--runs", *runs, "--fold", 1, "--json"))
    assert ens["n_members"] == 3 and 0.5 <= ens["mean_agreement"] <= 1
    assert "soft" in ens and "majority" in ens
    assert "majority vote" in invoke("ensemble", "--runs", *runs, "--fold", 1)

    png = tmp_path / "fig7.png"
    size = json.loads(invoke("ensemble-size", "--runs", *runs, "--fold", 1, "--plot", png, "--json"))
    assert [r["n"] for r in size["rows"]] == [1, 3] and png.exists()

    cv_dir = tmp_path / "cv"
    table = invoke("cv", "--data", data, "--arch", TINY, "--folds", "0,2", "--out", cv_dir, *FAST)
    assert "diameter" in table and "cnn" in table
    assert (cv_dir / "cv.json").exists() and (cv_dir / "fold_0" / "result.json").exists()
    # cv folders ensemble across every shared fold when --fold is omitted
    across = json.loads(invoke("ensemble", "--runs", cv_dir, cv_dir, "--json"))
    assert [r["fold"] for r in across] == [0, 2]


def test_clear_errors(data, tmp_path):
    runner = CliRunner()
    bad = runner.invoke(app, ["train", "--data", str(data), "--arch", "[4,4,[4]]", "--fold", "1", *FAST])
    assert bad.exit_code != 0 and "stage" in bad.output
    out = tmp_path / "r"
    invoke("train", "--data", data, "--arch", TINY, "--fold", 1, "--out", out, *FAST)
    clash = runner.invoke(app, ["train", "--data", str(data), "--arch", "[4,4,[4],[8],[8]]", "--fold", "1",
                                "--out", str(out), "--resume", *FAST])
    assert clash.exit_code == 2 and "spec" in clash.output
    missing = runner.invoke(app, ["train", "--data", str(tmp_path / "none.h5"), "--fold", "1"])
    assert missing.exit_code == 2 and "Invalid value" in missing.output
    wrong = runner.invoke(app, ["ensemble", "--runs", str(out), "--fold", "2"])
    assert wrong.exit_code == 2 and "fold" in wrong.output
