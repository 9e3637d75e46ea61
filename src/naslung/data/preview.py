"""A montage PNG of a crop dataset, for a person to check the crops (centring, window, labels) at a glance."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from naslung.data.dataset import read_attrs, read_rows
from naslung.data.errors import DataError

COLUMNS = 6


def render_preview(dataset: str | Path, out: str | Path, n: int = 24, seed: int = 0) -> Path:
    """Write a grid of ``n`` random crops' central axial slices (the whole 2-D crop) to ``out`` (PNG).

    Each tile shows the label, diameter and fold; a dashed square marks the model input (``size``) inside
    the stored margin. The figure title gives the HU window, which is also the grey scale. The PNG is
    written atomically. Rows are drawn with ``numpy.random.default_rng(seed)``, so a seed gives one montage.
    """
    import h5py
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    from naslung.atomic import atomic_path

    dataset = Path(dataset)
    attrs = read_attrs(dataset)
    with h5py.File(dataset, "r") as h5:
        total = int(h5["labels"].shape[0])
    if total == 0:
        raise DataError(f"{dataset}: the dataset is empty, nothing to preview")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    index = np.sort(np.random.default_rng(seed).choice(total, size=min(n, total), replace=False))
    rows = read_rows(dataset, index, ("images", "labels", "fold", "diameter_mm", "padded"))
    images = rows["images"]
    if images.ndim == 4:  # 3-D crops (N, z, y, x): the axial slice nearest the centre (S - 1) / 2
        images = images[:, images.shape[1] // 2]
    lo, hi = (float(v) for v in attrs["window"])
    side, size = images.shape[-1], int(attrs.get("size", images.shape[-1]))

    cols = min(COLUMNS, len(index))
    nrows = math.ceil(len(index) / cols)
    fig = Figure(figsize=(2.0 * cols, 2.3 * nrows + 0.8), layout="constrained")
    FigureCanvasAgg(fig)
    for i in range(len(index)):
        ax = fig.add_subplot(nrows, cols, i + 1)
        ax.imshow(images[i], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        corner = (side - size) / 2 - 0.5
        ax.add_patch(Rectangle((corner, corner), size, size, fill=False, ec="tab:cyan", ls="--", lw=0.6))
        label = "malignant" if int(rows["labels"][i]) == 1 else "benign"
        pad = ", padded" if bool(rows["padded"][i]) else ""
        ax.set_title(f"{label}\n{float(rows['diameter_mm'][i]):.1f} mm, fold {int(rows['fold'][i])}{pad}",
                     fontsize=8, color="tab:red" if label == "malignant" else "black")
        ax.set_xticks([])
        ax.set_yticks([])
    dims = int(attrs.get("spatial_dims", rows["images"].ndim - 1))
    title = (f"{dataset.name}: {len(index)} of {total} nodules, {dims}-D, central axial slices, "
             f"{attrs.get('spacing_mm', '?')} mm voxels\nwindow [{lo:g}, {hi:g}] HU; dashed square = "
             f"model input {size} px inside the {side} px crop")
    phantom = (attrs.get("provenance") or {}).get("phantom")
    if phantom:
        title += "\nLIDC phantom (synthetic CT): accuracy on the phantom is not accuracy on LIDC"
    fig.suptitle(title, fontsize=9)
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return out
