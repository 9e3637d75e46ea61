"""Suite-wide set-up: never touch the user's real cache (every test run gets a private one, and the fused
kernels one shared build folder); the shared
tiny-run helpers of the explain, predict and report tests."""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
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
