"""Non-deep baselines, fitted on exactly the rows a CNN run trains on and tested on its test fold.

* ``diameter``: logistic regression on ``diameter_mm`` alone. Size is the strongest single malignancy cue
  in LIDC, so a CNN that does not beat it has not learned much beyond size.
* ``crop-stats``: gradient boosting on a few crop statistics (mean/std/max intensity of the central
  region and the volume above a soft-tissue threshold).

Both are fitted on the *inner training split* of :func:`naslung.train.splits.inner_split`, i.e. the same
patients the CNN trained on. They have no hyperparameters to choose, so the validation split is only
reported, and the test fold is predicted once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from naslung.data.dataset import NoduleDataset
from naslung.train.predictions import Predictions
from naslung.train.splits import Split

BASELINES = ("diameter", "crop-stats")
#: Soft-tissue threshold for the "volume above threshold" feature (HU); nodules are -50..+80 HU when solid.
SOLID_HU = -300.0


@dataclass
class BaselineResult:
    name: str
    val: Predictions
    test: Predictions | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "val_metrics": self.val.metrics(),
                "test_metrics": self.test.metrics() if self.test is not None else None}


def diameter_features(dataset: NoduleDataset) -> np.ndarray:
    """``(N, 1)`` diameter in mm."""
    return np.asarray(dataset.diameter_mm, dtype=np.float64).reshape(-1, 1)


def crop_stats_features(dataset: NoduleDataset) -> np.ndarray:
    """``(N, 5)``: mean, std and max of the central ``size/2`` region, the share of that region above
    ``SOLID_HU``, and the share of the whole model window above it (a volume proxy)."""
    images = dataset.images
    n, d = images.shape[0], images.ndim - 1
    side, size = images.shape[-1], dataset.size
    lo, hi = (float(v) for v in dataset.attrs.get("window", (-1000.0, 400.0)))
    thr = (SOLID_HU - lo) / (hi - lo)  # images are scaled to [0, 1] over the window
    inner = max(1, size // 2)
    a = (side - inner) // 2
    core = images[(slice(None), *([slice(a, a + inner)] * d))].reshape(n, -1)
    b = (side - size) // 2
    window = images[(slice(None), *([slice(b, b + size)] * d))].reshape(n, -1)
    return np.stack([core.mean(1), core.std(1), core.max(1), (core > thr).mean(1), (window > thr).mean(1)],
                    axis=1).astype(np.float64)


def fit_baseline(name: str, dataset: NoduleDataset, split: Split, seed: int = 0) -> BaselineResult:
    """Fit baseline ``name`` on ``split.train``; predict ``split.val`` and (if any) ``split.test``."""
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if name == "diameter":
        x = diameter_features(dataset)
        model = make_pipeline(StandardScaler(), LogisticRegression())
    elif name == "crop-stats":
        x = crop_stats_features(dataset)
        model = GradientBoostingClassifier(n_estimators=100, max_depth=2, random_state=seed)
    else:
        raise ValueError(f"unknown baseline {name!r}; valid: {', '.join(BASELINES)}")
    y = np.asarray(dataset.labels, dtype=np.int64)
    if np.unique(y[split.train]).size < 2:
        raise ValueError("baseline needs both classes in the training split")
    model.fit(x[split.train], y[split.train])

    def predict(rows: np.ndarray) -> Predictions:
        return Predictions(
            nodule_id=np.asarray(dataset.nodule_id[rows]).astype(str),
            seriesuid=np.asarray(dataset.seriesuid[rows]).astype(str),
            fold=np.asarray(dataset.fold[rows], dtype=np.int64), label=y[rows],
            prob=model.predict_proba(x[rows])[:, 1].astype(np.float64))

    return BaselineResult(name=name, val=predict(split.val),
                          test=predict(split.test) if split.test.size else None)
