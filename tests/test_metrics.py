"""binary_metrics (eq. 8-11) against hand-computed confusion counts, and its edge cases."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from naslung.metrics import binary_metrics, rank_auc


def test_hand_computed_counts():
    # pairs (true, pred): TP x3, FN x1, FP x2, TN x4
    y_true = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    y_pred = [1, 1, 1, 0, 1, 1, 0, 0, 0, 0]
    r = binary_metrics(y_true, y_pred)
    assert (r["tp"], r["fn"], r["fp"], r["tn"], r["n"]) == (3, 1, 2, 4, 10)
    assert r["accuracy"] == pytest.approx(7 / 10)
    assert r["sensitivity"] == pytest.approx(3 / 4)
    assert r["specificity"] == pytest.approx(4 / 6)
    assert r["f1"] == pytest.approx(6 / 9)  # 2TP / (2TP + FP + FN)
    assert math.isnan(r["auc"])  # no scores given


def test_auc_with_scores():
    # positives score 0.9, 0.4; negatives 0.6, 0.1 -> 3 of 4 pairs ordered -> AUC 0.75
    r = binary_metrics([1, 1, 0, 0], [1, 0, 1, 0], [0.9, 0.4, 0.6, 0.1])
    assert r["auc"] == pytest.approx(0.75)


def test_absent_classes_give_documented_values():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        no_pos = binary_metrics([0, 0, 0], [0, 1, 0], [0.1, 0.7, 0.2])
        no_neg = binary_metrics([1, 1], [1, 1], [0.8, 0.9])
        empty = binary_metrics([], [])
    assert math.isnan(no_pos["sensitivity"]) and no_pos["specificity"] == pytest.approx(2 / 3)
    assert no_pos["f1"] == 0.0 and math.isnan(no_pos["auc"])
    assert math.isnan(no_neg["specificity"]) and no_neg["sensitivity"] == 1.0 and no_neg["f1"] == 1.0
    perfect_negatives = binary_metrics([0, 0], [0, 0])
    assert math.isnan(perfect_negatives["f1"]) and perfect_negatives["accuracy"] == 1.0
    assert empty["n"] == 0 and math.isnan(empty["accuracy"])


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="only 0 and 1"):
        binary_metrics([0, 2], [0, 1])
    with pytest.raises(ValueError, match="differ in length"):
        binary_metrics([0, 1], [0])
    with pytest.raises(ValueError, match="y_score"):
        binary_metrics([0, 1], [0, 1], [0.5])


@pytest.mark.parametrize("seed", range(5))
def test_rank_auc_equals_scikit_learns_with_ties(seed):
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    y[:2] = [0, 1]
    score = np.round(rng.random(200) * (4 if seed % 2 else 1000)) / 4  # many ties for odd seeds
    expected = roc_auc_score(y, score)
    assert rank_auc(y, score) == pytest.approx(expected, abs=1e-12)
    assert binary_metrics(y, (score >= 0.5).astype(int), score)["auc"] == pytest.approx(expected, abs=1e-12)
