"""``benchmarks/gpu_check.py --device cpu --quick`` runs on torch and numpy alone and reports sane figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
#: What the GPU machine lacks (and more): the script must run without any of them.
MISSING = ("SimpleITK", "pylidc", "ray", "platformdirs", "typer", "rich", "pandas", "scipy", "matplotlib",
           "onnx", "onnxruntime")
#: Runs a script with the packages of MISSING hidden from every import finder, as if not installed.
HIDE = """
import runpy, sys
missing = set(sys.argv[1].split(","))
class Hide:
    def __init__(self, inner):
        self.inner = inner
    def find_spec(self, name, path=None, target=None):
        return None if name.split(".")[0] in missing else self.inner.find_spec(name, path, target)
    def __getattr__(self, attr):
        return getattr(self.inner, attr)
sys.meta_path[:] = [Hide(f) if hasattr(f, "find_spec") else f for f in sys.meta_path]
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
def test_gpu_check_quick_on_cpu_without_optional_packages() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-c", HIDE, ",".join(MISSING), str(ROOT / "benchmarks" / "gpu_check.py"),
           "--device", "cpu", "--quick", "--archs", "[4,4,[4],[4],[8]]", "[4,4,[8],[8,16],[16]]", "--json"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert f"torch {torch.__version__}" in out and "device:" in out
    report = json.loads(out.strip().splitlines()[-1])["report"]
    assert list(report) == ["[4,4,[4],[4],[8]]", "[4,4,[8],[8,16],[16]]"]
    for figures in report.values():
        train = figures["train"]
        assert list(train) == ["eager", "cl", "amp", "amp+cl"] and train["eager"]["vs_eager"] == 1.0
        assert all(v["samples_per_s"] > 0 for v in train.values())
        dev = figures["deviation"]
        assert dev["amp"] == {**dev["amp"], "features": 0.0, "loss": 0.0, "grads": 0.0}  # amp is CUDA-only
        assert dev["cl"]["features"] < 1e-4 and dev["cl"]["grads"] < 1e-3
        inf = figures["inference"]
        assert inf["eval_model_max_abs_logit_diff"] < 1e-4
        assert inf["eval_model"]["batch1_ms"] > 0 and inf["eval_model"]["nodules_per_s"] > 0
