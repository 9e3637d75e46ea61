"""Shared fixtures for the search tests: a small space, a private cache, a tiny crop dataset file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from naslung.search.space import SearchSpace

#: A space small enough to enumerate relations exhaustively (1,049 architectures).
SMALL = {"channels": (4, 8, 16, 32), "depth_range": (3, 6)}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Latency caches go to a temporary folder, never the user's cache."""
    monkeypatch.setenv("NASLUNG_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def small_space() -> SearchSpace:
    return SearchSpace(**SMALL)


def write_tiny_dataset(path: Path, n: int = 40, size: int = 16, margin: int = 2, seed: int = 0) -> Path:
    """A synthetic ``naslung-crops`` file: ``n`` cubes over folds 0-9, bright blobs when malignant."""
    from naslung.data.dataset import write_dataset

    rng = np.random.default_rng(seed)
    side = size + 2 * margin
    labels = np.arange(n) % 2
    images = rng.normal(-800, 30, size=(n, side, side, side))
    c = side // 2
    images[labels == 1, c - 3 : c + 3, c - 3 : c + 3, c - 3 : c + 3] = 40.0
    arrays = {
        "images": images.astype(np.int16),
        "labels": labels.astype(np.uint8),
        "fold": (np.arange(n) % 10).astype(np.int8),
        "seriesuid": np.array([f"1.2.3.{i}" for i in range(n)]),
        "nodule_id": np.array([f"n{i}" for i in range(n)]),
        "world_center": np.zeros((n, 3)),
        "diameter_mm": np.full(n, 6.0, dtype=np.float32),
        "malignancy_mean": np.where(labels == 1, 4.0, 2.0).astype(np.float32),
        "malignancy_median": np.where(labels == 1, 4.0, 2.0).astype(np.float32),
        "ratings": np.zeros((n, 0), dtype=np.float32),
        "padded": np.zeros(n, dtype=bool),
    }
    attrs = {
        "spatial_dims": 3,
        "size": size,
        "margin": margin,
        "spacing_mm": 1.0,
        "window": [-1000, 400],
        "rating_names": [],
        "provenance": {"source": "tests/search synthetic"},
    }
    return write_dataset(path, arrays, attrs)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("data") / "tiny.h5")
