"""`naslung export RUN --onnx`: writes a checked ONNX file from a run folder or a checkpoint."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from naslung.cli.app import app
from naslung.models import build_model
from naslung.train.checkpoint import save_checkpoint

pytest.importorskip("onnxruntime")
runner = CliRunner()


def _run_folder(tmp_path, **kwargs):
    torch.manual_seed(0)
    model = build_model("[4,4,[4],[8],[8]]", **kwargs)
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(run / "best.pt", {"spec": model.config["spec"], "model_config": model.config,
                                      "model": model.state_dict()})
    return run, model


@pytest.mark.parametrize("kwargs", [{}, {"cbam_kernel": 3, "spatial_dims": 2}])
@pytest.mark.slow
def test_export_run_folder_and_checkpoint(tmp_path, kwargs):
    from naslung.models.onnx import OnnxRunner

    run, model = _run_folder(tmp_path, **kwargs)
    for source in (run, run / "best.pt"):
        out = tmp_path / f"{source.name}.onnx"
        result = runner.invoke(app, ["export", str(source), "--onnx", str(out), "--size", "16"])
        assert result.exit_code == 0, result.output
        assert "matches PyTorch" in result.stdout and out.exists()
        assert OnnxRunner(out).config["cbam_kernel"] == model.config["cbam_kernel"]


def test_export_errors(tmp_path):
    missing = runner.invoke(app, ["export", str(tmp_path / "nope"), "--onnx", str(tmp_path / "m.onnx")])
    assert missing.exit_code != 0 and "no such run folder" in missing.output
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    result = runner.invoke(app, ["export", str(bad), "--onnx", str(tmp_path / "m.onnx")])
    assert result.exit_code != 0 and "not a readable checkpoint" in result.output
    assert not (tmp_path / "m.onnx").exists()
