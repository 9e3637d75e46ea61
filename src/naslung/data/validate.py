"""The crop dataset validator: cheap checks on every open, and a full read for ``naslung data info --check``.

:func:`check_open` runs whenever :mod:`naslung.data.dataset` opens a file (``load_dataset``, ``read_rows``,
``describe_dataset``): it reads the attributes and the small per-row arrays, never the images, and refuses
what would give a wrong result without an error later: an image shape that disagrees with the attributes
(``size + 2 * margin`` per axis, ``spatial_dims`` axes), a negative margin, a size below 1, a spacing that is
not a finite positive number, a negative or non-finite diameter, a non-finite world centre, a negative fold.
:func:`check_trainable` refuses a dataset whose labels hold a single class where a model is to be trained.
:func:`check_pixels` reads every crop (chunk by chunk) for non-finite values, values outside the stored HU
window (prepare clips to it) and constant crops (a failed read gives a crop of one value).

Every problem is a :class:`~naslung.data.errors.DataError` whose one-line message names the file (and row).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from naslung.data.errors import DataError

#: Rows of images read at once by :func:`check_pixels` (48^3 int16 crops: 256 rows are 57 MB).
CHUNK_ROWS = 256


def _int_attr(attrs: dict[str, Any], key: str, path: Path) -> int | None:
    if key not in attrs:
        return None
    value = attrs[key]
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating) \
            or not math.isfinite(float(value)) or float(value) != int(value):
        raise DataError(f"{path}: attribute {key!r} must be a whole number, got {value!r}")
    return int(value)


def check_open(h5: Any, attrs: dict[str, Any], path: str | Path) -> None:
    """Cheap checks of an open dataset file (its layout already checked): see the module docstring."""
    path = Path(path)
    images = h5.get("images", None)
    dims = _int_attr(attrs, "spatial_dims", path)
    size = _int_attr(attrs, "size", path)
    margin = _int_attr(attrs, "margin", path)
    if dims is not None and dims not in (2, 3):
        raise DataError(f"{path}: attribute 'spatial_dims' must be 2 or 3, got {dims}")
    if size is not None and size < 1:
        raise DataError(f"{path}: attribute 'size' must be at least 1, got {size}")
    if margin is not None and margin < 0:
        raise DataError(f"{path}: attribute 'margin' must be >= 0, got {margin}")
    if "spacing_mm" in attrs:
        spacing = attrs["spacing_mm"]
        try:
            ok = math.isfinite(float(spacing)) and float(spacing) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise DataError(f"{path}: attribute 'spacing_mm' must be a finite number > 0, got {spacing!r}")
    if images is not None:
        shape = tuple(int(s) for s in images.shape[1:])
        if dims is not None and len(shape) != dims:
            raise DataError(f"{path}: array 'images' has {len(shape)}-D crops {list(shape)}, but attribute "
                            f"'spatial_dims' is {dims}")
        if len(set(shape)) > 1:
            raise DataError(f"{path}: array 'images' holds crops of shape {list(shape)}; naslung crops are "
                            f"cubes (squares in 2-D)")
        if size is not None and margin is not None and shape and shape[0] != size + 2 * margin:
            raise DataError(f"{path}: array 'images' holds crops of side {shape[0]}, but attributes size "
                            f"{size} + 2 x margin {margin} make {size + 2 * margin}")
        if images.dtype.kind not in "iuf":
            raise DataError(f"{path}: array 'images' has dtype {images.dtype}, expected int16 HU")
    for name, lower in (("diameter_mm", 0.0), ("world_center", None), ("fold", 0)):
        if name not in h5:
            continue
        values = np.asarray(h5[name][()], dtype=np.float64)
        if not values.size:
            continue
        finite = np.isfinite(values)
        bad = ~finite if lower is None else ~finite | (values < lower)
        rows = bad.reshape(len(values), -1).any(axis=1)
        if rows.any():
            row = int(np.flatnonzero(rows)[0])
            want = "finite" if lower is None else f"finite and >= {lower:g}"
            raise DataError(f"{path}: array {name!r} must be {want}; row {row} holds {values[row].tolist()} "
                            f"({int(rows.sum())} such row(s))")


def check_trainable(labels: np.ndarray, path: str | Path, what: str = "training") -> None:
    """Refuse labels that hold a single class (or none): nothing could be learned or selected."""
    classes = sorted({int(c) for c in np.asarray(labels).tolist()})
    if len(classes) < 2:
        held = "no nodule" if not classes else f"only class {classes[0]} " + \
            ("(benign)" if classes[0] == 0 else "(malignant)")
        raise DataError(f"{path}: {what} needs benign and malignant nodules; the labels hold {held}")


def check_finite(images: np.ndarray, path: str | Path, first_row: int = 0) -> None:
    """Refuse crops holding NaN or infinite values (possible only in a float ``images`` array)."""
    if images.dtype.kind != "f" or not images.size:
        return
    bad = ~np.isfinite(images.reshape(len(images), -1)).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: array 'images' row {first_row + row} holds non-finite values (NaN or inf); "
                        f"{int(bad.sum())} such crop(s)")


def check_pixels(path: str | Path) -> dict[str, Any]:
    """Read every crop of a dataset file; a :class:`DataError` names the first problem and counts them all.

    Returns ``{"crops_read": N, "problems": 0}`` for a sound file.
    """
    import h5py

    from naslung.data.dataset import _reading, _strings, check_layout, read_attrs

    path = Path(path)
    attrs = read_attrs(path)
    lo, hi = attrs["window"]
    problems: list[str] = []
    counts = {"non-finite": 0, "outside the window": 0, "constant": 0}
    with _reading(path), h5py.File(path, "r") as h5:
        n = check_layout(h5, path, ("images", "labels", "seriesuid", "nodule_id"))
        check_open(h5, attrs, path)
        images = h5["images"]
        for start in range(0, n, CHUNK_ROWS):
            chunk = np.asarray(images[start:start + CHUNK_ROWS]).reshape(min(CHUNK_ROWS, n - start), -1)
            for label, bad in (("non-finite", ~np.isfinite(chunk).all(axis=1) if chunk.dtype.kind == "f"
                                else np.zeros(len(chunk), bool)),
                               ("outside the window", _outside(chunk, lo, hi)),
                               ("constant", (chunk.min(axis=1) == chunk.max(axis=1)) if chunk.size else
                                np.zeros(len(chunk), bool))):
                if bad.any():
                    counts[label] += int(bad.sum())
                    problems.append(f"array 'images' row {start + int(np.flatnonzero(bad)[0])} "
                                    f"{_PROBLEM[label]}")
        keys = list(zip(_strings(h5["seriesuid"][()]), _strings(h5["nodule_id"][()]), strict=True))
    seen: dict[tuple[str, str], int] = {}
    for row, key in enumerate(keys):
        if key in seen:
            problems.append(f"row {row} repeats nodule {key[1]} of series {key[0]} (row {seen[key]})")
            counts["repeated"] = counts.get("repeated", 0) + 1
        seen.setdefault(key, row)
    if problems:
        summary = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
        raise DataError(f"{path}: {problems[0]} ({summary}, of {n} crops; HU window {lo:g},{hi:g})")
    return {"crops_read": n, "problems": 0}


_PROBLEM = {"non-finite": "holds non-finite values (NaN or inf)",
            "outside the window": "holds values outside the HU window (prepare clips to it)",
            "constant": "is constant: one value throughout (a failed read?)"}


def _outside(chunk: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Rows of ``chunk`` with a finite value outside ``[lo, hi]`` (prepare clips every crop to it)."""
    with np.errstate(invalid="ignore"):
        finite = np.where(np.isfinite(chunk), chunk, lo) if chunk.dtype.kind == "f" else chunk
        return ((finite < lo) | (finite > hi)).any(axis=1)
