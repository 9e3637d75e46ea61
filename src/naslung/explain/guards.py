"""Does a run belong with the data and fold it is asked to explain? Checked before any feature is computed.

A run's ``config.json`` records the fingerprint of the dataset it was trained on
(:mod:`naslung.fingerprint`) and its test fold. Explaining it on another dataset, or on a fold it trained
or validated on, gives figures about data the run never saw or data it memorised: both are refused with one
line naming the run. ``allow_seen_fold`` (``naslung explain --allow-seen-fold``) explains a seen fold
anyway; the summary then carries a note saying so.
"""

from __future__ import annotations

from typing import Any


class ExplainDataError(ValueError):
    """A run explained on a dataset other than its own, or on a fold it trained on."""


def check_same_data(run: Any, dataset: Any, data: Any) -> None:
    """Refuse ``data`` when its fingerprint differs from the one the run recorded.

    Runs that recorded none (older folders) pass, and so do fingerprints of different kinds (a file's
    against an in-memory dataset's), which cannot be compared.
    """
    from naslung.fingerprint import fingerprint_of

    saved = (run.config.get("dataset") or {}).get("fingerprint")
    now = fingerprint_of(dataset)
    if saved and str(saved).split(":")[0] == now.split(":")[0] and saved != now:
        source = (run.config.get("dataset") or {}).get("source")
        trained = f" ({source})" if source else ""
        raise ExplainDataError(
            f"{run.path}: trained on another dataset{trained}, fingerprint {str(saved)[:24]}..., but --data "
            f"{data} has {now[:24]}...; give the run's own dataset")


def check_unseen_fold(run: Any, fold: int, allow_seen_fold: bool = False) -> str | None:
    """Refuse ``fold`` when the run trained or validated on it; with ``allow_seen_fold``, the note to
    record instead (None when the fold is the run's test fold)."""
    if run.test_fold is not None and int(run.test_fold) == int(fold):
        return None
    held_out = (f"its test fold is {run.test_fold}" if run.test_fold is not None
                else "it held out no test fold")
    what = f"{run.path}: fold {fold} was training or validation data for this run ({held_out})"
    if allow_seen_fold:
        return f"{what}; explained anyway (--allow-seen-fold)"
    hint = f"--fold {run.test_fold}" if run.test_fold is not None else "a run with a test fold"
    raise ExplainDataError(f"{what}; explain {hint}, or pass --allow-seen-fold to explain it anyway")
