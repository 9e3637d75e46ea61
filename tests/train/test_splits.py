import numpy as np
import pytest

from naslung.train.splits import inner_split, parse_folds


def _arrays(n=300, seed=0):
    rng = np.random.default_rng(seed)
    groups = np.array([f"uid.{i // 3}" for i in range(n)])  # 3 nodules per scan
    labels = rng.integers(0, 2, n)
    folds = np.array([(i // 3) % 10 for i in range(n)])
    return labels, groups, folds


def test_parts_are_disjoint_and_exclude_the_test_fold():
    labels, groups, folds = _arrays()
    s = inner_split(labels, groups, folds, test_fold=3, val_fraction=0.15, seed=1)
    assert set(s.test) == set(np.flatnonzero(folds == 3))
    assert not set(s.train) & set(s.val)
    assert not (set(s.train) | set(s.val)) & set(s.test)
    assert len(s.train) + len(s.val) + len(s.test) == len(labels)
    assert (folds[s.train] != 3).all() and (folds[s.val] != 3).all()


def test_scans_never_straddle_train_and_val():
    labels, groups, folds = _arrays()
    s = inner_split(labels, groups, folds, test_fold=0, seed=2)
    assert not set(groups[s.train]) & set(groups[s.val])


def test_validation_is_stratified_close_to_the_fraction():
    labels, groups, folds = _arrays(n=900)
    s = inner_split(labels, groups, folds, test_fold=1, val_fraction=0.15, seed=0)
    dev = np.concatenate([s.train, s.val])
    for c in (0, 1):
        quota = round(0.15 * np.sum(labels[dev] == c))
        got = np.sum(labels[s.val] == c)
        assert quota - 3 <= got <= quota


def test_deterministic_by_seed():
    labels, groups, folds = _arrays()
    a = inner_split(labels, groups, folds, 2, seed=5)
    b = inner_split(labels, groups, folds, 2, seed=5)
    c = inner_split(labels, groups, folds, 2, seed=6)
    assert np.array_equal(a.val, b.val) and np.array_equal(a.train, b.train)
    assert not np.array_equal(a.val, c.val)


def test_no_test_fold_uses_all_rows_for_development():
    labels, groups, folds = _arrays()
    s = inner_split(labels, groups, folds, None)
    assert s.test.size == 0 and len(s.train) + len(s.val) == len(labels)


def test_unknown_test_fold_raises():
    labels, groups, folds = _arrays()
    with pytest.raises(ValueError, match="fold 42"):
        inner_split(labels, groups, folds, 42)


@pytest.mark.parametrize("text, folds", [("1-5", [1, 2, 3, 4, 5]), ("0,3", [0, 3]), ("1-3,7", [1, 2, 3, 7])])
def test_parse_folds(text, folds):
    assert parse_folds(text) == folds


@pytest.mark.parametrize("text", ["", "a", "5-1", "1-"])
def test_parse_folds_rejects_garbage(text):
    with pytest.raises(ValueError):
        parse_folds(text)
