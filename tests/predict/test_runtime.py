"""`naslung predict --runtime torch|onnx|openvino`: the folded torch path, ONNX Runtime and OpenVINO agree
with the model."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from naslung.data.dataset import load_dataset
from naslung.models.fuse import count_batchnorms
from naslung.serving.predict import (
    load_members,
    member_runner,
    model_input,
    predict_nodules,
    resolve_settings,
)

HAS_ONNX = all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))


def _scan_path(tree, uid: str) -> Path:
    return tree.root / f"subset{tree.scan(uid).subset}" / f"{uid}.mhd"


def _crops(luna, settings) -> list[torch.Tensor]:
    from naslung.data.images import read_ct

    tree, data = luna
    dataset = load_dataset(data)
    return [model_input(read_ct(_scan_path(tree, dataset.seriesuid[i])), tuple(dataset.world_center[i]),
                        settings)[0] for i in range(len(dataset))]


def test_torch_runtime_is_folded_and_equals_the_unfolded_model(tiny_runs, luna):
    members = load_members(tiny_runs["asoftmax"])
    settings, _ = resolve_settings(members)
    run = member_runner(members[0], "torch")
    x = torch.cat(_crops(luna, settings))
    with torch.no_grad():
        want = members[0].model.eval()(x)
        got = run(x)
    assert count_batchnorms(members[0].model) > 0  # the loaded model is left unfolded
    assert got.shape == want.shape and float((got - want).abs().max()) < 1e-5


@pytest.mark.skipif(not HAS_ONNX, reason="onnx/onnxruntime not installed (pip install 'naslung[onnx]')")
@pytest.mark.slow
def test_onnx_runtime_equals_torch_and_exports_once(tiny_runs, luna, tmp_path, monkeypatch):
    from naslung.models import onnx as naslung_onnx

    monkeypatch.setenv("NASLUNG_CACHE", str(tmp_path / "cache"))
    exports: list[Path] = []
    real = naslung_onnx.export_onnx

    def spy(model, path, size=32, **kw):
        exports.append(Path(path))
        return real(model, path, size=size, **kw)

    monkeypatch.setattr(naslung_onnx, "export_onnx", spy)
    tree, data = luna
    dataset = load_dataset(data)
    members = load_members(tiny_runs["asoftmax"]) + load_members(tiny_runs["softmax"])
    settings, _ = resolve_settings(members)
    for i in range(len(dataset)):
        scan, world = _scan_path(tree, dataset.seriesuid[i]), [("n", tuple(dataset.world_center[i]))]
        by_torch = predict_nodules(scan, world, members, settings, runtime="torch")[0]
        by_onnx = predict_nodules(scan, world, members, settings, runtime="onnx", attention=False)[0]
        for a, b in zip(by_torch.members, by_onnx.members, strict=True):
            assert abs(a["prob_malignant"] - b["prob_malignant"]) < 1e-4
        assert by_onnx.majority == by_torch.majority and by_onnx.attention is None
    # One export per member, cached by checkpoint: later calls reuse the files.
    assert len(exports) == 2 and len(set(exports)) == 2
    assert sorted(p.name for p in (tmp_path / "cache" / "onnx").iterdir()) == sorted(p.name for p in exports)
    x = torch.cat(_crops(luna, settings))
    for m in members:
        with torch.no_grad():
            want = m.model.eval()(x).numpy()
        assert np.abs(member_runner(m, "onnx")(x).numpy() - want).max() < 1e-4
    assert len(exports) == 2


HAS_OPENVINO = HAS_ONNX and importlib.util.find_spec("openvino") is not None


@pytest.mark.skipif(not HAS_OPENVINO, reason="openvino not installed (pip install 'naslung[openvino]')")
@pytest.mark.skipif(bool(os.environ.get("ONEDNN_MAX_CPU_ISA")), reason="OpenVINO returns nothing under it")
def test_openvino_runtime_equals_torch(tiny_runs, luna, tmp_path, monkeypatch):
    monkeypatch.setenv("NASLUNG_CACHE", str(tmp_path / "cache"))
    tree, data = luna
    dataset = load_dataset(data)
    members = load_members(tiny_runs["asoftmax"]) + load_members(tiny_runs["softmax"])
    settings, _ = resolve_settings(members)
    x = torch.cat(_crops(luna, settings))
    for m in members:
        with torch.no_grad():
            want = m.model.eval()(x).numpy()
        assert np.abs(member_runner(m, "openvino")(x).numpy() - want).max() < 1e-4
        assert np.abs(member_runner(m, "openvino")(x[:1]).numpy() - want[:1]).max() < 1e-4  # batch 1 too
    scan, world = _scan_path(tree, dataset.seriesuid[0]), [("n", tuple(dataset.world_center[0]))]
    by_torch = predict_nodules(scan, world, members, settings, runtime="torch")[0]
    by_openvino = predict_nodules(scan, world, members, settings, runtime="openvino", attention=False)[0]
    for a, b in zip(by_torch.members, by_openvino.members, strict=True):
        assert abs(a["prob_malignant"] - b["prob_malignant"]) < 1e-4


def test_auto_runtime_picks_a_timed_engine_and_agrees(tiny_runs, luna, tmp_path, monkeypatch):
    from naslung.serving import predict as serving_predict

    monkeypatch.setenv("NASLUNG_CACHE", str(tmp_path / "cache"))
    members = load_members(tiny_runs["asoftmax"])
    settings, _ = resolve_settings(members)
    x = torch.cat(_crops(luna, settings))
    engine, runner = serving_predict.fastest_runner(members[0], batch=len(x))
    assert engine in ("torch", "openvino") and (HAS_OPENVINO or engine == "torch")
    with torch.no_grad():
        want = members[0].model.eval()(x).numpy()
    assert np.abs(runner(x).numpy() - want).max() < 1e-4
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # then OpenVINO is never a candidate
    assert serving_predict.fastest_runner(members[0], batch=1, repeats=1)[0] == "torch"


def test_openvino_refuses_the_onednn_cap(monkeypatch, tmp_path):
    from naslung.models.onnx import OpenVinoRunner

    pytest.importorskip("openvino")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    with pytest.raises(RuntimeError, match="ONEDNN_MAX_CPU_ISA"):
        OpenVinoRunner(tmp_path / "missing.onnx")


def test_cli_runtime_errors_are_one_line(tiny_runs, luna, monkeypatch):
    from naslung.cli.app import app

    tree, data = luna
    dataset = load_dataset(data)
    scan = _scan_path(tree, dataset.seriesuid[0])
    args = ["predict", "--model", str(tiny_runs["asoftmax"]), "--image", str(scan),
            "--coords", ",".join(map(str, dataset.world_center[0]))]
    bad = CliRunner().invoke(app, [*args, "--runtime", "tensorrt"])
    assert bad.exit_code != 0
    assert "unknown runtime 'tensorrt'; valid: torch, onnx, openvino, auto" in bad.output
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the onnx extra were not installed
    missing = CliRunner().invoke(app, [*args, "--runtime", "onnx"])
    assert missing.exit_code != 0 and "Traceback" not in missing.output
    assert "pip install 'naslung[onnx]'" in missing.output and len(missing.output.strip().splitlines()) == 1
    ok = CliRunner().invoke(app, [*args, "--runtime", "torch", "--json"])
    assert ok.exit_code == 0 and len(json.loads(ok.output)["nodules"]) == 1
