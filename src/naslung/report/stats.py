"""Uncertainty and calibration of per-nodule predictions, as a radiology-AI reviewer expects them.

* **95 % bootstrap CIs grouped by scan**: nodules of one scan are correlated, so the bootstrap draws whole
  scans (``seriesuid``) with replacement and keeps all their nodules (a cluster bootstrap); percentile
  intervals over ``n_boot`` replicates.
* **Paired bootstrap** of a model against a reference (the diameter baseline) on the same nodules: each
  replicate draws the same scans for both, so the interval is on the *difference*; the two-sided p-value
  is twice the share of replicates on the far side of zero (at least ``1 / n_boot``).
* **Calibration**: reliability diagram over ``bins`` equal-width probability bins and the expected
  calibration error ``ECE = sum_b (n_b / N) |mean(y)_b - mean(p)_b|``.

Metrics are those of :func:`naslung.metrics.binary_metrics` (eq. 8-11 and AUC), at threshold 0.5; a
metric undefined in a replicate (no positive drawn, say) is left out of that metric's interval.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

METRICS = ("accuracy", "sensitivity", "specificity", "f1", "auc")


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    """Mann-Whitney AUC (ties count half); nan with one class."""
    from scipy.stats import rankdata

    n1 = int(y.sum())
    n0 = y.size - n1
    if n1 == 0 or n0 == 0:
        return math.nan
    ranks = rankdata(p)
    return float((ranks[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def metric_values(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """The ``METRICS`` of labels ``y`` and probabilities ``p`` (threshold 0.5), nan where undefined."""
    y = np.asarray(y, dtype=np.int64)
    pred = np.asarray(p) >= 0.5
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    tn = int(np.sum(~pred & (y == 0)))

    def ratio(a: int, b: int) -> float:
        return a / b if b else math.nan

    return {"accuracy": ratio(tp + tn, y.size), "sensitivity": ratio(tp, tp + fn),
            "specificity": ratio(tn, tn + fp), "f1": ratio(2 * tp, 2 * tp + fp + fn), "auc": _auc(y, p)}


def _group_index(groups: np.ndarray) -> list[np.ndarray]:
    _, inverse = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    return [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)] if inverse.size else []


def _replicates(groups: np.ndarray, n_boot: int, seed: int) -> list[np.ndarray]:
    """Row indices of ``n_boot`` cluster-bootstrap samples (whole groups drawn with replacement)."""
    members = _group_index(groups)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(members), len(members))
        out.append(np.concatenate([members[g] for g in pick]))
    return out


def _interval(values: list[float], alpha: float) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan
    return float(np.quantile(v, alpha / 2)), float(np.quantile(v, 1 - alpha / 2))


def bootstrap_ci(y: np.ndarray, p: np.ndarray, groups: np.ndarray, n_boot: int = 1000, seed: int = 0,
                 alpha: float = 0.05) -> dict[str, dict[str, float]]:
    """``{metric: {"value", "lo", "hi"}}``: point estimate and scan-grouped percentile CI."""
    y, p = np.asarray(y, dtype=np.int64), np.asarray(p, dtype=np.float64)
    point = metric_values(y, p)
    reps = [metric_values(y[idx], p[idx]) for idx in _replicates(groups, n_boot, seed)]
    out = {}
    for m in METRICS:
        lo, hi = _interval([r[m] for r in reps], alpha)
        out[m] = {"value": point[m], "lo": lo, "hi": hi}
    return out


def paired_bootstrap(y: np.ndarray, p_model: np.ndarray, p_ref: np.ndarray, groups: np.ndarray,
                     n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
                     metrics: tuple[str, ...] = METRICS) -> dict[str, dict[str, float]]:
    """``{metric: {"diff", "lo", "hi", "p"}}`` of model minus reference on the same nodules and replicates."""
    y = np.asarray(y, dtype=np.int64)
    a, b = np.asarray(p_model, dtype=np.float64), np.asarray(p_ref, dtype=np.float64)
    if not (a.shape == b.shape == y.shape):
        raise ValueError(f"paired bootstrap needs aligned arrays, got {y.shape}, {a.shape}, {b.shape}")
    ma, mb = metric_values(y, a), metric_values(y, b)
    diffs: dict[str, list[float]] = {m: [] for m in metrics}
    for idx in _replicates(groups, n_boot, seed):
        ra, rb = metric_values(y[idx], a[idx]), metric_values(y[idx], b[idx])
        for m in metrics:
            diffs[m].append(ra[m] - rb[m])
    out = {}
    for m in metrics:
        lo, hi = _interval(diffs[m], alpha)
        d = np.asarray(diffs[m])
        d = d[np.isfinite(d)]
        pval = math.nan
        if d.size:
            pval = min(1.0, max(2 * min(np.mean(d <= 0), np.mean(d >= 0)), 1 / d.size))
        out[m] = {"diff": ma[m] - mb[m], "lo": lo, "hi": hi, "p": float(pval)}
    return out


def reliability(y: np.ndarray, p: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Reliability diagram data and ECE: ``{"ece", "bins": [{"lo", "hi", "n", "mean_prob", "frac_pos"}]}``."""
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1], right=False), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        sel = which == b
        n = int(sel.sum())
        mean_p = float(p[sel].mean()) if n else math.nan
        frac = float(y[sel].mean()) if n else math.nan
        if n:
            ece += n / max(y.size, 1) * abs(frac - mean_p)
        rows.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": n, "mean_prob": mean_p,
                     "frac_pos": frac})
    return {"ece": float(ece) if y.size else math.nan, "bins": rows, "n": int(y.size)}


def summarize(y: np.ndarray, p: np.ndarray, groups: np.ndarray, n_boot: int, seed: int,
              ref: np.ndarray | None = None) -> dict[str, Any]:
    """CIs, calibration and (with ``ref``) the paired comparison of one set of predictions."""
    out: dict[str, Any] = {"n": int(np.size(y)), "scans": len(set(np.asarray(groups).astype(str).tolist())),
                           "ci": bootstrap_ci(y, p, groups, n_boot, seed), "calibration": reliability(y, p)}
    if ref is not None:
        out["vs_reference"] = paired_bootstrap(y, p, ref, groups, n_boot, seed)
    return out
