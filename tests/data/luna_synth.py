"""A tiny synthetic LUNA16 tree for the ingestion tests: a few small scans with bright spheres.

Voxel world positions are computed here straight from the MetaImage definition
(``world = origin + D @ (index * spacing)``), independently of ``naslung.data.luna16``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk  # noqa: N813

from naslung.data.luna16 import load_subset_table

BACKGROUND_HU = -800
NODULE_HU = 100
MARKER_HU = 400
FLIPPED = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
RATINGS = ("subtlety", "internalStructure", "calcification", "sphericity", "margin", "lobulation",
           "spiculation", "texture")


def luna_uid(subset: int, i: int = 0) -> str:
    """The ``i``-th real LUNA16 series uid of ``subset``."""
    return sorted(u for u, s in load_subset_table().items() if s == subset)[i]


@dataclass
class Sphere:
    center: tuple[float, float, float]  # world mm
    diameter: float
    hu: int = NODULE_HU


@dataclass
class Scan:
    uid: str
    subset: int
    shape_zyx: tuple[int, int, int] = (40, 64, 64)
    spacing: tuple[float, float, float] = (0.8, 0.8, 1.25)
    origin: tuple[float, float, float] = (-25.0, -30.0, -100.0)
    direction: tuple[float, ...] = IDENTITY
    spheres: list[Sphere] = field(default_factory=list)
    pixel_type: int = sitk.sitkInt16


def voxel_world(scan: Scan, box: tuple[slice, slice, slice] | None = None) -> np.ndarray:
    """World mm ``(z, y, x, 3)`` of the voxel centres in ``box`` (z, y, x slices), by the MetaImage rule."""
    box = box or tuple(slice(0, n) for n in scan.shape_zyx)
    k, j, i = np.meshgrid(*[np.arange(b.start, b.stop) for b in box], indexing="ij")
    idx = np.stack([i, j, k], axis=-1) * np.asarray(scan.spacing)
    return np.asarray(scan.origin) + idx @ np.asarray(scan.direction).reshape(3, 3).T


def voxel_index(scan: Scan, world: tuple[float, float, float]) -> np.ndarray:
    """Continuous (x, y, z) index of a world point (inverse of the definition above)."""
    d = np.asarray(scan.direction).reshape(3, 3)
    return np.linalg.inv(d) @ (np.asarray(world) - np.asarray(scan.origin)) / np.asarray(scan.spacing)


def render(scan: Scan) -> np.ndarray:
    """Background HU with the spheres drawn in, each within a small box around it (scans may be large)."""
    image = np.full(scan.shape_zyx, BACKGROUND_HU, dtype=np.float32)
    for sphere in scan.spheres:
        centre = voxel_index(scan, sphere.center)[::-1]  # (k, j, i)
        reach = sphere.diameter / 2 / np.asarray(scan.spacing)[::-1] + 2
        box = tuple(slice(int(max(c - r, 0)), int(min(c + r + 1, n)))
                    for c, r, n in zip(centre, reach, scan.shape_zyx, strict=True))
        distance = np.linalg.norm(voxel_world(scan, box) - np.asarray(sphere.center), axis=-1)
        inside = distance <= sphere.diameter / 2
        image[box][inside] = sphere.hu
    return image


def write_scan(root: Path, scan: Scan, image: np.ndarray | None = None) -> Path:
    image = render(scan) if image is None else image
    dtype = np.int16 if scan.pixel_type == sitk.sitkInt16 else np.float32
    img = sitk.GetImageFromArray(image.astype(dtype))
    img.SetSpacing(scan.spacing)
    img.SetOrigin(scan.origin)
    img.SetDirection(scan.direction)
    path = root / f"subset{scan.subset}" / f"{scan.uid}.mhd"
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))
    return path


@dataclass
class Tree:
    root: Path
    scans: list[Scan]
    labels: pd.DataFrame  # kept + excluded rows, as written to labels.csv
    kept: pd.DataFrame  # rows expected in the dataset, in dataset order

    def scan(self, uid: str) -> Scan:
        return next(s for s in self.scans if s.uid == uid)


def label_row(scan: Scan, nodule_id: int, sphere: Sphere, ratings: list[int]) -> dict[str, object]:
    mean = float(np.mean(ratings))
    vox = voxel_index(scan, sphere.center)
    row: dict[str, object] = {
        "seriesuid": scan.uid, "subset": scan.subset, "nodule_id": nodule_id, "n_readers": len(ratings),
        "malignancy_mean": mean, "malignancy_median": float(np.median(ratings)),
        "malignancy_ratings": ";".join(map(str, ratings)), "label": int(mean > 3),
        "diameter_mm": sphere.diameter, "centroid_x_vox": vox[0], "centroid_y_vox": vox[1],
        "centroid_z_vox": vox[2], "coordX": sphere.center[0], "coordY": sphere.center[1],
        "coordZ": sphere.center[2],
    }
    row.update({name: float(nodule_id + 1) for name in RATINGS})
    return row


def make_tree(root: Path) -> Tree:
    """Four scans in subsets 0-3: identity, flipped (with an orientation marker), another spacing, none.

    Labels: 4 kept nodules (one near a border, so its crop is padded) and 1 excluded (mean rating 3).
    """
    a = Scan(luna_uid(0), 0, spheres=[Sphere((2.0, -5.0, -75.0), 8.0), Sphere((-22.0, -4.0, -80.0), 6.0)])
    # Flipped: world x decreases along the array's x axis. The marker sits 10 mm towards +x world.
    b = Scan(luna_uid(1), 1, origin=(20.0, 25.0, -60.0), direction=FLIPPED,
             spheres=[Sphere((-5.0, 0.0, -35.0), 8.0), Sphere((5.0, 0.0, -35.0), 3.0, MARKER_HU)])
    c = Scan(luna_uid(2), 2, shape_zyx=(30, 70, 70), spacing=(0.7, 0.7, 2.0), origin=(0.0, 0.0, 10.0),
             spheres=[Sphere((24.0, 25.0, 40.0), 10.0), Sphere((38.0, 40.0, 60.0), 6.0)])
    d = Scan(luna_uid(3), 3)
    scans = [a, b, c, d]
    for scan in scans:
        write_scan(root, scan)
    rows = [
        label_row(a, 0, a.spheres[0], [4, 5, 4]),
        label_row(a, 1, a.spheres[1], [2, 1, 2, 2]),
        label_row(b, 0, b.spheres[0], [5, 5, 4, 4]),
        label_row(c, 0, c.spheres[0], [1, 2, 2]),
        label_row(c, 1, c.spheres[1], [3, 3, 3]),  # mean 3: excluded
    ]
    labels = pd.DataFrame(rows)
    labels.to_csv(root / "labels.csv", index=False)
    annotations = labels[["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"]]
    annotations.to_csv(root / "annotations.csv", index=False)
    kept = labels[labels["malignancy_mean"] != 3].reset_index(drop=True)
    return Tree(root, scans, labels, kept)
