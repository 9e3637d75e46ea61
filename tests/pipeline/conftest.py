"""A tiny phantom-like crop dataset file for the pipeline tests (separable balls over folds 0-9)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from naslung.data.dataset import write_dataset

WINDOW = (-1000.0, 400.0)


def write_phantom_like(path: Path, n: int = 120, size: int = 16, margin: int = 2, seed: int = 0) -> Path:
    """Malignant = large bright ball, benign = small dim ball; two nodules per scan, scans over folds 0-9.

    The provenance marks it as phantom data (as ``naslung data prepare`` does for the LIDC phantom), so the
    report and the search label it as such.
    """
    rng = np.random.default_rng(seed)
    side = size + 2 * margin
    grid = np.stack(np.meshgrid(*([np.arange(side)] * 3), indexing="ij"), axis=0).astype(np.float32)
    labels = (np.arange(n) % 2).astype(np.uint8)
    rng.shuffle(labels)
    images = np.empty((n, side, side, side), dtype=np.float32)
    for i in range(n):
        centre = side / 2 - 0.5 + rng.uniform(-1, 1, size=3)
        r = np.sqrt(((grid - centre.reshape(3, 1, 1, 1)) ** 2).sum(0))
        radius, level = (5.0, 0.8) if labels[i] else (2.0, 0.45)
        images[i] = 0.1 + (level - 0.1) * (r <= radius) + rng.normal(0, 0.03, size=r.shape)
    lo, hi = WINDOW
    arrays = {
        "images": np.round(lo + np.clip(images, 0, 1) * (hi - lo)).astype(np.int16),
        "labels": labels,
        "fold": np.array([(i // 2) % 10 for i in range(n)], dtype=np.int8),
        "seriesuid": np.array([f"1.2.3.{i // 2}" for i in range(n)]),
        "nodule_id": np.array([f"n{i:04d}" for i in range(n)]),
        "world_center": np.zeros((n, 3)),
        # A diameter is never negative (the dataset validator refuses one): the noise is folded at 0.
        "diameter_mm": np.abs(np.where(labels == 1, 10.0, 4.0) + rng.normal(0, 2.5, n)).astype(np.float32),
        "malignancy_mean": np.where(labels == 1, 4.0, 2.0).astype(np.float32),
        "malignancy_median": np.where(labels == 1, 4.0, 2.0).astype(np.float32),
        "ratings": np.zeros((n, 0), dtype=np.float32),
        "padded": np.zeros(n, dtype=bool),
    }
    provenance = {"source": "tests/pipeline synthetic", "phantom": {"seed": seed, "version": "test"}}
    attrs = {"spatial_dims": 3, "size": size, "margin": margin, "spacing_mm": 1.0, "window": list(WINDOW),
             "rating_names": [], "provenance": provenance}
    return write_dataset(path, arrays, attrs)


@pytest.fixture(scope="session")
def phantom_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_phantom_like(tmp_path_factory.mktemp("pipeline-data") / "tiny.h5")
