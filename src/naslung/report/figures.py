"""Figures the report draws itself: the reliability diagram (calibration of the soft probabilities)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any


def reliability_png(curves: Sequence[tuple[str, dict[str, Any]]], note: str = "") -> bytes:
    """PNG bytes of a reliability diagram: per curve, fraction malignant vs mean predicted probability per
    bin (``naslung.report.stats.reliability`` output), the ECE in the legend, the diagonal for reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="perfect calibration")
    for name, rel in curves:
        pts = [(b["mean_prob"], b["frac_pos"]) for b in rel["bins"] if b["n"]]
        if not pts:
            continue
        xs, ys = zip(*pts, strict=True)
        ax.plot(xs, ys, marker="o", ms=3, lw=1.2, label=f"{name} (ECE {100 * rel['ece']:.1f} %)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean predicted probability of malignancy (bin)")
    ax.set_ylabel("fraction malignant")
    ax.legend(fontsize=6, loc="upper left")
    ax.set_title("reliability diagram" + (f"\n{note}" if note else ""), fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
