"""Fixtures of the report tests: a small experiment folder (two runs, a cv folder, explain outputs)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest


def _small_png(path: Path, text: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.text(0.5, 0.5, text, ha="center")
    fig.savefig(path)
    plt.close(fig)


@pytest.fixture(scope="session")
def experiment(tmp_path_factory: pytest.TempPathFactory, helpers) -> Path:
    """``exp/members/run_{asoftmax,softmax}`` (fold 0), ``exp/cv_a`` (fold 0), explain and figure files."""
    from naslung.data.dataset import load_dataset
    from naslung.train.cv import run_cv

    h = helpers
    root = tmp_path_factory.mktemp("report") / "exp"
    runs = h.make_runs(root / "members")
    run_cv(load_dataset(runs["data"]), h.tiny_config(seed=1), [0], root / "cv_a", source=str(runs["data"]))
    explain = root / "explain"
    _small_png(explain / "montage.png", "attention")
    _small_png(explain / "tsne.png", "t-SNE")
    _small_png(explain / "nodules" / "one.png", "nodule")  # per-nodule PNGs are not report figures
    (explain / "dbi.json").write_text(json.dumps([
        {"run": "members/run_asoftmax", "loss": "asoftmax", "features": "raw", "S0": 0.4, "S1": 0.5,
         "M01": 0.7, "DBI": 0.9 / 0.7}]))
    return root


def _install_chromium() -> str | None:
    if shutil.which("apt-get") is None:
        return "apt-get is not available to install Debian's chromium"
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        return "installing chromium with apt-get needs root"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium"], env=env,
                       check=True, capture_output=True, timeout=1200)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        # A stale package list: update once, then try again.
        try:
            subprocess.run(["apt-get", "update"], env=env, check=True, capture_output=True, timeout=600)
            subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium"], env=env,
                           check=True, capture_output=True, timeout=1200)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc2:
            return f"apt-get install chromium failed ({exc}; after apt-get update: {exc2})"
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of a headless-capable Chromium; installs Debian's ``chromium`` when absent, else skips."""
    for name in ("chromium", "chromium-browser"):
        if found := shutil.which(name):
            return found
    reason = _install_chromium()
    found = shutil.which("chromium")
    if found is None:
        pytest.skip(f"headless Chromium unavailable: {reason or 'installed, but not on PATH'}")
    return found


def _run_chromium(binary: str, tmp: Path, url: str, *extra: str,
                  timeout: float = 120) -> subprocess.CompletedProcess:
    """Headless Chromium with a private profile, no network services, no sandbox (containers)."""
    args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp / 'chromium-profile'}", *extra, url]
    return subprocess.run(args, capture_output=True, text=True, encoding="utf-8", errors="replace",
                          timeout=timeout, check=False)


@pytest.fixture(scope="session")
def render(chromium: str):
    """``render(tmp, url, *flags)``: run headless Chromium on ``url`` (e.g. ``--dump-dom``)."""
    return lambda tmp, url, *extra: _run_chromium(chromium, tmp, url, *extra)
