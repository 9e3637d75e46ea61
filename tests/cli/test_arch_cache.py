"""`naslung arch info`: the latency cache is read, refreshed by --refresh/--no-cache, keyed by the machine."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from naslung.cli.arch import app
from naslung.models.machine import cpu_isa

runner = CliRunner()
ARGS = ["info", "[4,4,[4],[4],[8]]", "--dims", "2", "--size", "16"]
ARGS += ["--repeats", "2", "--threads", "1", "--json"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NASLUNG_CACHE", str(tmp_path))


def _info(*extra: str) -> dict:
    result = runner.invoke(app, [*ARGS, *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("flag", ["--refresh", "--no-cache"])
def test_refresh_measures_again_and_replaces_the_cached_figure(tmp_path, flag: str):
    first = _info()
    assert not first["cached"] and first["isa"] == cpu_isa()
    assert first["load_1min_at_measurement"] is None or first["load_1min_at_measurement"] >= 0
    second = _info()
    assert second["cached"] and second["latency_ms_b1"] == first["latency_ms_b1"]
    # pretend the cached figure came from a loaded machine
    for f in (tmp_path / "latency").glob("*.json"):
        record = json.loads(f.read_text())
        record["result"]["median_ms"] = 244.0
        f.write_text(json.dumps(record))
    assert _info()["latency_ms_b1"] == 244.0
    fresh = _info(flag)
    assert not fresh["cached"] and fresh["latency_ms_b1"] != 244.0
    after = _info()
    assert after["cached"] and after["latency_ms_b1"] == fresh["latency_ms_b1"]


def test_cbam_kernel_option():
    k7, k3 = _info(), _info("--cbam-kernel", "3")
    assert k7["cbam_kernel"] == 7 and k3["cbam_kernel"] == 3
    assert k7["params"] - k3["params"] == 4 * (7**2 - 3**2) * 2
    assert not k3["cached"]


def test_the_serving_path_is_timed_by_default_and_eager_on_request():
    served, eager = _info(), _info("--path", "eager")
    assert served["path"] == "folded" and eager["path"] == "eager"
    assert not eager["cached"]  # another cache key
    result = runner.invoke(app, [*ARGS, "--path", "fast"])
    assert result.exit_code != 0 and "unknown path" in result.output
