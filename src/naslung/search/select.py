"""Pick ensemble members from a finished search (``naslung search select``), on validation numbers only.

Rule (the paper selects "good models according to both accuracy and inference speed", section 4.1.3):

1. the Pareto front (inner-validation score up, measured latency down), best score first;
2. then the other trained candidates by the trade-off ``score - weight * ln(latency_ms)``: with the default
   weight 0.02 a model e (~2.7) times slower must score 2 points higher to rank equal;
3. ties go to fewer parameters, then lower latency, then the earlier trial.

Trial records only ever hold inner-validation metrics, so selection cannot see a test fold.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from naslung.search.pop import pareto_front
from naslung.search.records import read_trials

DEFAULT_WEIGHT = 0.02


def select_members(
    records: list[dict[str, Any]], top: int, weight: float = DEFAULT_WEIGHT
) -> list[dict[str, Any]]:
    """The ``top`` chosen candidates, in selection order, each with its rank and why it was chosen."""
    if top < 1:
        raise ValueError(f"--top must be >= 1, got {top}")
    ok = {r["index"]: r for r in records if r["status"] == "ok"}
    if not ok:
        raise ValueError("the search has no successfully trained candidate to select from")
    front = set(pareto_front({i: (r["score"], r["latency_ms"]) for i, r in ok.items()}))

    def tie(r: dict[str, Any]) -> tuple[float, float, int]:
        return (r["params"] if r["params"] is not None else math.inf, r["latency_ms"], r["trial"])

    def tradeoff(r: dict[str, Any]) -> float:
        return r["score"] - weight * math.log(max(r["latency_ms"], 1e-9))

    first = sorted((ok[i] for i in front), key=lambda r: (-r["score"], *tie(r)))
    rest = sorted((r for i, r in ok.items() if i not in front), key=lambda r: (-tradeoff(r), *tie(r)))
    chosen = []
    for rank, r in enumerate([*first, *rest][:top], start=1):
        chosen.append(
            {
                "rank": rank,
                "spec": r["spec"],
                "index": r["index"],
                "score": r["score"],
                "metric": r["metric"],
                "latency_ms": r["latency_ms"],
                "params": r["params"],
                "macs": r["macs"],
                "on_front": r["index"] in front,
                "tradeoff": tradeoff(r),
                "trial": r["trial"],
            }
        )
    return chosen


def select_from_dir(out: str | Path, top: int, weight: float = DEFAULT_WEIGHT) -> list[dict[str, Any]]:
    """:func:`select_members` over ``out/trials.jsonl``."""
    records = read_trials(out)
    if not records:
        raise FileNotFoundError(f"{out}: no trials.jsonl; run `naslung search` first")
    return select_members(records, top, weight)
