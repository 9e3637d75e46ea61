"""Checkpoint selection from validation results only.

:func:`select_epoch` receives the per-epoch *validation* history and nothing else: the trainer never holds
test predictions before the final evaluation, so the selection cannot see the test fold by construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def select_epoch(val_history: Sequence[dict[str, Any]], metric: str = "f1") -> int:
    """Index into ``val_history`` of the best epoch by ``metric``; ties go to the earlier epoch.

    Args:
        val_history: one dict of validation metrics per finished epoch (keys as ``binary_metrics``).
        metric: ``"f1"`` or ``"accuracy"``. NaN counts as worse than any number.
    """
    if not val_history:
        raise ValueError("no epoch to select from")
    best, best_value = 0, float("-inf")
    for i, record in enumerate(val_history):
        value = float(record[metric])
        if value != value:  # NaN
            continue
        if value > best_value:  # strict: a tie keeps the earlier epoch
            best, best_value = i, value
    return best
