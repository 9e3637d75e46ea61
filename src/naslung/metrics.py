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


def rank_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """The area under the ROC curve of binary labels ``(N,)`` (both classes present) and scores ``(N,)``.

    It is the Mann-Whitney statistic ``(R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)``, with ``R_pos`` the
    positives' rank sum and tied scores given their mean rank: the probability that a random positive scores
    above a random negative, ties counting one half. That is exactly the trapezoidal area that
    ``sklearn.metrics.roc_auc_score`` computes (``tests/test_metrics.py``); computed here because importing
    scikit-learn took about 1 s of every ``naslung train`` (this project's VM).
    """
    order = np.argsort(score, kind="stable")
    sorted_scores = score[order]
    first = np.r_[True, sorted_scores[1:] != sorted_scores[:-1]]  # where each run of tied scores starts
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], score.size]
    mean_rank = (starts + ends + 1) / 2.0  # 1-based ranks starts+1 .. ends, averaged
    ranks = np.empty(score.size, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    positives = y_true == 1
    n_pos = int(positives.sum())
    n_neg = score.size - n_pos
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


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
            auc = rank_auc(_as_binary(y_true, "y_true"), score)
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
