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


def check_unseen_fold(run: Any, fold: int, allow_seen_fold: bool = False,
                      option: str = "explain") -> str | None:
    """Refuse ``fold`` when the run trained or validated on it; with ``allow_seen_fold``, the note to
    record instead (None when the fold is the run's test fold).

    A bundled model (``run.trained_folds`` set, from its card) saw exactly the folds its card lists; a run
    folder saw every fold but its test fold. ``option`` is the verb of the messages (``explain``,
    ``evaluate``).
    """
    done = option + ("d" if option.endswith("e") else "ed")
    trained = getattr(run, "trained_folds", None)
    if trained is not None:
        if int(fold) not in {int(f) for f in trained}:
            return None
        folds = sorted(int(f) for f in trained)
        what = (f"{run.name}: fold {fold} was training data for this bundled model (its card: trained on "
                f"folds {', '.join(map(str, folds))})")
        if allow_seen_fold:
            return f"{what}; {done} anyway (--allow-seen-fold)"
        raise ExplainDataError(f"{what}; {option} it on data it never saw, or pass --allow-seen-fold to "
                               f"{option} it anyway")
    if run.test_fold is not None and int(run.test_fold) == int(fold):
        return None
    held_out = (f"its test fold is {run.test_fold}" if run.test_fold is not None
                else "it held out no test fold")
    what = f"{run.path}: fold {fold} was training or validation data for this run ({held_out})"
    if allow_seen_fold:
        return f"{what}; {done} anyway (--allow-seen-fold)"
    hint = f"--fold {run.test_fold}" if run.test_fold is not None else "a run with a test fold"
    raise ExplainDataError(f"{what}; {option} {hint}, or pass --allow-seen-fold to {option} it anyway")
