"""t-SNE of penultimate features coloured by label (paper section 4.5, Fig. 6).

Each panel embeds one run's features in 2-D with ``sklearn.manifold.TSNE`` (seeded, so a rerun gives the
same picture). Given two runs, typically Softmax- and A-Softmax-trained, the panels sit side by side. As
in Fig. 6, blue is malignant and red benign.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

COLORS = {1: ("tab:blue", "malignant"), 0: ("tab:red", "benign")}


@dataclass
class Panel:
    """One t-SNE panel: ``embedding`` ``(N, 2)``, ``labels`` ``(N,)`` and a title."""

    embedding: np.ndarray
    labels: np.ndarray
    title: str


#: Up to this many points t-SNE uses the exact method (no quad tree).
EXACT_MAX = 600


def embed(features: np.ndarray, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """``(N, F) -> (N, 2)`` t-SNE embedding; perplexity is capped below ``N`` for small sets."""
    from sklearn.manifold import TSNE

    x = np.asarray(features, dtype=np.float64)
    n = x.shape[0]
    if n < 3:
        raise ValueError(f"t-SNE needs at least 3 samples, got {n}")
    if not np.isfinite(x).all():
        raise ValueError("t-SNE features hold NaN or infinite values (a diverged model?)")
    perplexity = float(min(perplexity, max(1.0, (n - 1) / 3)))
    # Barnes-Hut builds a quad tree over the embedding; identical feature rows (a collapsed model) give
    # identical points, which sklearn's tree subdivides until the C stack overflows (a segfault, seen with
    # scikit-learn on a degenerate run). One test fold is a few hundred nodules at most, so the exact method
    # costs little there; duplicates also get a seeded jitter far below the features' scale (identical rows
    # would break the PCA initialisation too).
    method = "exact" if n <= EXACT_MAX else "barnes_hut"
    if np.unique(x, axis=0).shape[0] < n:
        scale = max(float(x.std()), 1.0) * 1e-6
        x = x + np.random.default_rng(seed).normal(0.0, scale, size=x.shape)
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                method=method).fit_transform(x)


def plot_panels(panels: list[Panel], path: str | Path, note: str = "") -> Path:
    """Side-by-side scatter plots, one per panel, saved as a PNG (Agg backend, atomic write)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from naslung.atomic import write_png_atomic

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        for label, (color, name) in COLORS.items():
            sel = panel.labels == label
            ax.scatter(panel.embedding[sel, 0], panel.embedding[sel, 1], s=8, c=color, alpha=0.7,
                       label=f"{name} ({int(sel.sum())})")
        ax.set_title(panel.title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=7, loc="best")
    if note:
        fig.suptitle(note, fontsize=8)
    fig.tight_layout()
    return write_png_atomic(fig, path, dpi=110)
