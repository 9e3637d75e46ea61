"""The crop dataset file: HDF5, schema ``naslung-crops`` version 1.

Layout (N nodules; ``S = size + 2 * margin``)::

    /images        int16  (N, S, S, S) or (N, S, S)  HU, clipped to the window, 1 mm isotropic
    /labels        uint8  (N,)   1 = malignant (mean rating > 3), 0 = benign (mean < 3)
    /fold          int8   (N,)   LUNA16 subset index 0-9 of the nodule's scan
    /seriesuid     str    (N,)   LUNA16 series uid of the scan the crop comes from
    /nodule_id     str    (N,)   stable id of the label cluster
    /world_center  float64 (N, 3) x, y, z in mm (LUNA16 world convention)
    /diameter_mm   float32 (N,)
    /malignancy_mean, /malignancy_median  float32 (N,)
    /ratings       float32 (N, R) extra per-nodule ratings, names in attrs["rating_names"]
    /padded        bool   (N,)   the crop reached past the scan border and was padded with air
    /coverage      float32 (N,)  optional: share of the crop's samples inside the source volume (1.0 = all
                                 real CT); written by ``prepare --vois``, whose volumes cover the nodule only
    attrs: schema, schema_version, spatial_dims, size, margin, spacing_mm, window (lo, hi),
           rating_names, source_kind ("luna16", "lidc-voi", "phantom" or "other"),
           provenance (JSON: source, command, naslung version, date)

Image axes are world-aligned, ``(z, y, x)`` for 3-D and ``(y, x)`` (an axial slice) for 2-D, whatever the
scan's TransformMatrix; the nodule centre sits at the geometric centre of the array, index ``(S - 1) / 2``.
``prepare`` adds attrs ``pad_value_hu``, ``interpolation`` and ``axes``; readers must ignore unknown attrs.

Readers get float32 images scaled to [0, 1] over the window, so models never see raw HU.

This module is over 350 lines on purpose: it owns the file's schema, and its reader, writer and layout checks
share the field tables below; split apart, the schema would be written in two places.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, get_args

import numpy as np

from naslung import schemas
from naslung.data.errors import DataError
from naslung.data.validate import check_finite, check_open

SCHEMA = schemas.CROPS
SCHEMA_VERSION = 1
#: Where the crops come from: real LUNA16 scans, real LIDC nodule volumes (VOIs, ``prepare --vois``), the
#: LIDC phantom (synthetic CT), or anything else.
SourceKind = Literal["luna16", "lidc-voi", "phantom", "other"]
SOURCE_KINDS: tuple[str, ...] = get_args(SourceKind)


@dataclass
class NoduleDataset:
    """In-memory crop dataset. ``images`` are float32 in [0, 1], shape (N, [D,] H, W)."""

    images: np.ndarray
    labels: np.ndarray
    fold: np.ndarray
    seriesuid: np.ndarray
    nodule_id: np.ndarray
    world_center: np.ndarray
    diameter_mm: np.ndarray
    malignancy_mean: np.ndarray
    malignancy_median: np.ndarray
    ratings: np.ndarray
    padded: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def spatial_dims(self) -> int:
        return self.images.ndim - 1

    @property
    def size(self) -> int:
        """Side of the model input (the stored crop is ``size + 2 * margin``)."""
        return int(self.attrs.get("size", self.images.shape[-1]))

    @property
    def margin(self) -> int:
        return int(self.attrs.get("margin", 0))

    @property
    def source_kind(self) -> SourceKind:
        """``"luna16"``, ``"phantom"`` or ``"other"`` (attr ``source_kind``, see :func:`source_kind_of`)."""
        return source_kind_of(self.attrs)

    def subset(self, index: np.ndarray) -> NoduleDataset:
        """Rows ``index`` (integer or boolean array) as a new dataset sharing attrs."""
        kw = {f: getattr(self, f)[index] for f in _ARRAY_FIELDS}
        return NoduleDataset(**kw, attrs=dict(self.attrs))


_ARRAY_FIELDS = (
    "images", "labels", "fold", "seriesuid", "nodule_id", "world_center", "diameter_mm",
    "malignancy_mean", "malignancy_median", "ratings", "padded",
)
_ROW_FIELDS = _ARRAY_FIELDS[1:]  # everything but images: small, held in memory while streaming
#: Per-row arrays a writer may add (all rows or none); readers that do not know them ignore them.
OPTIONAL_FIELDS = ("coverage",)
_STR_FIELDS = ("seriesuid", "nodule_id")
_DTYPES = {
    "labels": np.uint8, "fold": np.int8, "world_center": np.float64, "diameter_mm": np.float32,
    "malignancy_mean": np.float32, "malignancy_median": np.float32, "ratings": np.float32, "padded": bool,
}
# write_dataset documents every attr but only enforces the one readers cannot do without (compatibility
# with callers that write small synthetic datasets).
REQUIRED_ATTRS = ("window",)


class DatasetWriter:
    """Stream crops into a dataset file, scan by scan, so memory does not grow with the crop count.

    Use as a context manager; ``append`` rows; the file appears at ``path`` atomically when the block exits
    without an exception, and an existing file at ``path`` is untouched otherwise::

        with DatasetWriter(out, crop_shape=(48, 48, 48), attrs=attrs) as w:
            w.append(images, labels=..., fold=..., ...)
    """

    def __init__(self, path: str | Path, crop_shape: tuple[int, ...], attrs: dict[str, Any]) -> None:
        missing = [k for k in REQUIRED_ATTRS if k not in attrs]
        if missing:
            raise ValueError(f"{path}: cannot write dataset, missing attrs {missing}")
        if "source_kind" in attrs and attrs["source_kind"] not in SOURCE_KINDS:
            raise ValueError(f"{path}: cannot write dataset, source_kind must be one of "
                             f"{list(SOURCE_KINDS)}, got {attrs['source_kind']!r}")
        self.path = Path(path)
        self.crop_shape = tuple(int(s) for s in crop_shape)
        self.attrs = {"spatial_dims": len(self.crop_shape), **attrs}
        self._rows: dict[str, list[np.ndarray]] = {name: [] for name in (*_ROW_FIELDS, *OPTIONAL_FIELDS)}
        self._stack = ExitStack()
        self._images: Any = None
        self.n = 0

    def __enter__(self) -> DatasetWriter:
        import h5py

        from naslung.atomic import atomic_path

        try:
            tmp = self._stack.enter_context(atomic_path(self.path))
            self._h5 = self._stack.enter_context(h5py.File(tmp, "w"))
            # One chunk per crop: random access for training, gzip level 1 is fast and halves the size.
            self._images = self._h5.create_dataset(
                "images", shape=(0, *self.crop_shape), maxshape=(None, *self.crop_shape), dtype=np.int16,
                chunks=(1, *self.crop_shape), compression="gzip", compression_opts=1)
        except BaseException as exc:
            # Delete the temporary and keep the target; atomic_path reports a failed write (disk full, no
            # permission) as an OSError naming the target.
            self._stack.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def append(self, images: np.ndarray, **rows: Any) -> None:
        """Append crops ``(n, *crop_shape)`` in HU and their per-row fields (every schema array)."""
        images = np.asarray(images)
        if images.shape[1:] != self.crop_shape:
            raise ValueError(f"{self.path}: crops of shape {images.shape[1:]}, expected {self.crop_shape}")
        missing = [f for f in _ROW_FIELDS if f not in rows]
        if missing:
            raise ValueError(f"{self.path}: cannot write dataset, missing arrays {missing}")
        n = len(images)
        for name in _ROW_FIELDS:
            if len(rows[name]) != n:
                raise ValueError(f"{self.path}: array {name!r} has {len(rows[name])} rows, images has {n}")
        unknown = sorted(set(rows) - set(_ROW_FIELDS) - set(OPTIONAL_FIELDS))
        if unknown:
            raise ValueError(f"{self.path}: unknown dataset arrays {unknown}")
        for name in OPTIONAL_FIELDS:
            if (name in rows) != bool(self._rows[name]) and self.n:
                raise ValueError(f"{self.path}: optional array {name!r} must be given for all rows or none")
            if name in rows and len(rows[name]) != n:
                raise ValueError(f"{self.path}: array {name!r} has {len(rows[name])} rows, images has {n}")
        if n == 0:
            return
        self._images.resize(self.n + n, axis=0)
        self._images[self.n:] = np.asarray(images, dtype=np.int16)
        for name in (*_ROW_FIELDS, *OPTIONAL_FIELDS):
            if name in rows:
                self._rows[name].append(np.asarray(rows[name]))
        self.n += n

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            try:
                self._finish()
            except BaseException as err:
                self._stack.__exit__(type(err), err, err.__traceback__)
                raise
        # Closes the HDF5 file, then atomic_path renames (success) or deletes (error) the temporary; a failed
        # write comes out as an OSError naming the target (naslung.atomic.write_error).
        self._stack.__exit__(exc_type, exc, tb)

    def _finish(self) -> None:
        import h5py

        n_ratings = len(self.attrs.get("rating_names", []))
        for name in _ROW_FIELDS:
            parts = self._rows[name]
            if name in _STR_FIELDS:
                data = np.concatenate(parts) if parts else np.zeros(0)
                self._h5.create_dataset(name, data=np.asarray([str(v) for v in data], dtype=object),
                                        dtype=h5py.string_dtype())
                continue
            if parts:
                data = np.concatenate(parts).astype(_DTYPES[name])
            else:
                data = np.zeros({"world_center": (0, 3), "ratings": (0, n_ratings)}.get(name, (0,)),
                                dtype=_DTYPES[name])
            self._h5.create_dataset(name, data=data)
        for name in OPTIONAL_FIELDS:
            if self._rows[name]:
                self._h5.create_dataset(name, data=np.concatenate(self._rows[name]).astype(np.float32))
        self._h5.attrs["schema"] = SCHEMA
        self._h5.attrs["schema_version"] = SCHEMA_VERSION
        for key, value in self.attrs.items():
            self._h5.attrs[key] = json.dumps(value) if isinstance(value, dict | list | tuple) else value


def write_dataset(path: str | Path, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> Path:
    """Write a complete dataset atomically. ``arrays`` holds every ``/`` dataset of the schema with
    ``images`` in int16 HU; ``attrs`` must include spatial_dims, size, margin, spacing_mm, window,
    rating_names and provenance (a dict)."""
    missing = [f for f in _ARRAY_FIELDS if f not in arrays]
    if missing:
        raise ValueError(f"{path}: cannot write dataset, missing arrays {missing}")
    images = np.asarray(arrays["images"])
    n = len(arrays["labels"])
    for name in _ARRAY_FIELDS:
        if len(arrays[name]) != n:
            raise ValueError(f"{path}: array {name!r} has {len(arrays[name])} rows, labels has {n}")
    with DatasetWriter(path, images.shape[1:], attrs) as writer:
        writer.append(images, **{name: arrays[name] for name in _ROW_FIELDS})
    return Path(path)


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn what h5py and numpy raise on a damaged or foreign file into a :class:`DataError` naming it."""
    try:
        yield
    except DataError:
        raise
    except (OSError, KeyError, TypeError, ValueError, IndexError, RuntimeError, AttributeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: not a readable HDF5 dataset ({reason})") from exc


def read_attrs(path: str | Path) -> dict[str, Any]:
    """Attributes of a dataset file, JSON-decoded; validates the schema, its version and the window."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: dataset file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a dataset file")
    with _reading(path), h5py.File(path, "r") as h5:
        attrs = {k: _decode(v) for k, v in h5.attrs.items()}
    if attrs.get("schema") != SCHEMA:
        raise DataError(f"{path}: not a naslung crop dataset (schema={attrs.get('schema')!r})")
    try:
        version = int(attrs["schema_version"])
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{path}: no valid schema_version attribute") from None
    if version > SCHEMA_VERSION:
        raise DataError(f"{path}: schema version {version} is newer than this naslung ({SCHEMA_VERSION}); "
                        f"upgrade naslung")
    if version < 1:
        raise DataError(f"{path}: unknown schema version {version}")
    attrs["window"] = list(window_of(attrs, path))
    attrs["source_kind"] = source_kind_of(attrs, path)
    return attrs


def source_kind_of(attrs: dict[str, Any], path: str | Path = "dataset") -> SourceKind:
    """The ``source_kind`` of a dataset's attrs; a value outside :data:`SOURCE_KINDS` is a DataError.

    Files written before the attribute existed are classified once, here, from their provenance's explicit
    ``phantom`` entry (never from a word in it): ``naslung data prepare`` always wrote that key, holding the
    phantom manifest's fields for a phantom tree and null for a LUNA16-layout tree (then "luna16", the only
    real data naslung prepared); a file without the key was not written by prepare ("other").
    """
    if "source_kind" in attrs:
        kind = attrs["source_kind"]
        if kind not in SOURCE_KINDS:
            raise DataError(f"{path}: attribute 'source_kind' must be one of {list(SOURCE_KINDS)}, "
                            f"got {kind!r}")
        return kind
    provenance = attrs.get("provenance")
    if not isinstance(provenance, dict) or "phantom" not in provenance:
        return "other"
    mark = provenance["phantom"]
    return "phantom" if (isinstance(mark, dict) and mark) or mark is True else "luna16"


def read_source_kind(path: str | Path) -> SourceKind:
    """The ``source_kind`` of the dataset file ``path`` (attributes only, no array read)."""
    return read_attrs(path)["source_kind"]


def window_of(attrs: dict[str, Any], path: str | Path) -> tuple[float, float]:
    """The HU window ``(lo, hi)`` of a file's attrs: two finite numbers with lo < hi, else a DataError."""
    if "window" not in attrs:
        raise DataError(f"{path}: no 'window' attribute (the HU window lo,hi the crops were clipped to)")
    value = attrs["window"]
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise DataError(f"{path}: attribute 'window' must be two numbers lo,hi, got {value!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise DataError(f"{path}: attribute 'window' {[lo, hi]} must be finite with lo < hi")
    return lo, hi


def check_layout(h5: Any, path: str | Path, names: tuple[str, ...] = _ARRAY_FIELDS) -> int:
    """Check that ``names`` are arrays of one length with the schema's shapes; return that length N.

    Reads no data: only shapes and dtypes. Every problem is a :class:`DataError` naming the file.
    """
    import h5py

    missing = [name for name in names if name not in h5]
    if missing:
        raise DataError(f"{path}: dataset file lacks array(s) {missing}")
    for name in names:
        if not isinstance(h5[name], h5py.Dataset):
            raise DataError(f"{path}: {name!r} is a {type(h5[name]).__name__}, not an array")
    shapes = {name: tuple(h5[name].shape) for name in names}
    ref = "labels" if "labels" in names else names[0]
    if len(shapes[ref]) == 0:
        raise DataError(f"{path}: array {ref!r} is a scalar, expected one row per nodule")
    n = shapes[ref][0]
    for name in names:
        shape = shapes[name]
        if len(shape) == 0 or shape[0] != n:
            raise DataError(f"{path}: array {name!r} has {shape[0] if shape else 0} rows but {ref!r} has {n}")
        want = {"images": (3, 4), "world_center": (2,), "ratings": (2,)}.get(name, (1,))
        if len(shape) not in want:
            raise DataError(f"{path}: array {name!r} has shape {list(shape)}, expected {max(want)} axes")
        if name == "world_center" and shape[1] != 3:
            raise DataError(f"{path}: array 'world_center' has shape {list(shape)}, expected (N, 3)")
        kind = h5[name].dtype.kind
        if name in _STR_FIELDS:
            if kind not in "OSUiu":
                raise DataError(f"{path}: array {name!r} has dtype {h5[name].dtype}, expected strings")
        elif name in ("labels", "fold", "padded") and kind not in "biu":
            raise DataError(f"{path}: array {name!r} has dtype {h5[name].dtype}, expected integers")
        elif kind not in "biuf":
            raise DataError(f"{path}: array {name!r} has dtype {h5[name].dtype}, expected numbers")
    return int(n)


def _checked_labels(labels: np.ndarray, path: Path) -> np.ndarray:
    bad = ~np.isin(labels, (0, 1))
    if bad.any():
        raise DataError(f"{path}: array 'labels' must hold 0 (benign) or 1 (malignant), "
                        f"row {int(np.flatnonzero(bad)[0])} holds {labels[bad][0].item()!r}")
    return labels


def load_dataset(path: str | Path) -> NoduleDataset:
    """Load a whole dataset into memory; images become float32 in [0, 1] over the stored window."""
    import h5py

    path = Path(path)
    attrs = read_attrs(path)
    with _reading(path), h5py.File(path, "r") as h5:
        check_layout(h5, path)
        check_open(h5, attrs, path)
        arrays = {name: h5[name][()] for name in _ARRAY_FIELDS}
    _checked_labels(arrays["labels"], path)
    check_finite(arrays["images"], path)
    arrays["images"] = to_unit_range(arrays["images"], attrs["window"])
    for name in _STR_FIELDS:
        arrays[name] = _strings(arrays[name])
    return NoduleDataset(attrs=attrs, **arrays)


def to_unit_range(images_hu: np.ndarray, window: Any) -> np.ndarray:
    """int16 HU -> float32 in [0, 1] over ``window`` (lo, hi)."""
    lo, hi = (float(v) for v in window)
    images = (images_hu.astype(np.float32) - lo) / (hi - lo)
    np.clip(images, 0.0, 1.0, out=images)
    return images


def read_rows(path: str | Path, index: np.ndarray, fields: tuple[str, ...] = _ARRAY_FIELDS) -> dict[str, Any]:
    """Selected rows of selected arrays, without loading the rest (images stay int16 HU)."""
    import h5py

    path = Path(path)
    attrs = read_attrs(path)
    index = np.sort(np.asarray(index, dtype=np.int64))
    with _reading(path), h5py.File(path, "r") as h5:
        n = check_layout(h5, path, tuple(dict.fromkeys(("labels", *fields))))
        check_open(h5, attrs, path)
        if len(index) and (index[0] < 0 or index[-1] >= n):
            raise DataError(f"{path}: row index out of range 0..{n - 1}")
        out = {name: h5[name][index] if len(index) else h5[name][:0] for name in fields}
    if "images" in out:
        check_finite(np.asarray(out["images"]), path, 0)
    if "labels" in out:
        _checked_labels(out["labels"], path)
    for name in _STR_FIELDS:
        if name in out:
            out[name] = _strings(out[name])
    return out


def describe_dataset(path: str | Path) -> dict[str, Any]:
    """Counts by fold and label, totals and attrs of a dataset file, without reading the images."""
    import h5py

    path = Path(path)
    attrs = read_attrs(path)
    with _reading(path), h5py.File(path, "r") as h5:
        check_layout(h5, path, ("images", "labels", "fold", "seriesuid", "padded"))
        check_open(h5, attrs, path)
        labels = _checked_labels(h5["labels"][()], path)
        fold = h5["fold"][()]
        padded = h5["padded"][()]
        shape = list(h5["images"].shape)
        n_scans = len(set(_strings(h5["seriesuid"][()])))
        coverage = h5["coverage"][()] if "coverage" in h5 else None
    by_fold = {}
    for k in sorted(set(fold.tolist())):
        sel = fold == k
        by_fold[int(k)] = {"benign": int(np.sum(labels[sel] == 0)),
                           "malignant": int(np.sum(labels[sel] == 1)), "total": int(sel.sum())}
    provenance = attrs.pop("provenance", {})
    return {
        "path": str(path),
        "n": int(len(labels)),
        "benign": int(np.sum(labels == 0)),
        "malignant": int(np.sum(labels == 1)),
        "scans": n_scans,
        "padded": int(np.sum(padded)),
        "coverage": _coverage_summary(coverage),
        "image_shape": shape,
        "by_fold": by_fold,
        "attrs": attrs,
        "provenance": provenance,
    }


def _coverage_summary(coverage: np.ndarray | None) -> dict[str, float] | None:
    """Median and minimum share of real CT per crop (None when the file has no ``/coverage``)."""
    if coverage is None or not len(coverage):
        return None
    return {"median": round(float(np.median(coverage)), 3), "min": round(float(np.min(coverage)), 3)}


def _strings(values: np.ndarray) -> np.ndarray:
    return np.array([v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in values],
                    dtype=str)


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
