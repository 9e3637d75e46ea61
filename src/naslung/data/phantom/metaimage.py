"""Write LUNA16-style MetaImage pairs atomically: ``.mhd`` header + uncompressed little-endian int16 ``.raw``.

The ``.raw`` is written first and the ``.mhd`` last, each through a temporary file, so an existing ``.mhd``
means the pair is complete (``is_complete`` also checks the ``.raw`` size): phantom builds can resume.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from naslung.atomic import atomic_path


def _fmt(values: Sequence[float]) -> str:
    return " ".join(f"{float(v):.10g}" for v in values)


def write_mhd(
    path: str | Path,
    array: np.ndarray,
    spacing: Sequence[float],
    origin: Sequence[float],
    direction: Sequence[float] = (1, 0, 0, 0, 1, 0, 0, 0, 1),
) -> Path:
    """Write ``array`` (int16, ``(z, y, x)``) as ``path`` (.mhd) + sibling .raw; geometry in ITK x, y, z.

    ``direction`` is the row-major 3x3 direction matrix; a voxel at index ``i`` lies at
    ``origin + direction @ (i * spacing)``.
    """
    path = Path(path)
    raw = path.with_suffix(".raw")
    data = np.ascontiguousarray(array, dtype="<i2")
    with atomic_path(raw) as tmp:
        data.tofile(tmp)
    header = "\n".join([
        "ObjectType = Image",
        "NDims = 3",
        "BinaryData = True",
        "BinaryDataByteOrderMSB = False",
        "CompressedData = False",
        f"TransformMatrix = {_fmt(direction)}",
        f"Offset = {_fmt(origin)}",
        "CenterOfRotation = 0 0 0",
        "AnatomicalOrientation = RAI",
        f"ElementSpacing = {_fmt(spacing)}",
        f"DimSize = {' '.join(str(n) for n in array.shape[::-1])}",
        "ElementType = MET_SHORT",
        f"ElementDataFile = {raw.name}",
    ])
    with atomic_path(path) as tmp:
        tmp.write_text(header + "\n")
    return path


def read_header(path: str | Path) -> dict[str, str]:
    """The ``key = value`` pairs of an ``.mhd`` header."""
    fields = {}
    for line in Path(path).read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def is_complete(path: str | Path) -> bool:
    """True when ``path`` (.mhd) exists and its .raw holds exactly the bytes the header promises."""
    path = Path(path)
    if not path.exists():
        return False
    try:
        header = read_header(path)
        raw = path.parent / header["ElementDataFile"]
        n_voxels = int(np.prod([int(n) for n in header["DimSize"].split()]))
    except (KeyError, ValueError, OSError):
        return False
    return raw.exists() and raw.stat().st_size == 2 * n_voxels
