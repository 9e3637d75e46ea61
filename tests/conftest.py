"""Suite-wide set-up: never touch the user's real cache; every test run gets a private one."""

from __future__ import annotations

import os
import tempfile

import matplotlib

matplotlib.use("Agg")

if "NASLUNG_CACHE" not in os.environ or not os.environ.get("NASLUNG_TEST_KEEP_CACHE"):
    os.environ["NASLUNG_CACHE"] = tempfile.mkdtemp(prefix="naslung-test-cache-")
