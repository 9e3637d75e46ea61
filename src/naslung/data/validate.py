"""The crop dataset validator: cheap checks on every open, and a full read for ``naslung data info --check``.

:func:`check_open` runs whenever :mod:`naslung.data.dataset` opens a file (``load_dataset``, ``read_rows``,
``describe_dataset``): it reads the attributes and the small per-row arrays, never the images, and refuses
what would give a wrong result without an error later: an image shape that disagrees with the attributes
(``size + 2 * margin`` per axis, ``spatial_dims`` axes), a negative margin, a size below 1, a spacing that is
not a finite positive number, a negative or non-finite diameter, a non-finite world centre, a negative fold.
:func:`check_trainable` refuses a dataset whose labels hold a single class where a model is to be trained.
:func:`naslung.data.pixels.check_pixels` (``naslung data info --check``) reads every crop; it lives in its own
module because it reads through :mod:`naslung.data.dataset`, which imports this one.

Every problem is a :class:`~naslung.data.errors.DataError` whose one-line message names the file (and row).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from naslung.data.errors import DataError


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
