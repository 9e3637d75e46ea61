"""Fig.-4-style plot of a search: score vs measured latency of every trained candidate, front highlighted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from naslung.search.pop import PopState, pareto_front


def plot_search(
    records: list[dict[str, Any]], state: PopState | None, path: str | Path, note: str = ""
) -> Path:
    """Write a PNG: grey dots for trained candidates, the Pareto front in red, counts in the title.

    Args:
        records: trial records (``trials.jsonl``); failed trials are skipped.
        state: the search state for the pruned/space counts (``None``: counts from the records only).
        note: appended to the title, e.g. ``"phantom data"``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from naslung.atomic import write_png_atomic

    ok = [r for r in records if r["status"] == "ok"]
    points = {r["index"]: (r["score"], r["latency_ms"]) for r in ok}
    front = pareto_front(points)
    metric = ok[0]["metric"] if ok else "score"
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110)
    others = [p for i, p in points.items() if i not in front]
    if others:
        ax.scatter([p[1] for p in others], [100 * p[0] for p in others], s=18, c="0.55", label="trained")
    if front:
        ax.plot(
            [points[i][1] for i in front],
            [100 * points[i][0] for i in front],
            "-o",
            c="tab:red",
            ms=5,
            label=f"Pareto front ({len(front)})",
        )
    ax.set_xlabel("measured latency per nodule (ms)")
    ax.set_ylabel(f"inner-validation {metric} (%)")
    ax.grid(alpha=0.3)
    if state is not None:
        s = state.summary()
        title = (
            f"POP: {s['trained']} trained, {s['pruned']:,} of {s['space']:,} pruned "
            f"({100 * s['pruned'] / s['space']:.1f}%)"
        )
    else:
        title = f"POP: {len(ok)} trained"
    ax.set_title(title + (f"\n{note}" if note else ""), fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return write_png_atomic(fig, path)
