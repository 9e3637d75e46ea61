import math

import numpy as np

from naslung.train.selection import select_epoch


def test_best_f1_and_ties_go_to_the_earlier_epoch():
    hist = [{"f1": 0.5, "accuracy": 0.9}, {"f1": 0.8, "accuracy": 0.7}, {"f1": 0.8, "accuracy": 0.95}]
    assert select_epoch(hist, "f1") == 1
    assert select_epoch(hist, "accuracy") == 2


def test_nan_never_wins():
    assert select_epoch([{"f1": math.nan}, {"f1": 0.1}]) == 1
    assert select_epoch([{"f1": math.nan}, {"f1": math.nan}]) == 0


def test_an_auc_tie_goes_to_the_epoch_that_classifies():
    # Epoch 0 ranks perfectly but still calls every nodule benign (balanced accuracy 0.5); epoch 2 also ranks
    # perfectly and classifies: AUC alone would keep epoch 0.
    hist = [{"auc": 1.0, "balanced_accuracy": 0.5}, {"auc": 0.9, "balanced_accuracy": 0.9},
            {"auc": 1.0, "balanced_accuracy": 0.95}, {"auc": 1.0, "balanced_accuracy": 0.95}]
    assert select_epoch(hist, "auc") == 2
    # A history without balanced accuracy (older epochs.jsonl) keeps the earlier-epoch rule.
    assert select_epoch([{"auc": 0.7}, {"auc": 0.7}], "auc") == 0
    assert select_epoch([{"auc": math.nan, "balanced_accuracy": 0.9}, {"auc": 0.6}], "auc") == 1


def test_a_floor_skips_epochs_at_the_prior_unless_none_learned():
    # Epoch 0 ranks best but calls every nodule benign (balanced accuracy 0.5): the floor skips it.
    history = [{"auc": 0.78, "balanced_accuracy": 0.5}, {"auc": 0.74, "balanced_accuracy": 0.66},
               {"auc": 0.76, "balanced_accuracy": 0.7}, {"auc": 0.9, "balanced_accuracy": 0.55}]
    assert select_epoch(history, "auc") == 3
    assert select_epoch(history, "auc", min_balanced_accuracy=0.6) == 2
    # No epoch reaches the floor: every epoch competes again (the search's floor then drops the trial).
    stuck = [{"auc": 0.7, "balanced_accuracy": 0.5}, {"auc": 0.8, "balanced_accuracy": 0.52}]
    assert select_epoch(stuck, "auc", min_balanced_accuracy=0.6) == 1


def test_with_a_floor_the_choice_is_the_last_choice_or_the_new_epoch():
    """The engine keeps only the chosen epoch's weights, so a new epoch may never revive an older one."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        history = [{"auc": float(rng.uniform(0.5, 1)), "balanced_accuracy": float(rng.uniform(0.4, 0.9))}
                   for _ in range(12)]
        chosen = [select_epoch(history[: n + 1], "auc", 0.6) for n in range(len(history))]
        for n in range(1, len(history)):
            assert chosen[n] in (chosen[n - 1], n)
