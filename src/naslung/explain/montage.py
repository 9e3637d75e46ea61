"""Fig. 5 for a whole test fold: attention PNGs per nodule and one montage of chosen examples.

Examples are picked in four groups, the way Fig. 5 is read: malignant and benign nodules, each correctly
and wrongly classified (threshold 0.5, section 3.5). Within a group the most confident come first (for a
wrong group: the most confidently wrong). A group with no member is shown as an empty row labelled so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from naslung.data.dataset import NoduleDataset
from naslung.explain.attention import (
    DEFAULT_STAGE,
    central_slice,
    draw_pair,
    save_pair_png,
    spatial_attention,
)

#: (name, label, correct) of the montage rows.
GROUPS: tuple[tuple[str, int, bool], ...] = (
    ("malignant, correct", 1, True),
    ("malignant, wrong", 1, False),
    ("benign, correct", 0, True),
    ("benign, wrong", 0, False),
)


@dataclass
class Example:
    """One explained nodule: its row, group, probability, central slices and PNG."""

    row: int
    group: str
    nodule_id: str
    seriesuid: str
    label: int
    prob: float
    ct: np.ndarray  # (H, W) in [0, 1]
    attention: np.ndarray  # (H, W) in [0, 1]
    png: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.row, "group": self.group, "nodule_id": self.nodule_id,
                "seriesuid": self.seriesuid, "label": self.label, "prob_malignant": self.prob,
                "attention_max": float(self.attention.max()), "attention_mean": float(self.attention.mean()),
                "png": str(self.png) if self.png else None}


def pick_examples(labels: np.ndarray, prob: np.ndarray, per_group: int) -> dict[str, np.ndarray]:
    """``{group: positions}`` into ``labels``/``prob``, most confident first, at most ``per_group`` each."""
    labels, prob = np.asarray(labels), np.asarray(prob, dtype=np.float64)
    pred = (prob >= 0.5).astype(np.int64)
    out = {}
    for name, label, correct in GROUPS:
        pos = np.flatnonzero((labels == label) & ((pred == labels) == correct))
        confidence = np.where(pred[pos] == 1, prob[pos], 1 - prob[pos])
        out[name] = pos[np.argsort(-confidence, kind="stable")][:per_group]
    return out


@torch.no_grad()
def explain_examples(model: nn.Module, dataset: NoduleDataset, rows: np.ndarray, prob: np.ndarray,
                     out_dir: str | Path, per_group: int = 4, stage: str = DEFAULT_STAGE) -> list[Example]:
    """Attention of the picked nodules among ``rows`` (with their probabilities ``prob``), one PNG each
    in ``out_dir/nodules/``. Returns the examples in montage order."""
    from naslung.train.augment import center_crop

    rows = np.asarray(rows, dtype=np.int64)
    picked = pick_examples(dataset.labels[rows], prob, per_group)
    out_dir = Path(out_dir)
    examples: list[Example] = []
    for group, positions in picked.items():
        if positions.size == 0:
            continue
        idx = rows[positions]
        x = center_crop(torch.from_numpy(np.ascontiguousarray(dataset.images[idx], dtype=np.float32)),
                        dataset.size)
        maps = spatial_attention(model, x, stage).cpu().numpy()
        for k, (row, p) in enumerate(zip(idx, prob[positions], strict=True)):
            ex = Example(row=int(row), group=group, nodule_id=str(dataset.nodule_id[row]),
                         seriesuid=str(dataset.seriesuid[row]), label=int(dataset.labels[row]), prob=float(p),
                         ct=central_slice(x[k, 0].numpy()), attention=central_slice(maps[k]))
            slug = re.sub(r"[^A-Za-z0-9]+", "-", f"{group}_{ex.seriesuid[-12:]}_{ex.nodule_id}").strip("-")
            ex.png = save_pair_png(out_dir / "nodules" / f"{slug}.png", ex.ct, ex.attention,
                                   f"{group} p={ex.prob:.2f}")
            examples.append(ex)
    return examples


def save_montage(examples: list[Example], path: str | Path, per_group: int = 4, title: str = "") -> Path:
    """One row per group, ``per_group`` CT | attention pairs per row (Fig. 5 layout)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from naslung.atomic import write_png_atomic

    cols = 2 * max(1, per_group)
    fig, axes = plt.subplots(len(GROUPS), cols, figsize=(1.3 * cols, 1.5 * len(GROUPS) + 0.5), squeeze=False)
    for r, (group, _label, _correct) in enumerate(GROUPS):
        chosen = [e for e in examples if e.group == group]
        for c in range(cols):
            axes[r][c].axis("off")
        for k, ex in enumerate(chosen[:per_group]):
            pair = (axes[r][2 * k], axes[r][2 * k + 1])
            for ax in pair:
                ax.axis("on")
            draw_pair(pair, ex.ct, ex.attention, f"p={ex.prob:.2f}")
        axes[r][0].text(-0.15, 0.5, group if chosen else f"{group}\n(none)", transform=axes[r][0].transAxes,
                        rotation=90, va="center", ha="right", fontsize=8)
    fig.suptitle(title or "stage-2 spatial attention (CT | map; red = high)", fontsize=9)
    fig.tight_layout()
    return write_png_atomic(fig, path, dpi=110)
