"""Leak-free data split: test fold, and an inner train/validation split carved from the training folds.

The paper trains on nine LUNA16 folds and reports the tenth (section 4.1.1). The public reference code then
picks each fold's best epoch on that test fold; we pick it on an inner validation split instead, so the
test fold is never seen before the final, single evaluation (docs/explanation.md, "The protocol").

The inner split is *patient-grouped*: every nodule of a scan goes to the same side, so validation never
sees a patient the model trained on. We group by the dataset's ``seriesuid`` (our choice: it is the only
patient key the dataset file carries). One LUNA16 series is one CT scan; a patient with two scans would
land in two groups, which LUNA16/LIDC (one scan per patient in practice) makes rare. The LIDC phantom
renders every nodule as its own synthetic series (uid derived from the real series and the nodule), so
there a group is one nodule: each phantom volume is rendered independently, so no two nodules share
pixels, and the test folds stay patient-disjoint because a phantom series keeps its source's LUNA16 subset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from naslung.options import check_folds


@dataclass(frozen=True)
class Split:
    """Row indices (into the full dataset) of the three disjoint parts of a run.

    ``test`` is empty when the run has no test fold (``test_fold=None``: the caller passed development data
    only, e.g. the architecture search).
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    test_fold: int | None

    def sizes(self) -> dict[str, int]:
        return {"train": int(self.train.size), "val": int(self.val.size), "test": int(self.test.size)}


def inner_split(
    labels: Sequence[int] | np.ndarray,
    groups: Sequence[str] | np.ndarray,
    folds: Sequence[int] | np.ndarray,
    test_fold: int | None,
    val_fraction: float = 0.15,
    seed: int = 0,
) -> Split:
    """Split rows into train / val / test.

    * test: rows whose fold equals ``test_fold`` (none when ``test_fold`` is None);
    * val: whole groups (scans) from the remaining rows, about ``val_fraction`` of each class;
    * train: the rest.

    Stratification is greedy over groups in a seeded random order: a group joins the validation split when
    that keeps every class at or below its quota ``max(1, round(val_fraction * n_class))``. Groups hold one
    to a few nodules, so the quotas are met almost exactly; the result depends only on the inputs and seed.
    """
    labels = np.asarray(labels).astype(np.int64)
    groups = np.asarray(groups).astype(str)
    folds = np.asarray(folds).astype(np.int64)
    if not (labels.shape == groups.shape == folds.shape) or labels.ndim != 1:
        raise ValueError("labels, groups and folds must be 1-D arrays of the same length")
    rows = np.arange(labels.size)
    if test_fold is None:
        test = rows[:0]
        dev = rows
    else:
        if test_fold not in set(folds.tolist()):
            present = sorted(set(folds.tolist()))
            raise ValueError(f"test fold {test_fold} holds no nodule; folds present: {present}")
        test = rows[folds == test_fold]
        dev = rows[folds != test_fold]
    if dev.size == 0:
        raise ValueError("no development data left once the test fold is removed")

    classes = np.unique(labels[dev])
    quota = {c: max(1, round(val_fraction * int(np.sum(labels[dev] == c)))) for c in classes}
    taken = dict.fromkeys(classes, 0)
    # Sorted unique groups, then a seeded permutation: independent of row order and hash seeds.
    uniq = np.unique(groups[dev])
    order = np.random.default_rng(seed).permutation(uniq.size)
    members = {g: dev[groups[dev] == g] for g in uniq}
    val_groups = []
    for g in uniq[order]:
        counts = {c: int(np.sum(labels[members[g]] == c)) for c in classes}
        if all(taken[c] + counts[c] <= quota[c] for c in classes):
            val_groups.append(g)
            for c in classes:
                taken[c] += counts[c]
    val_mask = np.isin(groups[dev], np.asarray(val_groups, dtype=groups.dtype))
    val = np.sort(dev[val_mask])
    train = np.sort(dev[~val_mask])
    if val.size == 0 or train.size == 0:
        raise ValueError(f"cannot carve a validation split out of {dev.size} development nodules "
                         f"in {uniq.size} scans (val_fraction={val_fraction})")
    return Split(train=train, val=val, test=np.sort(test), test_fold=test_fold)




def parse_folds(text: str | None, allow_empty: bool = False) -> list[int]:
    """A fold list as the CLI takes it -> sorted, unique LUNA16 subsets.

    ``"1-5"`` -> [1, 2, 3, 4, 5]; ``"0,3"`` -> [0, 3]; ``"1-3, 7"`` -> [1, 2, 3, 7]. A reversed range
    (``"5-1"``), a fold outside 0-9 or a token that is not a number raises ``ValueError``. ``None``, ``""``
    and ``"none"`` mean no fold: allowed only with ``allow_empty`` (``--exclude-folds none``: a search that
    sees every fold), an error otherwise (a cross-validation needs a fold).
    """
    raw = "" if text is None else str(text).strip()
    if raw.lower() in ("", "none"):
        if allow_empty:
            return []
        raise ValueError(f"bad fold list {text!r}: no fold given")
    out: set[int] = set()
    for part in raw.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(p) for p in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                out.update(range(lo, hi + 1))
            else:
                out.add(int(part))
        except ValueError:
            raise ValueError(f"bad fold list {text!r}: use e.g. '1-5' or '0,3'") from None
    return check_folds(out, f"bad fold list {text!r}: folds")
