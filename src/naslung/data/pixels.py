"""The full read of a crop dataset for ``naslung data info --check``: every crop, chunk by chunk.

:func:`check_pixels` looks for non-finite values, values outside the stored HU window (prepare clips to it),
constant crops (a failed read gives a crop of one value) and repeated nodules. Every problem is a
:class:`~naslung.data.errors.DataError` whose one-line message names the file and row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from naslung.data.dataset import _reading, _strings, check_layout, read_attrs
from naslung.data.errors import DataError
from naslung.data.validate import check_open

#: Rows of images read at once by :func:`check_pixels` (48^3 int16 crops: 256 rows are 57 MB).
CHUNK_ROWS = 256


def check_pixels(path: str | Path) -> dict[str, Any]:
    """Read every crop of a dataset file; a :class:`DataError` names the first problem and counts them all.

    Returns ``{"crops_read": N, "problems": 0}`` for a sound file.
    """
    import h5py

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
