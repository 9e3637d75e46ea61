"""Checkpoint selection from validation results only.

:func:`select_epoch` receives the per-epoch *validation* history and nothing else: the trainer never holds
test predictions before the final evaluation, so the selection cannot see the test fold by construction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def select_epoch(val_history: Sequence[dict[str, Any]], metric: str = "f1") -> int:
    """Index into ``val_history`` of the best epoch by ``metric``; ties go to the earlier epoch.

    Args:
        val_history: one dict of validation metrics per finished epoch (keys as ``binary_metrics``).
        metric: a ``naslung.options.METRICS`` name. NaN counts as worse than any number.

    AUC has no threshold, so on an easy split several epochs reach the same AUC (1.0 on separable data)
    while the earliest of them still calls every nodule one class. An AUC tie therefore goes to the higher
    balanced accuracy at the 0.5 threshold, and only then to the earlier epoch.
    """
    if not val_history:
        raise ValueError("no epoch to select from")

    def key(record: dict[str, Any]) -> tuple[float, float]:
        value = float(record[metric])
        second = float(record.get("balanced_accuracy", math.nan)) if metric == "auc" else 0.0
        return (value, second if second == second else float("-inf"))

    best, best_key = 0, (float("-inf"), float("-inf"))
    for i, record in enumerate(val_history):
        current = key(record)
        if current[0] != current[0]:  # NaN
            continue
        if current > best_key:  # strict: a tie keeps the earlier epoch
            best, best_key = i, current
    return best
