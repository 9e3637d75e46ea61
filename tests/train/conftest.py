"""Tiny, clearly separable synthetic nodule datasets for the training tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from naslung.data.dataset import NoduleDataset, write_dataset
from naslung.train.config import PAPER_RECIPE, TrainConfig

WINDOW = (-1000.0, 400.0)


def synthetic_dataset(n: int = 120, size: int = 16, margin: int = 2, dims: int = 3, seed: int = 0,
                      folds: int = 10) -> NoduleDataset:
    """Malignant = large bright ball, benign = small dim ball, on a noisy dark background.

    Two nodules per scan (``seriesuid``), scans spread round-robin over ``folds`` folds.
    """
    rng = np.random.default_rng(seed)
    side = size + 2 * margin
    grid = np.stack(np.meshgrid(*([np.arange(side)] * dims), indexing="ij"), axis=0).astype(np.float32)
    labels = (np.arange(n) % 2).astype(np.uint8)
    rng.shuffle(labels)
    images = np.empty((n, *([side] * dims)), dtype=np.float32)
    for i in range(n):
        centre = side / 2 - 0.5 + rng.uniform(-1, 1, size=dims)
        r = np.sqrt(((grid - centre.reshape(-1, *([1] * dims))) ** 2).sum(0))
        radius, level = (5.0, 0.8) if labels[i] else (2.0, 0.45)
        images[i] = 0.1 + (level - 0.1) * (r <= radius) + rng.normal(0, 0.03, size=r.shape)
    np.clip(images, 0, 1, out=images)
    series = np.array([f"1.2.3.{i // 2}" for i in range(n)])
    fold = np.array([(i // 2) % folds for i in range(n)], dtype=np.int8)
    return NoduleDataset(
        images=images, labels=labels, fold=fold, seriesuid=series,
        nodule_id=np.array([f"n{i:04d}" for i in range(n)]),
        world_center=np.zeros((n, 3)), diameter_mm=np.where(labels == 1, 10.0, 4.0).astype(np.float32)
        + rng.normal(0, 2.5, n).astype(np.float32),
        malignancy_mean=np.where(labels == 1, 4.0, 2.0).astype(np.float32),
        malignancy_median=np.where(labels == 1, 4.0, 2.0).astype(np.float32),
        ratings=np.zeros((n, 0), dtype=np.float32), padded=np.zeros(n, dtype=bool),
        attrs={"size": size, "margin": margin, "spatial_dims": dims, "window": list(WINDOW)},
    )


def write_synthetic(path: Path, **kwargs) -> Path:
    """Write :func:`synthetic_dataset` as a dataset file (int16 HU)."""
    ds = synthetic_dataset(**kwargs)
    lo, hi = WINDOW
    arrays = {name: getattr(ds, name) for name in (
        "labels", "fold", "seriesuid", "nodule_id", "world_center", "diameter_mm", "malignancy_mean",
        "malignancy_median", "ratings", "padded")}
    arrays["images"] = np.round(lo + ds.images * (hi - lo)).astype(np.int16)
    arrays["diameter_mm"] = np.abs(arrays["diameter_mm"])  # a file never holds a negative diameter
    attrs = {"spatial_dims": ds.spatial_dims, "size": ds.size, "margin": ds.margin, "spacing_mm": 1.0,
             "window": list(WINDOW), "rating_names": [], "provenance": {"source": "synthetic test"}}
    return write_dataset(path, arrays, attrs)


@pytest.fixture(scope="session")
def dataset3d() -> NoduleDataset:
    return synthetic_dataset()


@pytest.fixture(scope="session")
def dataset2d() -> NoduleDataset:
    return synthetic_dataset(dims=2, n=160)


TINY = "[4,4,[4],[4],[8]]"


def tiny(**kw) -> TrainConfig:
    # The engine's mechanics on a tiny problem: the paper's plain recipe (with the run-length lambda
    # schedule) learns it in a few steps; the full recipe is exercised in test_recipe.py.
    base = {**PAPER_RECIPE, "lambda_schedule": "run", "arch": TINY, "epochs": 2, "batch_size": 16, "lr": 3e-3,
            "device": "cpu", "num_threads": 1}
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def separable():
    return synthetic_dataset(n=120, folds=4, seed=1)
