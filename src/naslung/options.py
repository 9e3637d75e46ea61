"""The valid values of naslung's named options, in one table, and the one check that refuses the others.

Configs (``TrainConfig``, ``SearchConfig``), the loss factory and the CLI help texts take their names from
here, so that adding a value is one edit and every error lists the same valid values.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from typing import TypeVar

#: ``--loss``: A-Softmax (angular head) or plain softmax cross-entropy (linear head).
LOSSES: tuple[str, ...] = ("asoftmax", "softmax")
#: Classifier heads (``naslung arch info --head``): normalised and bias-free for A-Softmax, or plain linear.
HEADS: tuple[str, ...] = ("angular", "linear")
#: Loss -> classifier head (docs/CONTRACTS.md): A-Softmax needs the angular (normalised, bias-free) head.
HEAD_FOR_LOSS: dict[str, str] = {"asoftmax": "angular", "softmax": "linear"}
#: ``--attention`` -> the order of CBAM's gates (None: no attention): CBAM (channel then spatial gate), its
#: spatial-first twin, or no attention.
ATTENTION_ORDERS: dict[str, str | None] = {"cbam": "channel-first", "cbam-spatial-first": "spatial-first",
                                           "none": None}
ATTENTIONS: tuple[str, ...] = tuple(ATTENTION_ORDERS)
#: ``--set embedding=``: what global average pooling reads. ``relu``: the last residual block's output after
#: its ReLU (Fig. 2 as written; every feature >= 0); ``linear``: the same sum before that ReLU, so the
#: embedding can point anywhere, as A-Softmax's angular margin assumes (:mod:`naslung.models.factory`).
EMBEDDINGS: tuple[str, ...] = ("linear", "relu")
#: ``--device``, ``--latency-device``: ``auto`` picks cuda when available.
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
#: Inner-validation metrics that pick a checkpoint (``--select``) or score a search candidate (``--metric``).
#: ``f1`` rewards a model that calls every nodule malignant (F1 = 2p / (1 + p) at a malignant share p, about
#: 0.63 on LIDC), so an epoch still at the prior can win it; ``balanced_accuracy`` and ``auc`` give any
#: constant prediction 0.5.
METRICS: tuple[str, ...] = ("f1", "accuracy", "balanced_accuracy", "auc")
#: ``--executor`` of a search: sequential in this process, or Ray Tune.
EXECUTORS: tuple[str, ...] = ("local", "ray")
#: Latency-model regressions (``naslung.search.latency_model``).
LATENCY_KINDS: tuple[str, ...] = ("linear", "loglinear")

T = TypeVar("T")


def check_option(name: str, value: T, valid: Sequence[T]) -> T:
    """``value`` if it is one of ``valid``, else a ``ValueError`` naming the option and the valid values."""
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(str(v) for v in valid)}")
    return value


def choices(valid: Sequence[str]) -> str:
    """``"a, b or c"``: the valid values for a help text."""
    names = list(valid)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


#: Seeds (``--seed``, ``--split-seed``, ``--set seed=``): 0 .. 2**32 - 1, what numpy, torch and Python's
#: ``random`` all accept.
SEED_MAX = 2**32 - 1


def check_seed(name: str, value: object) -> int:
    """``value`` as a seed in ``0..SEED_MAX``, else a ``ValueError`` naming the option ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= int(value) <= SEED_MAX:
        raise ValueError(f"{name} must be a whole number in 0..{SEED_MAX}, got {value!r}")
    return int(value)


#: LUNA16 ships ten subsets; a fold (``--folds``, ``--test-fold``, ``exclude_folds``) is one of them.
FOLDS = range(10)
_FOLD_RANGE = f"{FOLDS[0]}-{FOLDS[-1]}"


def check_folds(folds: Iterable[int], what: str) -> list[int]:
    """``folds`` as sorted unique ints, else a ``ValueError``: ``"<what> [11] are outside the LUNA16 subsets
    0-9"`` (``what`` names the option, e.g. ``"--folds: folds"``). The one fold-range check."""
    out = sorted({int(f) for f in folds})
    outside = [f for f in out if f not in FOLDS]
    if outside:
        raise ValueError(f"{what} {outside} are outside the LUNA16 subsets {_FOLD_RANGE}")
    return out


def check_fold(fold: int, what: str) -> int:
    """One fold (``--test-fold``) as an int, else ``"<what> 12: must be a LUNA16 subset 0-9"``."""
    if int(fold) not in FOLDS:
        raise ValueError(f"{what} {fold}: must be a LUNA16 subset {_FOLD_RANGE}")
    return int(fold)
