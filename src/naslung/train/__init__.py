"""naslung.train: leak-free training (``fit``), cross-validation and baselines.

``fit(dataset, TrainConfig(...), test_fold=K | None, out_dir=None, resume=False) -> TrainResult``.
"""

from naslung.train.config import TrainConfig
from naslung.train.engine import TrainResult, fit

__all__ = ["TrainConfig", "TrainResult", "fit"]
