"""MetaImage (``.mhd``/``.mha``) headers checked before SimpleITK reads the pixels.

SimpleITK reads part of an oversized ``.raw``, reads int16 HU as bytes when ``ElementType`` is wrong, and
reports a truncated ``.raw`` as "No such file or directory" on the ``.mhd``. :func:`check_metaimage` finds
each of these first and names the file and the header fields involved. (The phantom's writer is
``naslung.data.phantom.metaimage``.)
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from naslung.data.errors import DataError

# Bytes per element of the MetaImage element types (MetaIO's table; MET_LONG is 4 bytes there).
_MET_BYTES = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
    "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8,
}


def _parse_metaimage_header(path: Path) -> dict[str, str]:
    """``Key = Value`` lines of a MetaImage header, up to ElementDataFile (works for .mha too)."""
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    header: dict[str, str] = {}
    for raw_line in head.split(b"\n"):
        line = raw_line.decode("latin-1").strip()
        if "=" not in line:
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        header[key] = value
        if key == "ElementDataFile":
            break
    return header


def check_metaimage(path: str | Path) -> dict[str, str]:
    """Check a ``.mhd``/``.mha`` header, its geometry fields, and that its pixel file has the exact size.

    The ``.raw`` must hold exactly ``prod(DimSize) * bytes(ElementType) * channels + HeaderSize`` bytes: a
    larger file means the header's DimSize or ElementType is wrong (SimpleITK would read part of it, or read
    int16 HU as bytes), a smaller one is truncated (SimpleITK reports that as "No such file or directory" on
    the ``.mhd``). Every error is a :class:`DataError` naming the file and the header fields involved.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: MetaImage header not found")
    try:
        header = _parse_metaimage_header(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the MetaImage header ({exc.strerror or exc})") from exc
    for key in ("NDims", "DimSize", "ElementType", "ElementDataFile"):
        if key not in header:
            raise DataError(f"{path}: not a valid MetaImage header (no {key} line)")
    ndims = _header_ints(path, header, "NDims", 1)[0]
    if not 1 <= ndims <= 10:
        raise DataError(f"{path}: NDims = {header['NDims']} is not a usable dimension")
    dims = _header_ints(path, header, "DimSize", ndims)
    if min(dims) < 1:
        raise DataError(f"{path}: DimSize = {header['DimSize']} has a size below 1")
    _check_geometry_fields(path, header, ndims)
    data_file = header["ElementDataFile"]
    if data_file == "LOCAL" or data_file.startswith("LIST") or "%" in data_file:
        return header  # pixels inline or spread over several files: leave it to SimpleITK
    raw = path.parent / data_file
    if not raw.is_file():
        # The header's full path: an absolute ElementDataFile (even "/") puts ``raw`` outside its folder.
        raise DataError(f"{raw}: pixel data file missing (named by {path})")
    nbytes = _MET_BYTES.get(header["ElementType"])
    if nbytes is None:
        raise DataError(f"{path}: unknown ElementType = {header['ElementType']} (expected one of "
                        f"{', '.join(_MET_BYTES)})")
    channels = _header_ints(path, header, "ElementNumberOfChannels", 1, default="1")[0]
    if channels < 1:
        raise DataError(f"{path}: ElementNumberOfChannels = {channels} is below 1")
    offset = _header_ints(path, header, "HeaderSize", 1, default="0")[0]
    pixels = int(np.prod(dims, dtype=object)) * nbytes * channels
    fields = (f"DimSize = {header['DimSize']}, ElementType = {header['ElementType']}"
              + (f", ElementNumberOfChannels = {channels}" if channels != 1 else "")
              + (f", HeaderSize = {offset}" if offset else ""))
    if header.get("CompressedData", "False").lower() == "true":
        _check_compressed(path, raw, max(offset, 0), pixels, fields)
        return header
    actual = raw.stat().st_size
    if offset < 0:  # HeaderSize = -1: the pixels are the last bytes of the file, whatever precedes them
        if actual < pixels:
            raise DataError(f"{raw}: truncated, {actual} bytes but {path.name} ({fields}) needs at least "
                            f"{pixels}")
        return header
    expected = pixels + offset
    if actual < expected:
        raise DataError(f"{raw}: truncated, {actual} bytes but {path.name} needs {expected} ({fields})")
    if actual > expected:
        raise DataError(f"{raw}: {actual} bytes but {path.name} ({fields}) implies {expected}; the header's "
                        f"DimSize or ElementType does not match the pixel file")
    return header


def _check_compressed(path: Path, raw: Path, offset: int, pixels: int, fields: str) -> None:
    """``CompressedData = True``: the pixel file must be a zlib (or gzip) stream that inflates to exactly
    ``pixels`` bytes. ITK prints "Uncompress failed" on a raw payload and returns garbage or zeros."""
    import zlib

    inflater = zlib.decompressobj(47)  # 32 + 15: a zlib or a gzip header, as MetaIO accepts
    have = 0
    try:
        with open(raw, "rb") as fh:
            fh.seek(offset)
            while (block := fh.read(1 << 20)) and not inflater.eof:
                have += len(inflater.decompress(block))
                if have > pixels:
                    break
            done = inflater.eof
    except zlib.error as exc:
        raise DataError(f"{raw}: {path.name} says CompressedData = True, but the pixel file is not a zlib "
                        f"stream ({exc}); set CompressedData = False for raw pixels") from None
    except OSError as exc:
        raise DataError(f"{raw}: cannot read the pixel data file ({exc.strerror or exc})") from exc
    if have > pixels or (done and have < pixels):
        raise DataError(f"{raw}: inflates to {'more than ' if have > pixels else ''}{have} bytes but "
                        f"{path.name} ({fields}) needs {pixels}")
    if not done:
        raise DataError(f"{raw}: truncated zlib stream, {have} of the {pixels} bytes {path.name} ({fields}) "
                        f"needs")


def _header_ints(path: Path, header: dict[str, str], key: str, count: int,
                 default: str | None = None) -> list[int]:
    """``count`` integers of header field ``key`` (ASCII digits, optional minus), else a DataError."""
    text = header.get(key, default)
    if text is None:
        raise DataError(f"{path}: not a valid MetaImage header (no {key} line)")
    parts = text.split()
    if len(parts) != count or not all(re.fullmatch(r"-?[0-9]+", p) for p in parts):
        raise DataError(f"{path}: bad {key} = {text!r} (expected {count} integer(s))")
    return [int(p) for p in parts]


def _header_floats(path: Path, header: dict[str, str], keys: tuple[str, ...],
                   count: int) -> list[float] | None:
    """``count`` finite numbers of the first present field of ``keys`` (synonyms), None when absent."""
    key = next((k for k in keys if k in header), None)
    if key is None:
        return None
    parts = header[key].split()
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != count or not all(np.isfinite(values)):
        raise DataError(f"{path}: bad {key} = {header[key]!r} (expected {count} finite number(s))")
    return values


def _check_geometry_fields(path: Path, header: dict[str, str], ndims: int) -> None:
    """Spacing finite and > 0, origin finite, direction finite and invertible: each names the .mhd field."""
    spacing = _header_floats(path, header, ("ElementSpacing", "ElementSize"), ndims)
    if spacing is not None and min(spacing) <= 0:
        raise DataError(f"{path}: ElementSpacing = {header.get('ElementSpacing', header.get('ElementSize'))} "
                        f"must be above 0 mm on every axis")
    _header_floats(path, header, ("Offset", "Position", "Origin"), ndims)
    keys = ("TransformMatrix", "Rotation", "Orientation")
    matrix = _header_floats(path, header, keys, ndims * ndims)
    if matrix is not None:
        key = next(k for k in keys if k in header)
        if abs(np.linalg.det(np.asarray(matrix).reshape(ndims, ndims))) < 1e-6:
            raise DataError(f"{path}: {key} = {header[key]} is singular (all-zero or degenerate), so voxel "
                            f"positions are undefined; a LUNA16 header has the identity or a flipped matrix")
