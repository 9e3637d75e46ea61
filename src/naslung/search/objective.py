"""What one search trial does to one candidate: train it, time it, and return its numbers.

An *evaluator* is a picklable callable ``evaluator(spec, seed) -> dict`` (Ray ships it to its workers). The
returned dict holds:

- ``metrics``: inner-validation metrics (``binary_metrics`` keys; never test metrics);
- ``metrics_ci`` (optional): ``{metric: {"lo", "hi"}}``, the 95 % bootstrap interval of each metric on the
  inner validation split (:func:`score_intervals`); the driver stores the objective's as ``score_ci``;
- ``latency_ms``, ``latency_device``, ``latency_threads``: measured batch-1 latency of the trained model;
- ``params``, ``epochs`` (trained), ``epoch`` (chosen on validation), ``train_seconds``.

:class:`TrainEvaluator` trains with :func:`naslung.train.engine.fit` on the development folds only;
:class:`SyntheticEvaluator` is a fast stand-in (accuracy monotone in width and depth, plus noise) for tests
and for checking POP itself.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from naslung.models.spec import ArchSpec
from naslung.train.config import TrainConfig

#: Test folds of the paper's protocol (section 4.1): the search never looks at them by default.
PAPER_TEST_FOLDS: tuple[int, ...] = (1, 2, 3, 4, 5)
#: What the search times by default: the serving path (:func:`naslung.models.fast.eval_model`, batch norm
#: folded, ``channels_last_3d`` in 3-D), one of :data:`naslung.models.latency.LATENCY_PATHS`.
DEFAULT_LATENCY_PATH = "folded"


#: Bootstrap of the objective's noise (:func:`score_intervals`): percentile interval, replicates, fixed seed.
BOOTSTRAP_LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0


def score_intervals(labels: np.ndarray, prob: np.ndarray, groups: np.ndarray) -> dict[str, dict[str, float]]:
    """``{metric: {"lo", "hi"}}``: 95 % percentile bootstrap intervals of the thresholded validation metrics.

    The inner validation split holds a few dozen to ~150 nodules, so a trial's score is noisy (about +-9
    points of accuracy at 75 nodules); :mod:`naslung.search.select` does not rank trials by differences
    inside it. Whole scans are resampled (``groups``: nodules of one scan are correlated), as in the report's
    intervals (:func:`naslung.report.stats.bootstrap_ci`), with :data:`BOOTSTRAP_RESAMPLES` replicates and
    the fixed :data:`BOOTSTRAP_SEED`: the trials of a search validate on the same nodules, so they are all
    resampled with the same replicates. Vectorised as scan counts per replicate (milliseconds, not seconds).
    Metrics: accuracy, sensitivity, specificity and F1 at the 0.5 threshold (a replicate where one is
    undefined is left out of that one's interval).
    """
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    pred = (np.asarray(prob, dtype=np.float64).reshape(-1) >= 0.5).astype(np.int64)
    _, group = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    n_groups = int(group.max()) + 1 if group.size else 0
    if n_groups == 0:
        return {}
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    picks = rng.integers(0, n_groups, size=(BOOTSTRAP_RESAMPLES, n_groups))
    counts = np.zeros((BOOTSTRAP_RESAMPLES, n_groups))
    np.add.at(counts, (np.arange(BOOTSTRAP_RESAMPLES)[:, None], picks), 1.0)
    weight = counts[:, group]  # (B, N): how often each nodule is drawn in each replicate
    tp, fp = weight @ ((y == 1) & (pred == 1)), weight @ ((y == 0) & (pred == 1))
    tn, fn = weight @ ((y == 0) & (pred == 0)), weight @ ((y == 1) & (pred == 0))
    with np.errstate(invalid="ignore", divide="ignore"):
        values = {"accuracy": (tp + tn) / (tp + fp + tn + fn), "sensitivity": tp / (tp + fn),
                  "specificity": tn / (tn + fp), "f1": 2 * tp / (2 * tp + fp + fn)}
    alpha = 1.0 - BOOTSTRAP_LEVEL
    out = {}
    for name, v in values.items():
        v = v[np.isfinite(v)]
        lo, hi = (np.quantile(v, [alpha / 2, 1 - alpha / 2]) if v.size else (math.nan, math.nan))
        out[name] = {"lo": float(lo), "hi": float(hi)}
    return out


def score_ci_record(metrics_ci: dict[str, Any] | None, metric: str) -> dict[str, Any] | None:
    """The ``score_ci`` entry of a trial record: the objective's interval and how it was computed."""
    ci = (metrics_ci or {}).get(metric)
    if not isinstance(ci, dict) or "lo" not in ci or "hi" not in ci:
        return None
    lo, hi = float(ci["lo"]), float(ci["hi"])
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    return {"lo": lo, "hi": hi, "level": BOOTSTRAP_LEVEL, "resamples": BOOTSTRAP_RESAMPLES,
            "seed": BOOTSTRAP_SEED, "resampled": "scans (seriesuid) of the inner validation split"}


class Evaluator(Protocol):
    """Trains and times one candidate; ``measure`` times an untrained one (latency-model calibration)."""

    size: int | None
    spatial_dims: int | None

    @property
    def options(self) -> dict[str, Any]: ...

    def measure(self, spec: ArchSpec) -> dict[str, Any]: ...

    def device_label(self) -> str: ...

    def __call__(self, spec: ArchSpec, seed: int) -> dict[str, Any]: ...


def development_rows(fold: np.ndarray, exclude_folds: tuple[int, ...]) -> np.ndarray:
    """Boolean mask of the rows the search may use (not in an excluded fold)."""
    return ~np.isin(np.asarray(fold), np.asarray(exclude_folds, dtype=np.int64))


@dataclass
class TrainEvaluator:
    """Train a candidate with the training engine on the development folds and time it.

    The dataset is read from ``data_path`` on first use in each process (Ray workers load it from the file
    rather than receiving arrays through the object store).

    Args:
        data_path: crop dataset file (``naslung-crops``).
        train: the :class:`~naslung.train.config.TrainConfig` every candidate trains with (a dict of its
            fields is accepted); ``arch`` and ``seed`` are replaced per trial.
        exclude_folds: folds removed before training (default: the paper's test folds 1-5).
        latency: options of :func:`naslung.models.latency.measure_latency` (device, threads, warmup, repeats,
            path; the path defaults to :data:`DEFAULT_LATENCY_PATH`).
        size, spatial_dims: model input; read from the dataset attributes when ``None``.
    """

    data_path: str
    train: TrainConfig
    exclude_folds: tuple[int, ...] = PAPER_TEST_FOLDS
    latency: dict[str, Any] = field(default_factory=dict)
    size: int | None = None
    spatial_dims: int | None = None
    _dev: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.train, dict):
            self.train = TrainConfig.from_dict(self.train)
        if self.size is None or self.spatial_dims is None:
            from naslung.data.dataset import read_attrs

            attrs = read_attrs(self.data_path)
            self.size = int(attrs["size"])
            self.spatial_dims = int(attrs["spatial_dims"])

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_dev"] = None  # never pickle the arrays
        return state

    @property
    def options(self) -> dict[str, Any]:
        """The model options that change a candidate's cost and latency: those it trains with. (The
        embedding does not: it only drops one ReLU.)"""
        return {"attention": self.train.attention, "head": self.train.head,
                "cbam_kernel": self.train.cbam_kernel}

    def development_data(self) -> Any:
        """The dataset restricted to the non-excluded folds (cached per process)."""
        if self._dev is None:
            from naslung.data.dataset import load_dataset

            data = load_dataset(self.data_path)
            keep = development_rows(data.fold, self.exclude_folds)
            if keep.sum() < 4:
                raise ValueError(
                    f"{self.data_path}: only {int(keep.sum())} nodules outside the excluded folds "
                    f"{list(self.exclude_folds)}; the search needs development data"
                )
            self._dev = data.subset(np.flatnonzero(keep))
        return self._dev

    def _latency_device(self) -> str:
        import torch

        device = str(self.latency.get("device", "cpu"))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return device

    def device_label(self) -> str:
        """Name of the device latency is measured on (CPU or GPU model)."""
        from naslung.models.machine import device_name

        return device_name(self._latency_device())

    def measure(self, spec: ArchSpec) -> dict[str, Any]:
        """``{"latency_ms", "device", "threads"}``: warmed median batch-1 latency, cached per spec."""
        from naslung.models.latency import measure_latency
        from naslung.models.machine import device_name

        opts = {"path": DEFAULT_LATENCY_PATH, **self.latency}
        opts.pop("device", None)
        device = self._latency_device()
        threads = opts.pop("threads", 1)
        res = measure_latency(
            spec,
            spatial_dims=int(self.spatial_dims or 3),
            input_size=int(self.size or 32),
            device=device,
            threads=threads,
            **self.options,
            **opts,
        )
        return {
            "latency_ms": float(res["median_ms"]),
            "device": device_name(device),
            "threads": int(res["key"]["threads"]),
        }

    def __call__(self, spec: ArchSpec, seed: int) -> dict[str, Any]:
        from naslung.train.engine import fit

        dev = self.development_data()
        config = self.train.replace(arch=str(spec), seed=int(seed))
        t0 = time.perf_counter()
        # test_fold=None: no test fold at all; the engine's inner validation split comes from these folds.
        result = fit(dev, config, test_fold=None)
        seconds = time.perf_counter() - t0
        lat = self.measure(spec)
        val = result.val
        return {
            "metrics": dict(result.val_metrics),
            "metrics_ci": score_intervals(val.label, val.prob, val.seriesuid),
            "latency_ms": lat["latency_ms"],
            "latency_device": lat["device"],
            "latency_threads": lat["threads"],
            "params": int(result.params),
            "epochs": len(result.history),
            "epoch": int(result.epoch),
            "train_seconds": seconds,
        }


@dataclass
class SyntheticEvaluator:
    """A fast, deterministic objective for tests: accuracy grows with width and depth, latency with MACs.

    ``accuracy = 0.5 + 0.45 * (1 - exp(-capacity / scale)) + noise``, where ``capacity`` sums
    ``stage_weight * log2(width / 2)`` over blocks (later stages weigh more), so deleting or narrowing a block
    never raises it: monotone under the partial order when ``noise == 0``. Latency is a linear function of the
    analytic MACs and depth, so it is monotone too but ranks architectures differently (early, high
    resolution stages dominate it), which gives a non-trivial Pareto front.
    """

    noise: float = 0.0
    seed: int = 0
    scale: float = 12.0
    size: int = 32
    spatial_dims: int = 3
    sleep_s: float = 0.0

    def accuracy(self, spec: ArchSpec) -> float:
        cap = sum(
            w * math.log2(c / 2) for w, stage in zip((1.0, 1.5, 2.0), spec.stages, strict=True) for c in stage
        )
        acc = 0.5 + 0.45 * (1.0 - math.exp(-cap / self.scale))
        if self.noise:
            rng = np.random.default_rng([self.seed, *spec.block_widths, *spec.depths])
            acc += self.noise * float(rng.standard_normal())
        return acc

    def latency_ms(self, spec: ArchSpec) -> float:
        from naslung.search.costs import analytic_cost

        cost = analytic_cost(spec, size=self.size, spatial_dims=self.spatial_dims)
        return 0.5 + cost.macs / 2e8 + 0.05 * cost.depth

    @property
    def options(self) -> dict[str, Any]:
        return {"attention": "cbam", "head": "angular"}

    def measure(self, spec: ArchSpec) -> dict[str, Any]:
        return {"latency_ms": self.latency_ms(spec), "device": "synthetic", "threads": 1}

    def device_label(self) -> str:
        return "synthetic"

    def __call__(self, spec: ArchSpec, seed: int) -> dict[str, Any]:
        if self.sleep_s:
            time.sleep(self.sleep_s)
        acc = self.accuracy(spec)
        return {
            # Balanced classes, equal sensitivity and specificity, and an AUC level with them: enough for
            # the selection floor (naslung.search.select) to read; no predictions, hence no interval.
            "metrics": {"accuracy": acc, "f1": acc, "sensitivity": acc, "specificity": acc, "auc": acc},
            "latency_ms": self.latency_ms(spec),
            "latency_device": "synthetic",
            "latency_threads": 1,
            "params": None,
            "epochs": 0,
            "epoch": 0,
            "train_seconds": self.sleep_s,
        }
