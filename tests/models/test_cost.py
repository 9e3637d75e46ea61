"""Cost measures: parameter count, hand-computed MACs and activation bytes, cached latency."""

from __future__ import annotations

import json

import pytest
import torch

from naslung.models import MODEL_1, build_model
from naslung.models.cost import activation_bytes, count_macs, count_parameters, profile
from naslung.models.latency import LATENCY_SCHEMA, measure_latency, time_forward
from naslung.models.machine import cpu_isa, device_name

SMALL = "[4,4,[4],[4],[8]]"


def test_count_parameters():
    assert count_parameters(build_model(MODEL_1)) == 15846
    model = build_model(SMALL, spatial_dims=2)
    model.head.weight.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == count_parameters(model) - 16


def test_macs_and_bytes_by_hand_2d():
    # [4,4,[4],[4],[8]], 2-D, 16x16, no attention, linear head; conv MACs = out_pixels * C_out * C_in * k^2
    model = build_model(SMALL, attention="none", head="linear", spatial_dims=2)
    stage1 = 16 * 16 * 4 * 1 * 9
    stage2 = 16 * 16 * 4 * 4 * 9
    stage3 = 8 * 8 * (4 * 4 * 9 + 4 * 4 * 9 + 4 * 4)  # stride-2 block: conv1, conv2, 1x1 projection
    stage4 = 4 * 4 * (4 * 4 * 9 + 4 * 4 * 9 + 4 * 4)
    stage5 = 2 * 2 * (8 * 4 * 9 + 8 * 8 * 9 + 8 * 4)
    head = 2 * 8
    assert count_macs(model, (1, 1, 16, 16)) == stage1 + stage2 + stage3 + stage4 + stage5 + head == 74000
    assert count_macs(model, (3, 1, 16, 16)) == 3 * 74000
    floats = 2 * 16 * 16 * 4 + 3 * 8 * 8 * 4 + 3 * 4 * 4 * 4 + 3 * 2 * 2 * 8
    assert activation_bytes(model, (1, 1, 16, 16)) == 4 * floats

    # CBAM adds its MLP (run twice: avg and max descriptors) and its 7x7 spatial conv (2 -> 1 channel)
    def cbam(c: int, pixels: int) -> int:
        hidden = max(1, c // 4)
        return 2 * (c * hidden + hidden * c) + pixels * 2 * 49

    with_cbam = build_model(SMALL, attention="cbam", head="linear", spatial_dims=2)
    extra = cbam(4, 256) + cbam(4, 64) + cbam(4, 16) + cbam(8, 4)
    assert count_macs(with_cbam, (1, 1, 16, 16)) == 74000 + extra
    assert activation_bytes(with_cbam, (1, 1, 16, 16)) == 4 * (floats + 256 + 64 + 16 + 4)


def test_profile_leaves_the_model_alone():
    model = build_model(SMALL, spatial_dims=2).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = profile(model, (2, 1, 16, 16))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert out["params"] == count_parameters(model)
    with pytest.raises(ValueError, match="input_shape"):
        profile(model, (1, 16, 16))


def test_measure_latency_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("NASLUNG_CACHE", str(tmp_path))
    threads = torch.get_num_threads()
    args = {"spatial_dims": 2, "input_size": 16, "warmup": 1, "repeats": 3}
    first = measure_latency(SMALL, threads=1, **args)
    assert torch.get_num_threads() == threads
    assert not first["cached"] and first["median_ms"] > 0
    assert first["throughput_per_s"] == pytest.approx(1000 / first["median_ms"])
    assert first["key"]["threads"] == 1 and first["key"]["spec"] == SMALL
    assert first["key"]["torch"] == torch.__version__
    files = list((tmp_path / "latency").glob("*.json"))
    assert len(files) == 1
    assert json.loads(files[0].read_text())["schema"] == LATENCY_SCHEMA == "naslung-latency/12"
    again = measure_latency(SMALL, threads=1, **args)
    assert again["cached"] and again["median_ms"] == first["median_ms"]
    # the key names the machine; the record keeps the load at measurement time
    assert first["key"]["device"] == device_name("cpu") and first["key"]["isa"] == cpu_isa()
    assert first["key"]["cbam_kernel"] == 7
    assert first["load_1min"] is None or first["load_1min"] >= 0
    # use_cache=False measures without touching the cache; refresh=True measures and replaces it
    assert not measure_latency(SMALL, threads=1, use_cache=False, **args)["cached"]
    assert json.loads(files[0].read_text())["result"]["median_ms"] == first["median_ms"]
    fresh = measure_latency(SMALL, threads=1, refresh=True, **args)
    assert not fresh["cached"]
    stored = json.loads(files[0].read_text())["result"]
    assert stored["measured_at"] == fresh["measured_at"] and stored["median_ms"] == fresh["median_ms"]
    assert measure_latency(SMALL, threads=1, **args)["median_ms"] == fresh["median_ms"]
    assert not measure_latency(SMALL, threads=1, cbam_kernel=3, **args)["cached"]  # another model
    folded = measure_latency(SMALL, threads=1, path="folded", **args)  # the serving path is another key
    assert not folded["cached"] and folded["key"]["path"] == "folded" and folded["median_ms"] > 0
    # another batch size is another key; a damaged entry is measured again
    b4 = measure_latency(SMALL, threads=1, batch_size=4, **args)
    assert not b4["cached"] and b4["per_sample_ms"] == pytest.approx(b4["median_ms"] / 4)
    files[0].write_text("{not json")
    assert not measure_latency(SMALL, threads=1, **args)["cached"]


def test_latency_bad_arguments():
    with pytest.raises(ValueError, match="repeats"):
        time_forward(build_model(SMALL, spatial_dims=2), torch.zeros(1, 1, 16, 16), repeats=0)
    with pytest.raises(ValueError, match="batch_size"):
        measure_latency(SMALL, batch_size=0, use_cache=False)
    with pytest.raises(ValueError, match="eager, folded"):
        measure_latency(SMALL, path="onnx", use_cache=False)
