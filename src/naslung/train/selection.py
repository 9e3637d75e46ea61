"""Checkpoint selection from validation results only.

:func:`select_epoch` receives the per-epoch *validation* history and nothing else: the trainer never holds
test predictions before the final evaluation, so the selection cannot see the test fold by construction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def select_epoch(val_history: Sequence[dict[str, Any]], metric: str = "f1",
                 min_balanced_accuracy: float = 0.0) -> int:
    """Index into ``val_history`` of the best epoch by ``metric``; ties go to the earlier epoch.

    Args:
        val_history: one dict of validation metrics per finished epoch (keys as ``binary_metrics``).
        metric: a ``naslung.options.METRICS`` name. NaN counts as worse than any number.
        min_balanced_accuracy: only epochs whose balanced accuracy reaches it compete, unless none does
            (then every epoch competes, and the search's floor drops the run).

    AUC has no threshold, so on an easy split several epochs reach the same AUC (1.0 on separable data)
    while the earliest of them still calls every nodule one class. An AUC tie therefore goes to the higher
    balanced accuracy at the 0.5 threshold, and only then to the earlier epoch.

    The floor exists for short search trials: on the real 3-D VOI cubes, 10-epoch trials kept by AUC alone
    kept epochs 3-5 where they called every nodule benign (inner AUC 0.73-0.78 on 62 nodules, balanced
    accuracy 0.5): early in training the angular head's ranking already beats chance while its decision
    does not, and over 10 epochs on a split that small the highest AUC is often an early, noisy one. 4 of
    12 trials were then dropped by ``search select``'s floor as "at the prior".
    """
    if not val_history:
        raise ValueError("no epoch to select from")

    def key(record: dict[str, Any]) -> tuple[float, float]:
        value = float(record[metric])
        second = float(record.get("balanced_accuracy", math.nan)) if metric == "auc" else 0.0
        return (value, second if second == second else float("-inf"))

    def learned(record: dict[str, Any]) -> bool:
        return float(record.get("balanced_accuracy", math.nan)) >= min_balanced_accuracy

    candidates = list(enumerate(val_history))
    if min_balanced_accuracy > 0.0 and any(learned(r) for r in val_history):
        candidates = [(i, r) for i, r in candidates if learned(r)]
    best, best_key = candidates[0][0], (float("-inf"), float("-inf"))
    for i, record in candidates:
        current = key(record)
        if current[0] != current[0]:  # NaN
            continue
        if current > best_key:  # strict: a tie keeps the earlier epoch
            best, best_key = i, current
    return best
