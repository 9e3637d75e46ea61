"""ONNX export: ONNX Runtime matches PyTorch within 1e-4 (2-D and 3-D, dynamic batch); metadata travels."""

from __future__ import annotations

import pytest
import torch

from naslung.models import MODEL_1, build_model

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from naslung.models.onnx import OnnxRunner, export_onnx  # noqa: E402


@pytest.mark.parametrize(
    "dims, spec, kwargs",
    [
        (3, str(MODEL_1), {}),
        (3, str(MODEL_1), {"cbam_kernel": 3, "embedding": "linear"}),
        (2, "[4,4,[8,16],[16,32],[32,64]]", {"attention": "cbam-spatial-first", "head": "linear"}),
    ],
)
def test_onnx_matches_pytorch(tmp_path, dims: int, spec: str, kwargs: dict):
    torch.manual_seed(0)
    model = build_model(spec, spatial_dims=dims, **kwargs)
    # a few training steps' worth of BN statistics, so folding is exercised
    with torch.no_grad():
        for _ in range(3):
            model.train()(torch.randn(8, 1, *([16] * dims)))
    model.eval()
    path = export_onnx(model, tmp_path / "m.onnx", size=16)
    runner = OnnxRunner(path, threads=1)
    assert runner.config["spec"] == spec and runner.config["input_size"] == 16
    assert runner.config.get("cbam_kernel", 7) == kwargs.get("cbam_kernel", 7)
    for batch in (1, 5):  # the batch axis is dynamic
        x = torch.randn(batch, 1, *([16] * dims))
        with torch.no_grad():
            ref = model(x).numpy()
        out = runner(x)
        assert out.shape == ref.shape == (batch, 2)
        assert abs(out - ref).max() < 1e-4
        p = runner.predict_proba(x)
        assert p.shape == (batch,) and ((p >= 0) & (p <= 1)).all()
    assert model.training is False and sum(1 for _ in tmp_path.iterdir()) == 1  # no temporary left
