"""Latency model: predict the latency of untrained candidates from their analytic cost.

Timing all 42k candidates would take hours on a CPU, so POP's pruning uses a regression fitted on a measured
sample (section 3.4 needs latency for every candidate it compares).

Features (all monotone under the partial order, so predictions respect the POP assumption):
``macs`` and ``activation_bytes``, plus ``depth`` (residual blocks). We add ``depth``
because small 3-D networks on a CPU pay a per-layer dispatch overhead that neither MACs nor bytes capture
(``features`` is configurable). The conv-layer count would capture it better but is not monotone: narrowing a
block can add a 1x1 shortcut conv to the next one.

Kinds: ``linear`` fits ``latency = c0 + sum c_k x_k`` by non-negative least squares (non-negative
coefficients keep the prediction monotone); ``loglinear`` fits ``log latency = c0 + sum c_k log x_k``.
The held-out error (MAPE, R^2) comes from a seeded split; the stored coefficients are then refitted on all
samples.

Cache: a fitted model is stored per calibration context, to which :func:`cached_model` adds the host (CPU
model and instruction-set flags, see :func:`naslung.models.machine.machine_key`); it records the 1-minute load
average before and after the calibration in ``measured``, and ``refresh=True`` calibrates again and replaces
the stored model.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from naslung import schemas
from naslung.options import LATENCY_KINDS as KINDS

FEATURES: tuple[str, ...] = ("macs", "activation_bytes", "depth")
SCHEMA = schemas.LATENCY_MODEL
SCHEMA_VERSION = 2
#: Feature scales so that the least-squares problem is well conditioned (MACs in millions, bytes in MB).
_SCALE = {"macs": 1e6, "activation_bytes": 1e6, "depth": 1.0}


@dataclass
class LatencyModel:
    """A fitted latency predictor with its held-out error and the context it was measured in."""

    kind: str
    features: tuple[str, ...]
    coef: list[float]
    metrics: dict[str, float] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    #: when and under what load the samples were measured: ``load_1min_before/after``, ``measured_at``.
    measured: dict[str, Any] = field(default_factory=dict)

    def predict(self, costs: dict[str, np.ndarray]) -> np.ndarray:
        """Predicted latency in ms for arrays of features ``{name: (S,)}``."""
        x = _design(costs, self.features, self.kind)
        y = x @ np.asarray(self.coef)
        return np.exp(y) if self.kind == "loglinear" else y

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["features"] = list(self.features)
        return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyModel:
        if data.get("schema") != SCHEMA:
            raise ValueError(f"not a latency model record (schema={data.get('schema')!r})")
        return cls(
            kind=data["kind"],
            features=tuple(data["features"]),
            coef=list(data["coef"]),
            metrics=dict(data.get("metrics", {})),
            context=dict(data.get("context", {})),
            samples=list(data.get("samples", [])),
            measured=dict(data.get("measured", {})),
        )

    def save(self, path: str | Path) -> Path:
        from naslung.atomic import write_json_atomic

        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> LatencyModel:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def _design(costs: dict[str, np.ndarray], features: Sequence[str], kind: str) -> np.ndarray:
    cols = [np.asarray(costs[f], dtype=np.float64) / _SCALE.get(f, 1.0) for f in features]
    if kind == "loglinear":
        cols = [np.log(np.maximum(c, 1e-12)) for c in cols]
    return np.column_stack([np.ones_like(cols[0]), *cols])


def _solve(x: np.ndarray, y: np.ndarray, kind: str) -> np.ndarray:
    if kind == "linear":
        from scipy.optimize import nnls

        return nnls(x, y)[0]
    return np.linalg.lstsq(x, np.log(y), rcond=None)[0]


def error_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """MAPE (fraction) and R^2 of predictions."""
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    ss_res = float(((y_true - y_pred) ** 2).sum())
    ss_tot = float(((y_true - y_true.mean()) ** 2).sum())
    return {
        "mape": float(np.mean(np.abs(y_pred - y_true) / y_true)),
        "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
        "n": len(y_true),
    }


def fit_latency_model(
    costs: dict[str, np.ndarray],
    latency_ms: np.ndarray,
    kind: str = "linear",
    features: Sequence[str] = FEATURES,
    test_fraction: float = 0.25,
    seed: int = 0,
) -> LatencyModel:
    """Fit on measured samples; ``metrics`` holds held-out ``mape``/``r2`` and their ``train_*`` twins."""
    if kind not in KINDS:
        raise ValueError(f"unknown latency model kind {kind!r}; valid: {', '.join(KINDS)}")
    unknown = [f for f in features if f not in costs]
    if unknown:
        raise ValueError(f"latency features {unknown} missing; have {sorted(costs)}")
    y = np.asarray(latency_ms, dtype=np.float64)
    if len(y) < len(features) + 2 or np.any(y <= 0):
        raise ValueError(f"need >= {len(features) + 2} positive latency samples, got {len(y)}")
    x = _design(costs, features, kind)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    n_test = max(1, int(round(test_fraction * len(y)))) if len(y) >= len(features) + 4 else 0
    test, train = perm[:n_test], perm[n_test:]
    metrics: dict[str, float] = {}
    if n_test:
        model = LatencyModel(kind, tuple(features), _solve(x[train], y[train], kind).tolist())
        sub = {f: np.asarray(costs[f])[test] for f in features}
        metrics.update(error_metrics(y[test], model.predict(sub)))
    coef = _solve(x, y, kind)
    final = LatencyModel(kind, tuple(features), coef.tolist())
    train_err = error_metrics(y, final.predict({f: np.asarray(costs[f]) for f in features}))
    metrics.update({f"train_{k}": v for k, v in train_err.items()})
    final.metrics = metrics
    return final


def calibration_sample(costs: dict[str, np.ndarray], n: int, seed: int = 0) -> np.ndarray:
    """``n`` indices spread over the range of log MACs: one random pick per equal-count MACs bin.

    Uniform sampling would mostly draw deep, wide networks (they dominate the space); stratifying covers
    the fast end where the front lives.
    """
    macs = np.asarray(costs["macs"], dtype=np.float64)
    order = np.argsort(macs, kind="stable")
    n = min(n, len(order))
    rng = np.random.default_rng(seed)
    bins = np.array_split(order, n)
    return np.array([int(b[rng.integers(len(b))]) for b in bins], dtype=np.int64)


def calibrate(
    costs: dict[str, np.ndarray],
    measure: Callable[[int], float],
    n: int = 40,
    seed: int = 0,
    kind: str = "linear",
    features: Sequence[str] = FEATURES,
    context: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> LatencyModel:
    """Measure ``n`` stratified candidates with ``measure(index) -> ms`` and fit a model on them."""
    idx = calibration_sample(costs, n, seed)
    lat = []
    for k, i in enumerate(idx):
        lat.append(float(measure(int(i))))
        if progress is not None:
            progress(k + 1, len(idx))
    sub = {f: np.asarray(v)[idx] for f, v in costs.items()}
    model = fit_latency_model(sub, np.array(lat), kind=kind, features=features, seed=seed)
    model.context = dict(context or {})
    model.samples = [
        {"index": int(i), "latency_ms": y, **{f: int(sub[f][k]) for f in features}}
        for k, (i, y) in enumerate(zip(idx, lat, strict=True))
    ]
    return model


def cache_key(context: dict[str, Any]) -> str:
    """Stable file stem for a calibration context (device, threads, input size, options, space...)."""
    text = json.dumps(context, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def host_context() -> dict[str, str]:
    """``{"host_cpu", "host_isa"}``: the CPU model and instruction-set flags of this machine.

    Part of every cache key: a latency model fitted on one CPU says little about another, and even a GPU
    timing of these small networks includes the host's dispatch overhead.
    """
    from naslung.models.machine import cpu_isa, device_name

    return {"host_cpu": device_name("cpu"), "host_isa": cpu_isa()}


def cached_model(
    context: dict[str, Any],
    build: Callable[[], LatencyModel],
    cache: Path | None = None,
    refresh: bool = False,
) -> LatencyModel:
    """Load the model fitted for ``context`` (plus :func:`host_context`) from the latency cache, or
    ``build()`` it and store it. ``refresh=True`` always builds and replaces the stored model (to refresh the
    per-candidate timings as well, ``build`` must measure with ``refresh=True`` too)."""
    from naslung.models.machine import load_average

    if cache is None:
        from naslung.paths import cache_dir

        cache = cache_dir("latency")
    full = json.loads(json.dumps({**host_context(), **context}, default=str))
    path = Path(cache) / f"model-{cache_key(full)}.json"
    if path.exists() and not refresh:
        try:
            model = LatencyModel.load(path)
            if model.context == full:
                return model
        except (ValueError, KeyError, json.JSONDecodeError):
            pass  # a corrupt or foreign cache entry is rebuilt
    before = load_average()
    model = build()
    model.context = full
    after = load_average()
    model.measured = {"load_1min_before": before, "load_1min_after": after, "measured_at": time.time()}
    model.save(path)
    return model
