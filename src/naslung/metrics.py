"""Binary classification metrics of NAS-Lung section 4.1.2 (eq. 8-11) plus AUC.

Positive class = 1 (malignant). Rates are fractions in [0, 1]. When a rate's denominator is zero
(e.g. sensitivity on a fold without positives) it is ``nan``, not 0 or 1, so averages over folds
can skip it knowingly; AUC is ``nan`` unless both classes are present and scores are given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

ArrayLike = Sequence[Any] | np.ndarray


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def _as_binary(values: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(values).reshape(-1)
    if arr.size and not np.isin(arr, (0, 1)).all():
        bad = sorted(set(np.unique(arr).tolist()) - {0, 1})[:5]
        raise ValueError(f"{name} must hold only 0 and 1, found {bad}")
    return arr.astype(np.int64)


def confusion_counts(y_true: ArrayLike, y_pred: ArrayLike) -> dict[str, int]:
    """``{"tp", "fp", "tn", "fn", "n"}`` for binary labels."""
    t, p = _as_binary(y_true, "y_true"), _as_binary(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.size} vs {p.size}")
    tp = int(((t == 1) & (p == 1)).sum())
    fp = int(((t == 0) & (p == 1)).sum())
    tn = int(((t == 0) & (p == 0)).sum())
    fn = int(((t == 1) & (p == 0)).sum())
    return {"tp": tp, "fp": fp, "tn": tn, "fn": fn, "n": int(t.size)}


def binary_metrics(
    y_true: ArrayLike, y_pred: ArrayLike, y_score: ArrayLike | None = None
) -> dict[str, float | int]:
    """Accuracy (eq. 8), sensitivity (eq. 9), specificity (eq. 10), F1 (eq. 11), AUC and the counts.

    F1 is ``2TP / (2TP + FP + FN)`` (eq. 11 prints ``2 TP^2`` in the numerator, a typo: F1 is the
    harmonic mean of precision and sensitivity). Undefined values are ``nan``: accuracy on no
    samples, sensitivity without positives, specificity without negatives, F1 when TP+FP+FN = 0,
    AUC with one class or no scores.
    """
    c = confusion_counts(y_true, y_pred)
    tp, fp, tn, fn, n = c["tp"], c["fp"], c["tn"], c["fn"], c["n"]
    auc = math.nan
    if y_score is not None:
        score = np.asarray(y_score, dtype=np.float64).reshape(-1)
        if score.size != n:
            raise ValueError(f"y_score has {score.size} values for {n} labels")
        if 0 < tp + fn < n and np.isfinite(score).all():
            from sklearn.metrics import roc_auc_score

            auc = float(roc_auc_score(_as_binary(y_true, "y_true"), score))
    return {
        "accuracy": _ratio(tp + tn, n),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        # Mean of sensitivity and specificity: 0.5 for any constant prediction, whatever the class shares.
        "balanced_accuracy": (_ratio(tp, tp + fn) + _ratio(tn, tn + fp)) / 2,
        "auc": auc,
        **c,
    }
