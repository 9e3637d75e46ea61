"""Shared helpers of the runtime reliability tests: tiny datasets, CLI runs in and out of process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from naslung.cli.app import app
from naslung.data.dataset import write_dataset

#: The smallest architecture family that trains on 8^3 inputs.
TINY = "[4,4,[4],[4],[4]]"
# The paper recipe (constant lr): its epochs may change on resume, which these tests use.
TRAIN_FAST = ["--recipe", "paper", "--arch", TINY, "--epochs", "2", "--batch", "16", "--lr", "3e-3",
              "--device", "cpu", "--threads", "1"]
SEARCH_FAST = ["--epochs", "1", "--channels", "4,8", "--max-depth", "4", "--latency-samples", "6",
               "--latency-repeats", "1", "--batch-size", "8", "--threads", "1", "--device", "cpu"]


def write_tiny(path: Path, n: int = 40, seed: int = 0, window: tuple[float, float] = (-1000.0, 400.0),
               drop: tuple[str, ...] = ()) -> Path:
    """``n`` cubes of 10^3 (size 8, margin 1) over folds 0-9; malignant = a bright blob. ``drop``: arrays
    left out of the file (writes it with h5py directly then)."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 2).astype(np.uint8)
    images = rng.normal(-800, 30, size=(n, 10, 10, 10))
    images[labels == 1, 3:7, 3:7, 3:7] = 40.0
    arrays = {
        "images": images.astype(np.int16), "labels": labels,
        "fold": ((np.arange(n) // 2) % 10).astype(np.int8),
        "seriesuid": np.array([f"1.2.{seed}.{i}" for i in range(n)]),
        "nodule_id": np.array([f"n{i}" for i in range(n)]), "world_center": np.zeros((n, 3)),
        "diameter_mm": np.where(labels == 1, 9.0, 4.0).astype(np.float32),
        "malignancy_mean": np.where(labels == 1, 4.0, 2.0).astype(np.float32),
        "malignancy_median": np.where(labels == 1, 4.0, 2.0).astype(np.float32),
        "ratings": np.zeros((n, 0), dtype=np.float32), "padded": np.zeros(n, dtype=bool),
    }
    attrs = {"spatial_dims": 3, "size": 8, "margin": 1, "spacing_mm": 1.0, "window": list(window),
             "rating_names": [], "provenance": {"source": "tests/reliability synthetic"}}
    write_dataset(path, arrays, attrs)
    if drop:
        import h5py

        with h5py.File(path, "a") as h5:
            for name in drop:
                del h5[name]
    return path


def cli(*args: object, env: dict[str, str] | None = None) -> object:
    """Run ``naslung ARGS`` in process; returns the click result (stdout and stderr kept apart)."""
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def error_line(result: object) -> str:
    """The single stderr line of a failed command; asserts the CLI-wide error convention."""
    err = result.stderr  # type: ignore[attr-defined]
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)  # type: ignore[attr-defined]
    assert "Traceback" not in result.output, result.output  # type: ignore[attr-defined]
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning:")]
    # progress output may come before it; the error is one line, and the last one
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    return errors[0]


def spawn(*args: object, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """``python -m naslung ARGS`` in a new process (1 torch thread), output discarded."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "naslung", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for(predicate: Callable[[], bool], proc: subprocess.Popen[bytes], timeout: float = 60.0) -> bool:
    """Poll ``predicate`` every 5 ms until it holds (True) or ``proc`` exits / the timeout passes (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        if proc.poll() is not None:
            return predicate()
        time.sleep(0.005)
    return False


def kill9(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL ``proc`` (a process this test started) and reap it."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)
