"""The one home of option values: fold ranges and FIELD=VALUE parsing, used alike by every command."""

from __future__ import annotations

import pytest

from naslung.options import FOLDS, check_fold, check_folds


def test_one_fold_range_for_every_caller():
    from naslung.pipeline.demo import DemoConfig, validate
    from naslung.search.config import SearchConfig
    from naslung.train.splits import parse_folds

    assert list(FOLDS) == list(range(10))
    assert check_folds([3, 1, 3], "--folds: folds") == [1, 3]
    with pytest.raises(ValueError, match=r"^--folds: folds \[10, 12\] are outside the LUNA16 subsets 0-9$"):
        check_folds([12, 10, 2], "--folds: folds")
    assert check_fold(9, "--test-fold") == 9
    with pytest.raises(ValueError, match=r"^--test-fold 10: must be a LUNA16 subset 0-9$"):
        check_fold(10, "--test-fold")
    # the callers say it the same way
    for call in (lambda: parse_folds("0,10"), lambda: SearchConfig(out="s", exclude_folds=(10,)),
                 lambda: validate(DemoConfig(test_fold=10))):
        with pytest.raises(ValueError, match="LUNA16 subset"):
            call()


def test_one_field_value_parser_for_train_and_the_budgets():
    from naslung.options import parse_field_values
    from naslung.pipeline.budgets import Budget, parse_overrides
    from naslung.train.config import TrainConfig

    parsed = parse_field_values(["ema_decay=0.99", "tta=false", "select-metric=auc", "lr_schedule=\"cosine\"",
                                 "max_shift=null", "betas=[0.9,0.99]"], TrainConfig, "TrainConfig")
    assert parsed == {"ema_decay": 0.99, "tta": False, "select_metric": "auc", "lr_schedule": "cosine",
                      "max_shift": None, "betas": [0.9, 0.99]}
    assert parse_overrides(["search_minutes=null", "train_budget=paper", "members=2"]) == {
        "search_minutes": None, "train_budget": "paper", "members": 2}
    # the same rules for both owners
    for owner, what, exclude, field, bare, kind in (
            (TrainConfig, "TrainConfig", (), "epochs", "two", "a whole number"),
            (Budget, "budget", ("name", "overrides"), "members", "two", "a whole number"),
            (TrainConfig, "TrainConfig", (), "tta", "maybe", "true or false"),
            (Budget, "budget", ("name", "overrides"), "min_auc", "high", "a number")):
        with pytest.raises(ValueError, match=rf"^--set '{field}={bare}': {field} takes {kind}; the value"):
            parse_field_values([f"{field}={bare}"], owner, what, exclude=exclude)
        with pytest.raises(ValueError, match=rf"^--set 'nonsense=1': use FIELD=VALUE with a {what} field \("):
            parse_field_values(["nonsense=1"], owner, what, exclude=exclude)
        with pytest.raises(ValueError, match=rf"^--set '{field}': use FIELD=VALUE"):
            parse_field_values([field], owner, what, exclude=exclude)
        with pytest.raises(ValueError, match=rf"^--set {field} is given twice \(1, then 2\); give it once$"):
            parse_field_values([f"{field}=1", f"{field}=2"], owner, what, exclude=exclude)
    with pytest.raises(ValueError, match="use FIELD=VALUE with a budget field"):
        parse_overrides(["name=tiny"])  # not a field a user sets
