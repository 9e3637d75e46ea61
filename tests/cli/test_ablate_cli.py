"""`naslung ablate`: tables printed and written, --jobs 2 equals a serial run, one-line errors (exit 2)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from naslung.cli.app import app

ARCH = "[4,4,[4],[4],[8]]"
runner = CliRunner()


def _write_synthetic(path: Path) -> Path:
    """``tests/train/conftest.py::write_synthetic`` (test folders are not packages)."""
    name = "naslung_test_train_synth"
    if name not in sys.modules:
        helper = Path(__file__).parents[1] / "train" / "conftest.py"
        spec = importlib.util.spec_from_file_location(name, helper)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name].write_synthetic(path, n=80, folds=4, seed=4)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_synthetic(tmp_path_factory.mktemp("ablate_cli") / "data.h5")


def _fold_rows(result: dict) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in result["per_fold"]]


@pytest.mark.slow
def test_ablate_prints_tables_and_parallel_jobs_match_serial(data, tmp_path):
    serial = runner.invoke(app, ["ablate", "--data", str(data), "--archs", ARCH, "--folds", "0",
                                 "--epochs", "1", "--threads", "1", "--out", str(tmp_path / "serial")],
                           env={"COLUMNS": "200"})
    assert serial.exit_code == 0, serial.output
    assert "Table 2 analogue" in serial.stdout and "Table 3 analogue" in serial.stdout
    assert "NAS+CBAM+A-Softmax" in serial.stdout and "PHANTOM" not in serial.stdout
    assert (tmp_path / "serial" / "ablation.md").exists()

    parallel = runner.invoke(app, ["ablate", "--data", str(data), "--archs", ARCH, "--folds", "0", "--epochs",
                                   "1", "--jobs", "2", "--out", str(tmp_path / "parallel"), "--json"])
    assert parallel.exit_code == 0, parallel.output
    result = json.loads(parallel.stdout)
    assert result["schema"] == "naslung-ablation" and result["phantom"] is False
    assert all(c["num_threads"] == 1 for c in result["configs"].values())
    saved = json.loads((tmp_path / "serial" / "ablation.json").read_text(encoding="utf-8"))
    assert _fold_rows(result) == _fold_rows(saved)


@pytest.mark.parametrize("args, message", [
    (["--archs", "[4,4,[4],[4]"], "--archs"),
    (["--archs", ARCH, "[4,4,x]"], "--archs"),
    ([], "--archs: no architecture given"),
    (["--archs", ARCH, "--folds", "0,7"], "--folds: folds [7]"),
    (["--archs", ARCH, "--folds", "a"], "--folds"),
    (["--archs", ARCH, "--threads", "0"], "--threads"),
])
def test_ablate_errors_are_one_line(data, tmp_path, args, message):
    result = runner.invoke(app, ["ablate", "--data", str(data), "--out", str(tmp_path / "out"), *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
    assert not (tmp_path / "out").exists()
