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
