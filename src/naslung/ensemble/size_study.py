"""Ensemble size study (paper section 4.6, Fig. 7): random n-member subsets, repeated, mean +- std."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from naslung.ensemble.vote import majority_vote, soft_vote

METRICS = ("accuracy", "sensitivity", "specificity", "f1")


def size_study(
    probs: np.ndarray,
    labels: np.ndarray,
    sizes: Sequence[int] = (1, 3, 5, 7, 9),
    repeats: int = 10,
    seed: int = 0,
    vote: str = "majority",
) -> list[dict[str, Any]]:
    """For each n in ``sizes`` (n <= members), draw ``repeats`` random n-subsets (without replacement
    within a subset) from a seeded generator, vote, and summarise each metric as mean and sample std.

    Args:
        probs: ``(n_members, N)`` test probabilities.
        labels: ``(N,)`` 0/1.

    Returns:
        one dict per n: ``{"n", "repeats", "<metric>_mean", "<metric>_std", "subsets"}``.
    """
    from naslung.metrics import binary_metrics

    probs = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    rng = np.random.default_rng(seed)
    voter = majority_vote if vote == "majority" else soft_vote
    rows = []
    for n in sizes:
        if n < 1 or n > probs.shape[0]:
            continue
        scores: dict[str, list[float]] = {m: [] for m in METRICS}
        subsets = []
        for _ in range(repeats):
            pick = np.sort(rng.choice(probs.shape[0], size=n, replace=False))
            subsets.append(pick.tolist())
            m = binary_metrics(labels, voter(probs[pick]))
            for key in METRICS:
                scores[key].append(float(m[key]))
        row: dict[str, Any] = {"n": int(n), "repeats": repeats}
        for key in METRICS:
            values = np.asarray(scores[key])
            row[f"{key}_mean"] = float(values.mean())
            row[f"{key}_std"] = float(values.std(ddof=1)) if values.size > 1 else 0.0
        row["subsets"] = subsets
        rows.append(row)
    if not rows:
        raise ValueError(f"no ensemble size in {list(sizes)} fits {probs.shape[0]} runs")
    return rows


def plot_size_study(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Fig. 7 style plot (metric in percent against n, error bars = std), saved atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from naslung.atomic import write_png_atomic

    ns = [r["n"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    for key in METRICS:
        ax.errorbar(ns, [100 * r[f"{key}_mean"] for r in rows], yerr=[100 * r[f"{key}_std"] for r in rows],
                    marker="o", capsize=3, label=key)
    ax.set_xlabel("number of models n")
    ax.set_ylabel("%")
    ax.set_xticks(ns)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return write_png_atomic(fig, path)
