import math

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
