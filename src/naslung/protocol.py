"""Protocol guards shared by every pipeline that chains a search into training (demo, reproduce, ...).

The protocol (docs/explanation.md, "The protocol"): architectures, epochs and members are chosen without the
test fold.
When a search feeds a training run, the run's test fold must be one of the folds the search never saw (its
``exclude_folds``); otherwise the architecture was picked with that fold's nodules and the reported number
is leaked.
Callers check *before* any work starts (:func:`check_test_fold_unseen`), and again against what a search
folder actually recorded (:func:`naslung.search.records.check_search_folder`, which reads the folder).
"""

from __future__ import annotations

from collections.abc import Iterable


class ProtocolError(ValueError):
    """A configuration that would report a number on data that selection has already seen."""


def check_test_fold_unseen(test_fold: int | None, search_excluded: Iterable[int],
                           where: str = "search") -> None:
    """Raise :class:`ProtocolError` unless ``test_fold`` is among the folds the search excluded.

    ``test_fold=None`` (no test at all) always passes.
    """
    if test_fold is None:
        return
    excluded = sorted({int(f) for f in search_excluded})
    if int(test_fold) not in excluded:
        hint = (f"choose a test fold among {excluded}" if excluded
                else "exclude the test fold from the search (--exclude-folds)")
        raise ProtocolError(
            f"test fold {test_fold} was among the folds the {where} trained and validated on (it excluded "
            f"only {excluded}); reporting it would leak the architecture choice into the test: {hint}")
