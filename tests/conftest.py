"""Suite-wide set-up: never touch the user's real cache (every test run gets a private one, and the fused
kernels one shared build folder); the shared
tiny-run helpers of the explain, predict and report tests."""

from __future__ import annotations

import importlib.util
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import matplotlib
import pytest

matplotlib.use("Agg")

if "NASLUNG_CACHE" not in os.environ or not os.environ.get("NASLUNG_TEST_KEEP_CACHE"):
    os.environ["NASLUNG_CACHE"] = tempfile.mkdtemp(prefix="naslung-test-cache-")
# The fused kernels' builds depend only on their source, flags and torch: one shared folder, so that every
# test (and every worker process a test starts, whatever cache it sets) loads one build, not a new compile.
_USER = os.getuid() if hasattr(os, "getuid") else 0
os.environ.setdefault("NASLUNG_KERNEL_CACHE",
                      str(Path(tempfile.gettempdir()) / f"naslung-test-kernels-{_USER}"))


def explain_helpers() -> ModuleType:
    """``tests/explain/explain_helpers.py`` (tiny datasets and trained runs), imported once by path.

    Registered as ``explain_helpers``, the name the explain tests import it by, so there is one copy.
    """
    if "explain_helpers" not in sys.modules:
        path = Path(__file__).resolve().parent / "explain" / "explain_helpers.py"
        spec = importlib.util.spec_from_file_location("explain_helpers", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["explain_helpers"] = module
        spec.loader.exec_module(module)
    return sys.modules["explain_helpers"]


@pytest.fixture(scope="session")
def helpers() -> ModuleType:
    """:func:`explain_helpers`, for the explain, predict and report tests."""
    return explain_helpers()


#: torch and oneDNN dispatch as on an AVX2-only CPU under these (they must be set before torch loads).
AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


@pytest.fixture
def rerun_under_avx2() -> Callable[[str, str], None]:
    """``rerun(test_file, k)``: rerun the tests of ``test_file`` that ``-k k`` selects in a child pytest
    under AVX2 dispatch, and require that they pass and none is skipped. A default fast path must be tested
    on the CPUs that run it. Skips where the process already runs capped, or off x86-64."""
    if os.environ.get("ATEN_CPU_CAPABILITY") == "avx2" or platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("already under AVX2 dispatch, or not an x86-64 CPU")

    def rerun(test_file: str, k: str) -> None:
        out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test_file,
                              "-k", k], capture_output=True, text=True, env={**os.environ, **AVX2_ENV},
                             timeout=600)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
        assert "passed" in out.stdout and "skipped" not in out.stdout.split("\n")[-2]

    return rerun
