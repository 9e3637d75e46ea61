"""No leakage through the bundle: runs start from a random init unless `--init NAME` asks for a bundled
model's weights; config.json records which, and a test fold the model was trained on is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from naslung.cli.app import app
from naslung.train.rundir import CVDir, RunDir
from naslung.zoo.registry import MODELS_ENV, model_dir, read_card


@pytest.fixture()
def cfg(bundle, tmp_path) -> Path:
    path = tmp_path / "tiny_config.json"
    path.write_text(json.dumps(bundle["config"].replace(epochs=1).to_dict()))
    return path


def _config(run: Path) -> dict:
    return json.loads(RunDir(run).config.read_text())


def test_default_runs_record_no_init(bundle):
    # the fixture's cv folds and the build's run were made without --init
    cv = CVDir(bundle["cv"])
    assert json.loads(cv.summary_json.read_text())["init"] is None
    for fold in (1, 2):
        assert "init" in _config(cv.run(fold).path) and _config(cv.run(fold).path)["init"] is None


def test_train_without_init_records_none(bundle, cfg, tmp_path):
    out = tmp_path / "plain"
    result = CliRunner().invoke(app, ["train", "--data", str(bundle["data"]), "--config", str(cfg),
                                      "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert _config(out)["init"] is None


def test_init_records_the_model_and_starts_from_its_weights(bundle, cfg, tmp_path, monkeypatch):
    from naslung.train.checkpoint import load_checkpoint
    from naslung.train.engine import build

    monkeypatch.setenv(MODELS_ENV, str(bundle["root"]))
    card = read_card("voi3d-default", bundle["root"])
    out = tmp_path / "from_bundle"
    # lr 1e-12: one epoch leaves the weights where they started, so best.pt shows the start
    result = CliRunner().invoke(app, ["train", "--data", str(bundle["data"]), "--config", str(cfg),
                                      "--set", "lr=1e-12", "--init", "voi3d-default", "--out", str(out),
                                      "--json"])
    assert result.exit_code == 0, result.output
    init = _config(out)["init"]
    assert init["model"] == "voi3d-default" and init["member"] is None
    assert init["checksum"] == card["members"][0]["sha256"] and init["model_sha256"] == card["sha256"]
    assert init["trained_folds"] == [0, 1, 2, 3]
    bundled = load_checkpoint(model_dir("voi3d-default", bundle["root"]) / "best.pt")["model"]
    trained = load_checkpoint(RunDir(out).best)["model"]
    torch.manual_seed(bundle["config"].seed)
    random_init = build(bundle["config"], 3)[0].state_dict()
    weights = [k for k, v in bundled.items() if v.dtype.is_floating_point and v.dim() > 1]
    assert weights
    for k in weights:
        assert torch.allclose(trained[k], bundled[k], atol=1e-5), k
    assert any(not torch.allclose(random_init[k], bundled[k], atol=1e-3) for k in weights)
    # resuming it without --init is another start: refused
    again = CliRunner().invoke(app, ["train", "--data", str(bundle["data"]), "--config", str(cfg),
                                     "--set", "lr=1e-12", "--out", str(out), "--resume"])
    assert again.exit_code == 2 and "--init voi3d-default" in again.output and "random init" in again.output


def test_cv_init_refuses_the_folds_the_model_was_trained_on(bundle, cfg, tmp_path, monkeypatch):
    monkeypatch.setenv(MODELS_ENV, str(bundle["root"]))
    out = tmp_path / "cv_init"
    result = CliRunner().invoke(app, ["cv", "--data", str(bundle["data"]), "--config", str(cfg), "--folds",
                                      "1,2", "--init", "voi3d-default", "--out", str(out)])
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert "\n" not in line and "voi3d-default" in line and "folds 0-3" in line and "1, 2" in line
    assert "refused" in line and not (out / "fold_1").exists()
    fold = CliRunner().invoke(app, ["train", "--data", str(bundle["data"]), "--config", str(cfg), "--fold",
                                    "1", "--init", "voi3d-default", "--out", str(tmp_path / "t")])
    assert fold.exit_code == 2 and "test fold 1 " in fold.output


def test_init_checked_against_the_data_and_the_architecture(bundle, cfg, tmp_path, monkeypatch, helpers):
    monkeypatch.setenv(MODELS_ENV, str(bundle["root"]))
    args = ["train", "--data", str(bundle["data"]), "--config", str(cfg), "--out", str(tmp_path / "a")]
    arch = CliRunner().invoke(app, [*args, "--init", "voi3d-default", "--arch", "[4,4,[4,4],[4,8],[8,8]]"])
    assert arch.exit_code == 2 and "--init voi3d-default" in arch.output and "arch=" in arch.output
    flat = helpers.synth().write_synthetic(tmp_path / "flat.h5", n=32, folds=4, dims=2)
    dims = CliRunner().invoke(app, ["train", "--data", str(flat), "--init", "voi3d-default", "--epochs", "1",
                                    "--out", str(tmp_path / "b")])
    assert dims.exit_code == 2 and "3-D model" in dims.output and "2-D crops" in dims.output
    unknown = CliRunner().invoke(app, [*args, "--init", "nope"])
    assert unknown.exit_code == 2 and "known:" in unknown.output


def test_an_unseen_fold_passes_and_members_are_named():
    from naslung.train.init import WeightInit, check_init_folds

    init = WeightInit(name="m", state={}, model_options={}, spatial_dims=3, folds=(0, 6, 7), record={})
    check_init_folds(init, [1, 2, None])
    with pytest.raises(ValueError, match="test fold 6 "):
        check_init_folds(init, [1, 6])
