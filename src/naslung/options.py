"""The valid values of naslung's named options, in one table, and the one check that refuses the others.

Configs (``TrainConfig``, ``SearchConfig``), the loss factory and the CLI help texts take their names from
here, so that adding a value is one edit and every error lists the same valid values.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import re
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

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


def _takes(annotation: object) -> str:
    """What a dataclass field of this annotation takes, in words, and whether a bare word is text for it."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    if re.search(r"\bstr\b", text):
        return "text"
    for prefix, words in (("bool", "true or false"), ("int", "a whole number"), ("float", "a number"),
                          ("tuple", "a JSON list such as [4,8]"), ("list", "a JSON list such as [4,8]")):
        if text.startswith(prefix):
            return words
    return "a JSON value"


def parse_field_values(items: Iterable[str] | None, owner: type, what: str, *, exclude: Iterable[str] = (),
                       option: str = "--set") -> dict[str, Any]:
    """``["ema_decay=0.99", "tta=false", "select_metric=auc"]`` -> ``{"ema_decay": 0.99, "tta": False,
    "select_metric": "auc"}``: the one ``FIELD=VALUE`` parser (``train``/``cv --set`` over ``TrainConfig``,
    ``demo``/``reproduce --set`` over a pipeline budget).

    ``FIELD`` must be a field of the dataclass ``owner`` (less ``exclude``; ``-`` reads as ``_``), given once.
    ``VALUE`` is JSON (``0.99``, ``true``, ``null``, ``[4,8]``, ``"text"``), or a bare word for a field that
    takes text (``select_metric=auc``). Anything else is a ``ValueError`` that names ``option``, the item and
    what the field takes (``what`` names the owner in it: ``"TrainConfig"``, ``"budget"``). The owner checks
    the values themselves.
    """
    skip = set(exclude)
    kinds = {f.name: _takes(f.type) for f in dataclasses.fields(owner) if f.name not in skip}
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in kinds:
            raise ValueError(f"{option} {item!r}: use FIELD=VALUE with a {what} field "
                             f"({', '.join(sorted(kinds))})")
        try:
            value = json.loads(raw)
        except ValueError:
            if kinds[key] != "text":
                raise ValueError(f"{option} {item!r}: {key} takes {kinds[key]}; the value must be JSON "
                                 f"(a number, true or false, null, [4,8])") from None
            value = raw  # a bare word for a text field, such as cosine
        if key in out:
            raise ValueError(f"{option} {key} is given twice ({out[key]!r}, then {value!r}); give it once")
        out[key] = value
    return out
