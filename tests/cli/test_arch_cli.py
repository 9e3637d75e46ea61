"""`naslung arch info|check` through Typer's CliRunner."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from naslung.cli.arch import app

runner = CliRunner()
SMALL = "[4,4,[4],[4],[8]]"
BIG = "[4,4,[64,64,64],[128,128,256],[256,256,256,512]]"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NASLUNG_CACHE", str(tmp_path))


def test_info_json_is_one_object():
    args = ["info", SMALL, "--dims", "2", "--size", "16", "--repeats", "2", "--threads", "1", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    for key in ("params", "macs", "latency_ms_b1", "throughput_per_s", "spec", "in_search_space"):
        assert key in record
    assert record["spec"] == SMALL and record["in_search_space"] is True
    assert record["params"] > 0 and record["macs"] > 0 and record["latency_ms_b1"] > 0
    assert record["threads"] == 1


@pytest.mark.slow
def test_info_table():
    result = runner.invoke(app, ["info", SMALL, "--dims", "2", "--size", "16", "--repeats", "2"])
    assert result.exit_code == 0, result.output
    assert "parameters" in result.stdout and "throughput" in result.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["info", "[4,4,[4,x],[4],[8]]"], "'x'"),
        (["info", SMALL, "--attention", "se"], "cbam, cbam-spatial-first, none"),
        (["info", SMALL, "--size", "20"], "multiple of 8"),
    ],
)
def test_info_bad_arguments(args: list[str], fragment: str):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    # rich wraps the message inside a box: compare without whitespace and box-drawing characters
    def squash(s: str) -> str:
        return "".join(ch for ch in s if not ch.isspace() and ch not in "│╭╮╰╯─")

    assert squash(fragment) in squash(result.output)


def test_check():
    inside = runner.invoke(app, ["check", "[4,4,[4,4],[4,8],[8,8]]"])
    assert inside.exit_code == 0 and "in the search space" in inside.stdout
    outside = runner.invoke(app, ["check", BIG])
    assert outside.exit_code == 1
    assert "channel set" in outside.stdout and "depth" in outside.stdout
    as_json = runner.invoke(app, ["check", BIG, "--json"])
    record = json.loads(as_json.stdout)
    assert record["in_search_space"] is False and len(record["violations"]) == 2
