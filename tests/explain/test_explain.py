"""`naslung explain` end to end on two tiny runs: montage, per-nodule PNGs, t-SNE, DBI table."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from explain_helpers import synth
from PIL import Image
from typer.testing import CliRunner

from naslung.explain.features import extract_features
from naslung.explain.pipeline import run_explain
from naslung.serving.runs import load_run_model
from naslung.train.predictions import read_predictions


def test_features_match_saved_test_predictions(tiny_runs):
    from naslung.data.dataset import load_dataset

    dataset = load_dataset(tiny_runs["data"])
    run = load_run_model(tiny_runs["asoftmax"])
    saved = read_predictions(tiny_runs["asoftmax"], "test")
    rows = np.array([int(np.flatnonzero(dataset.nodule_id == n)[0]) for n in saved.nodule_id])
    fs = extract_features(run.model, dataset, rows)
    assert fs.features.shape == (rows.size, run.model.num_features)
    np.testing.assert_allclose(fs.prob, saved.prob, rtol=1e-5, atol=1e-6)
    # the serving path (BN folded) gives the eval-mode model's features
    import torch

    from naslung.train.augment import center_crop

    x = center_crop(torch.from_numpy(np.asarray(dataset.images[rows], dtype=np.float32)), dataset.size)
    with torch.no_grad():
        unfolded = run.model.eval().forward_features(x).numpy()
    np.testing.assert_allclose(fs.features, unfolded, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_explain_two_runs(tiny_runs, tmp_path):
    out = tmp_path / "explain"
    summary = run_explain(tiny_runs["asoftmax"], tiny_runs["data"], 0, out, compare=[tiny_runs["softmax"]],
                          per_group=2)
    for name in ("montage.png", "tsne.png", "dbi.csv", "dbi.json", "explain.json"):
        assert (out / name).is_file(), name
    with Image.open(out / "tsne.png") as im:
        assert im.size[0] > 1.6 * im.size[1]  # two panels side by side
    with open(out / "dbi.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["loss"], r["features"]) for r in rows] == [
        ("asoftmax", "raw"), ("asoftmax", "unit-norm"), ("softmax", "raw"), ("softmax", "unit-norm")]
    for r in rows:
        assert float(r["DBI"]) == pytest.approx((float(r["S0"]) + float(r["S1"])) / float(r["M01"]))
    examples = summary["examples"]
    assert examples and all(0.0 <= e["attention_max"] <= 1.0 for e in examples)
    assert all((out / "nodules").joinpath(e["png"].split("/")[-1]).is_file() for e in examples)
    assert json.loads((out / "explain.json").read_text())["fold"] == 0
    assert summary["phantom"] is False


def test_explain_rejects_other_crop_settings(tiny_runs, tmp_path):
    other = synth().write_synthetic(tmp_path / "other.h5", n=40, size=8, margin=2, folds=4)
    with pytest.raises(ValueError, match="side 16.*side 8"):
        run_explain(tiny_runs["asoftmax"], other, 0, tmp_path / "x")


def test_explain_cli(tiny_runs, tmp_path):
    import typer

    from naslung.cli import explain as cli_explain

    app = typer.Typer()
    cli_explain.register(app)
    app.command("noop")(lambda: None)  # a second command keeps "explain" as a subcommand name
    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["explain", str(tiny_runs["asoftmax"]), "--data", str(tiny_runs["data"]),
                                      "--fold", "0", "--out", str(out), "--per-group", "1"])
    assert result.exit_code == 0, result.output
    assert "DBI" in result.output and (out / "montage.png").is_file()
    bad = CliRunner().invoke(app, ["explain", str(tmp_path / "nowhere"), "--data", str(tiny_runs["data"]),
                                   "--fold", "0", "--out", str(out)])
    assert bad.exit_code != 0 and "nowhere" in bad.output and "Traceback" not in bad.output
