"""Pick ensemble members from a finished search (``naslung search select``), on validation numbers only.

Rule (the paper selects "good models according to both accuracy and inference speed", section 4.1.3):

0. **the floor**: a trial whose inner-validation AUC is under ``min_auc`` or whose balanced accuracy
   (mean of sensitivity and specificity) is under ``min_balanced_accuracy`` is dropped, and says why
   (:func:`dropped_line`). A model that calls every nodule benign scores the benign share in accuracy
   but exactly 0.5 in balanced accuracy, and a model that ranks at random has AUC ~0.5; either is a
   useless voter however fast it is. Undefined (NaN or missing) metrics fail the floor too;
1. the Pareto front (inner-validation score up, measured latency down) *of the trials that pass the
   floor*, so that a fast trial stuck at the class prior cannot dominate the others out of it;
2. then the other passing trials by the trade-off ``score - weight * ln(latency_ms)``: with the default
   weight 0.02 a model e (~2.7) times slower must score 2 points higher to rank equal;
3. **noise ties** (:func:`noise_tiers`): the inner validation split holds a few dozen to ~150 nodules, so
   scores a few points apart are not distinguishable. Within each of steps 1 and 2, the best remaining trial
   leads a tier, and every remaining trial whose score (trade-off in step 2) lies inside the leader's 95 %
   bootstrap interval (``score_ci`` of the trial record, :mod:`naslung.search.objective`) joins it; the
   tier is ordered by fewer parameters, then lower latency, then the earlier trial, and the next tier
   starts from the best trial left. A record without an interval (searches before it was stored) has a
   zero-width one: exact ties only, the rule of earlier versions;
4. when fewer trials pass the floor than ``top``, fewer are selected (:attr:`Selection.short`), never
   filled up with dropped ones; when none passes, :func:`select_members` raises.

Trial records only ever hold inner-validation metrics, so selection cannot see a test fold.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from naslung.search.pop import pareto_front
from naslung.search.records import read_trials

DEFAULT_WEIGHT = 0.02
#: Floor on inner-validation AUC. Chance is 0.5; on a split of ~75 nodules (the demo: 33 malignant, 42 benign)
#: the AUC of a model that ranks at random has a standard error of ~0.07 (Hanley-McNeil), so 0.6 lies about
#: 1.5 standard errors above chance, while every model that learned anything on the phantom or LIDC sits at
#: 0.85-0.95: the floor drops noise, never a model that merely ranks lower.
MIN_AUC = 0.6
#: Floor on inner-validation balanced accuracy ``(sensitivity + specificity) / 2``. Calling every nodule
#: one class gives exactly 0.5 (whatever the class shares, unlike accuracy, which then equals the larger
#: share); random calls have a standard error of ~0.06 on ~75 nodules. 0.6 is ~1.7 of those above it, and
#: drops the near-collapsed models that call almost everything benign (sensitivity ~0.1-0.3,
#: docs/explanation.md's 3^3
#: CBAM collapse); learned models reach 0.8-0.9.
MIN_BALANCED_ACCURACY = 0.6


def balanced_accuracy(metrics: dict[str, Any] | None) -> float:
    """``(sensitivity + specificity) / 2`` of a ``val_metrics`` dict; NaN when either is missing or NaN."""
    metrics = metrics or {}
    try:
        sens, spec = float(metrics["sensitivity"]), float(metrics["specificity"])
    except (KeyError, TypeError, ValueError):
        return math.nan
    return (sens + spec) / 2


def _auc(metrics: dict[str, Any] | None) -> float:
    value = (metrics or {}).get("auc")
    try:
        return math.nan if value is None else float(value)
    except (TypeError, ValueError):
        return math.nan


def floor_reasons(record: dict[str, Any], min_auc: float, min_balanced_accuracy: float) -> list[str]:
    """The metrics on which a trial record fails the floor (empty: it passes). NaN fails a floor above 0."""
    auc, bacc = _auc(record.get("val_metrics")), balanced_accuracy(record.get("val_metrics"))
    reasons = []
    if min_auc > 0 and not auc >= min_auc:
        reasons.append("AUC")
    if min_balanced_accuracy > 0 and not bacc >= min_balanced_accuracy:
        reasons.append("balanced accuracy")
    return reasons


def _fmt(value: float) -> str:
    return "undefined" if not math.isfinite(value) else f"{value:.3f}"


def score_interval(record: dict[str, Any]) -> tuple[float, float]:
    """``(lo, hi)`` of the record's ``score_ci``; ``(score, score)`` when it has none (older records)."""
    ci = record.get("score_ci")
    score = float(record["score"])
    if isinstance(ci, dict):
        try:
            lo, hi = float(ci["lo"]), float(ci["hi"])
        except (KeyError, TypeError, ValueError):
            return score, score
        if math.isfinite(lo) and math.isfinite(hi):
            return min(lo, score), max(hi, score)
    return score, score


def noise_tiers(records: list[dict[str, Any]], value: Callable[[dict[str, Any]], float],
                tie: Callable[[dict[str, Any]], tuple[Any, ...]]) -> list[tuple[int, dict[str, Any]]]:
    """``records`` ordered by ``value`` (higher first) up to the noise: ``[(tier, record), ...]``.

    The best remaining record leads a tier; every remaining record whose value is at least the leader's
    value minus the leader's noise (``score - lo`` of its 95 % interval) joins it; each tier is sorted by
    ``tie``. Tiers are numbered from 1. Transitive by construction, so the order is well defined.
    """
    left = sorted(records, key=lambda r: (-value(r), *tie(r)))
    out: list[tuple[int, dict[str, Any]]] = []
    tier = 0
    while left:
        tier += 1
        leader = left[0]
        below = float(leader["score"]) - score_interval(leader)[0]
        cut = value(leader) - below
        group = [r for r in left if value(r) >= cut]
        left = [r for r in left if value(r) < cut]
        out.extend((tier, r) for r in sorted(group, key=tie))
    return out


@dataclass
class Selection:
    """What :func:`select` chose and dropped, with the settings it used."""

    chosen: list[dict[str, Any]]
    dropped: list[dict[str, Any]]
    top: int
    weight: float
    min_auc: float
    min_balanced_accuracy: float
    passed: int = 0
    trained: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def short(self) -> bool:
        """True when fewer trials passed the floor than ``top`` asked for."""
        return len(self.chosen) < self.top

    def floor_text(self) -> str:
        return f"AUC >= {self.min_auc:.2f} and balanced accuracy >= {self.min_balanced_accuracy:.2f}"

    def messages(self) -> list[str]:
        """The lines to show a user: one per dropped trial, then a shortfall note when there is one."""
        lines = [dropped_line(d, self) for d in self.dropped]
        if self.short:
            lines.append(
                f"only {self.passed} of {self.trained} trained trials pass the floor ({self.floor_text()}): "
                f"selected {len(self.chosen)}, not --top {self.top}; no trial below the floor was taken "
                "(train candidates longer, or lower --min-auc / --min-balanced-accuracy to take them)")
        return lines

    def to_dict(self) -> dict[str, Any]:
        """The ``selection`` entry of ``members.json``."""
        return {"top": self.top, "weight": self.weight, "min_auc": self.min_auc,
                "min_balanced_accuracy": self.min_balanced_accuracy, "selected": len(self.chosen),
                "passed": self.passed, "trained": self.trained, "dropped": self.dropped}


def dropped_line(d: dict[str, Any], selection: Selection) -> str:
    """One line per dropped trial: its spec, AUC and balanced accuracy, the floor and what failed it."""
    return (f"dropped trial {d['trial']} {d['spec']}: inner-validation AUC {_fmt(d['auc'])}, balanced "
            f"accuracy {_fmt(d['balanced_accuracy'])} ({d['metric']} {_fmt(d['score'])}); below the floor "
            f"{selection.floor_text()} on {' and '.join(d['reasons'])}: no better than the majority class "
            "or chance")


def select(records: list[dict[str, Any]], top: int, weight: float = DEFAULT_WEIGHT,
           min_auc: float = MIN_AUC, min_balanced_accuracy: float = MIN_BALANCED_ACCURACY) -> Selection:
    """Apply the rule of the module docstring; raises only on bad arguments or no trained trial."""
    if top < 1:
        raise ValueError(f"--top must be >= 1, got {top}")
    for name, value in (("--min-auc", min_auc), ("--min-balanced-accuracy", min_balanced_accuracy)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {value}")
    trained = [r for r in records if r["status"] == "ok"]
    if not trained:
        raise ValueError("the search has no successfully trained candidate to select from")
    ok: dict[int, dict[str, Any]] = {}
    dropped = []
    for r in trained:
        reasons = floor_reasons(r, min_auc, min_balanced_accuracy)
        if reasons:
            vm = r.get("val_metrics")
            dropped.append({"trial": r["trial"], "index": r["index"], "spec": r["spec"],
                            "metric": r["metric"], "score": r["score"], "auc": _auc(vm),
                            "balanced_accuracy": balanced_accuracy(vm), "reasons": reasons})
        else:
            ok[r["index"]] = r
    front = set(pareto_front({i: (r["score"], r["latency_ms"]) for i, r in ok.items()}))

    def tie(r: dict[str, Any]) -> tuple[float, float, int]:
        return (r["params"] if r["params"] is not None else math.inf, r["latency_ms"], r["trial"])

    def tradeoff(r: dict[str, Any]) -> float:
        return float(r["score"]) - weight * math.log(max(r["latency_ms"], 1e-9))

    first = noise_tiers([ok[i] for i in front], lambda r: float(r["score"]), tie)
    rest = noise_tiers([r for i, r in ok.items() if i not in front], tradeoff, tie)
    n_front_tiers = first[-1][0] if first else 0
    chosen = []
    for rank, (tier, r) in enumerate([*first, *((t + n_front_tiers, r) for t, r in rest)][:top], start=1):
        lo, hi = score_interval(r)
        chosen.append(
            {
                "rank": rank,
                "spec": r["spec"],
                "index": r["index"],
                "score": r["score"],
                "score_ci": r.get("score_ci"),
                "score_lo": lo,
                "score_hi": hi,
                "tier": tier,
                "metric": r["metric"],
                "auc": _auc(r.get("val_metrics")),
                "balanced_accuracy": balanced_accuracy(r.get("val_metrics")),
                "latency_ms": r["latency_ms"],
                "params": r["params"],
                "macs": r["macs"],
                "on_front": r["index"] in front,
                "tradeoff": tradeoff(r),
                "trial": r["trial"],
            }
        )
    return Selection(chosen=chosen, dropped=dropped, top=top, weight=weight, min_auc=min_auc,
                     min_balanced_accuracy=min_balanced_accuracy, passed=len(ok), trained=len(trained))


def select_members(
    records: list[dict[str, Any]], top: int, weight: float = DEFAULT_WEIGHT,
    min_auc: float = MIN_AUC, min_balanced_accuracy: float = MIN_BALANCED_ACCURACY,
) -> list[dict[str, Any]]:
    """The chosen candidates of :func:`select`, in selection order; raises when none passes the floor."""
    selection = select(records, top, weight, min_auc, min_balanced_accuracy)
    check_selected(selection)
    return selection.chosen


def check_selected(selection: Selection) -> None:
    """Raise ``ValueError`` (listing what was dropped) when no trained trial passed the floor."""
    if not selection.chosen:
        dropped = "; ".join(f"{d['spec']} (AUC {_fmt(d['auc'])}, balanced accuracy "
                            f"{_fmt(d['balanced_accuracy'])})" for d in selection.dropped)
        raise ValueError(
            f"none of the {selection.trained} trained trials passes the floor ({selection.floor_text()}): "
            f"{dropped}. Every one is at or near the majority class on the inner validation split; train "
            "the candidates longer, or lower --min-auc / --min-balanced-accuracy to take them anyway")


def selection_from_dir(out: str | Path, top: int, weight: float = DEFAULT_WEIGHT, min_auc: float = MIN_AUC,
                       min_balanced_accuracy: float = MIN_BALANCED_ACCURACY) -> Selection:
    """:func:`select` over ``out/trials.jsonl``."""
    records = read_trials(out)
    if not records:
        raise FileNotFoundError(f"{out}: no trials.jsonl; run `naslung search` first")
    return select(records, top, weight, min_auc, min_balanced_accuracy)


def select_from_dir(out: str | Path, top: int, weight: float = DEFAULT_WEIGHT, min_auc: float = MIN_AUC,
                    min_balanced_accuracy: float = MIN_BALANCED_ACCURACY) -> list[dict[str, Any]]:
    """:func:`select_members` over ``out/trials.jsonl``."""
    selection = selection_from_dir(out, top, weight, min_auc, min_balanced_accuracy)
    check_selected(selection)
    return selection.chosen
