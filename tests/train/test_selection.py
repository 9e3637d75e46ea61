import math

from naslung.train.selection import select_epoch


def test_best_f1_and_ties_go_to_the_earlier_epoch():
    hist = [{"f1": 0.5, "accuracy": 0.9}, {"f1": 0.8, "accuracy": 0.7}, {"f1": 0.8, "accuracy": 0.95}]
    assert select_epoch(hist, "f1") == 1
    assert select_epoch(hist, "accuracy") == 2


def test_nan_never_wins():
    assert select_epoch([{"f1": math.nan}, {"f1": 0.1}]) == 1
    assert select_epoch([{"f1": math.nan}, {"f1": math.nan}]) == 0
