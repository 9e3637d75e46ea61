"""LUNA16 on disk: subset discovery, MetaImage reading, world <-> voxel transforms, other CT formats.

World coordinates are ITK/LUNA16 physical millimetres ``(x, y, z)`` (LPS). A voxel index is ``(i, j, k)``
in ``(x, y, z)`` order; the numpy array SimpleITK returns is indexed ``[k, j, i]``. The MetaImage
``TransformMatrix`` (ITK direction ``D``, columns = index axes) gives

    world = origin + D @ (index * spacing)        index = D^-1 @ (world - origin) / spacing

Some LUNA16 headers carry a flipped matrix (e.g. ``-1 0 0 0 -1 0 0 0 1``): ignoring ``D`` and reading the
raw array puts nodules in the wrong place, so every transform here goes through ``D``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from naslung.data.errors import DataError

N_SUBSETS = 10
SUBSET_RE = re.compile(r"^subset(\d)$")
ANNOTATION_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm")

# Bytes per element of the MetaImage element types (MetaIO's table; MET_LONG is 4 bytes there).
_MET_BYTES = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
    "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8,
}


# ---------------------------------------------------------------------------------------------- geometry
def world_to_index(world: Any, origin: Any, spacing: Any, direction: Any) -> np.ndarray:
    """Continuous voxel index ``(..., 3)`` (x, y, z order) of world points ``(..., 3)`` in mm."""
    world = np.asarray(world, dtype=np.float64)
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    rel = world - np.asarray(origin, dtype=np.float64)
    # D^-1 @ rel for every point: solve instead of inverting, D is tiny and well conditioned.
    scaled = np.linalg.solve(d, rel.reshape(-1, 3).T).T.reshape(rel.shape)
    return scaled / np.asarray(spacing, dtype=np.float64)


def index_to_world(index: Any, origin: Any, spacing: Any, direction: Any) -> np.ndarray:
    """World points ``(..., 3)`` in mm of continuous voxel indices ``(..., 3)`` (x, y, z order)."""
    index = np.asarray(index, dtype=np.float64)
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    scaled = index * np.asarray(spacing, dtype=np.float64)
    return np.asarray(origin, dtype=np.float64) + scaled @ d.T


@dataclass(eq=False)
class Geometry:
    """Where a volume sits in the world: origin, spacing and direction (x, y, z), size in voxels (x, y, z)."""

    origin: np.ndarray
    spacing: np.ndarray
    direction: np.ndarray
    size: tuple[int, int, int]

    @classmethod
    def from_sitk(cls, obj: Any) -> Geometry:
        """From a ``SimpleITK.Image`` or an ``ImageFileReader`` after ``ReadImageInformation``."""
        return cls(origin=np.array(obj.GetOrigin(), dtype=np.float64),
                   spacing=np.array(obj.GetSpacing(), dtype=np.float64),
                   direction=np.array(obj.GetDirection(), dtype=np.float64).reshape(3, 3),
                   size=tuple(int(s) for s in obj.GetSize()))

    def world_to_index(self, world: Any) -> np.ndarray:
        return world_to_index(world, self.origin, self.spacing, self.direction)

    def index_to_world(self, index: Any) -> np.ndarray:
        return index_to_world(index, self.origin, self.spacing, self.direction)

    def contains(self, world: Any) -> bool:
        """True if the world point lies inside the volume (within the outer voxels' half-width)."""
        idx = self.world_to_index(world)
        return bool(np.all(idx >= -0.5) and np.all(idx <= np.asarray(self.size) - 0.5))

    @property
    def flipped(self) -> bool:
        """True when the direction is not the identity (a 'flipped' LUNA16 TransformMatrix)."""
        return not np.allclose(self.direction, np.eye(3))


@dataclass(eq=False)
class CTVolume:
    """A CT volume in HU: ``array`` is ``(z, y, x)`` (int16 or float32), a view kept alive by ``image``."""

    array: np.ndarray
    geometry: Geometry
    path: Path
    image: Any = field(default=None, repr=False)


# ---------------------------------------------------------------------------------------------- the tree
@dataclass(frozen=True)
class ScanRef:
    """One scan of a LUNA16-layout tree: its series uid, subset (fold) and ``.mhd`` path."""

    seriesuid: str
    subset: int
    path: Path


@dataclass
class ScanIndex:
    """The scans found under a LUNA16 root, with warnings about the tree."""

    root: Path
    scans: dict[str, ScanRef]
    warnings: list[str] = field(default_factory=list)
    missing_from_tree: int = 0  # LUNA16 series of the official list not found (partial download)
    known: Mapping[str, int] = field(default_factory=dict)  # the LUNA16 list (+ extra_subsets)


@functools.cache
def load_subset_table() -> Mapping[str, int]:
    """The official LUNA16 ``seriesuid -> subset`` table shipped with naslung (888 series)."""
    text = resources.files("naslung.resources").joinpath("luna16_subsets.csv").read_text()
    table: dict[str, int] = {}
    for line in text.splitlines()[1:]:
        if line.strip():
            uid, subset = line.strip().split(",")
            table[uid] = int(subset)
    return MappingProxyType(table)


def discover_scans(root: str | Path, extra_subsets: Mapping[str, int] | None = None) -> ScanIndex:
    """Find ``subsetK/**/<seriesuid>.mhd`` under ``root``; the fold is K from the folder name.

    The folder name wins over the shipped table (it is what the user's tree says); a disagreement or
    a series missing from the table is a warning, a series in two folders is an error. ``extra_subsets``
    adds series to the table (the phantom's own uids, from its manifest).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: LUNA16 directory not found")
    subset_dirs = sorted(p for p in root.iterdir() if p.is_dir() and SUBSET_RE.match(p.name))
    if not subset_dirs:
        raise DataError(f"{root}: no subset0 .. subset9 folders (expected the LUNA16 layout "
                        f"subsetK/<seriesuid>.mhd + .raw)")
    table = {**load_subset_table(), **(extra_subsets or {})}
    index = ScanIndex(root=root, scans={}, known=table)
    unlisted: list[Path] = []
    moved: list[str] = []
    for subset_dir in subset_dirs:
        subset = int(SUBSET_RE.match(subset_dir.name).group(1))  # type: ignore[union-attr]
        # rglob: some unzip tools nest the folder (subset0/subset0/*.mhd).
        for mhd in sorted(subset_dir.rglob("*.mhd")):
            uid = mhd.stem
            if uid in index.scans:
                raise DataError(f"{mhd}: series {uid} also found at {index.scans[uid].path}")
            expected = table.get(uid)
            if expected is None:
                unlisted.append(mhd)
            elif expected != subset:
                moved.append(f"{mhd} (LUNA16: subset{expected})")
            index.scans[uid] = ScanRef(uid, subset, mhd)
    # One warning per kind, not per scan: a phantom tree has only non-LUNA16 uids.
    if unlisted:
        index.warnings.append(f"{root}: {len(unlisted)} series not in the LUNA16 list (e.g. {unlisted[0]}); "
                              f"their folds come from their subset folders")
    if moved:
        index.warnings.append(f"{root}: {len(moved)} series in another subset folder than LUNA16's, e.g. "
                              f"{moved[0]}; the folder wins")
    if not index.scans:
        raise DataError(f"{root}: subset folders hold no .mhd files")
    index.missing_from_tree = sum(1 for uid in load_subset_table() if uid not in index.scans)
    return index


def find_annotations(root: str | Path) -> Path | None:
    """``annotations.csv`` at the root or in ``CSVFILES/`` (how the LUNA16 zip unpacks), else None."""
    for candidate in (Path(root) / "annotations.csv", Path(root) / "CSVFILES" / "annotations.csv"):
        if candidate.is_file():
            return candidate
    return None


def read_csv_checked(path: str | Path, required: Iterable[str], numeric: Iterable[str] = (),
                     str_columns: Iterable[str] = ("seriesuid",)) -> Any:
    """Read a CSV as a DataFrame; a missing file or column, or a non-numeric / NaN value in a ``numeric``
    column, is a :class:`DataError` naming the file, the column and the first bad row."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: CSV file not found")
    try:
        df = pd.read_csv(path, dtype={c: str for c in str_columns})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from exc
    df.columns = [str(c).strip() for c in df.columns]
    duplicated = sorted({c for c in df.columns if list(df.columns).count(c) > 1})
    if duplicated:
        raise DataError(f"{path}: column(s) {duplicated} appear more than once")
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; has {list(df.columns)}")
    for col in numeric:
        values = pd.to_numeric(df[col], errors="coerce")
        bad = np.flatnonzero(values.isna().to_numpy())
        if len(bad):
            row = int(bad[0])
            raise DataError(f"{path}: column {col!r} has {len(bad)} missing or non-numeric value(s), "
                            f"first at data row {row + 1} ({df[col].iloc[row]!r})")
        df[col] = values.astype(np.float64)
    for col in str_columns:
        if col in df.columns:
            df[col] = df[col].astype(str).str.strip()
    return df


def read_annotations(path: str | Path) -> Any:
    """LUNA16 ``annotations.csv`` (seriesuid, coordX, coordY, coordZ in world mm, diameter_mm)."""
    return read_csv_checked(path, ANNOTATION_COLUMNS, numeric=ANNOTATION_COLUMNS[1:])


# ---------------------------------------------------------------------------------------------- reading
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
        raise DataError(f"{raw}: pixel data file missing (named by {path.name})")
    if header.get("CompressedData", "False").lower() == "true":
        return header
    nbytes = _MET_BYTES.get(header["ElementType"])
    if nbytes is None:
        raise DataError(f"{path}: unknown ElementType = {header['ElementType']} (expected one of "
                        f"{', '.join(_MET_BYTES)})")
    channels = _header_ints(path, header, "ElementNumberOfChannels", 1, default="1")[0]
    if channels < 1:
        raise DataError(f"{path}: ElementNumberOfChannels = {channels} is below 1")
    offset = _header_ints(path, header, "HeaderSize", 1, default="0")[0]
    pixels = int(np.prod(dims, dtype=object)) * nbytes * channels
    actual = raw.stat().st_size
    fields = (f"DimSize = {header['DimSize']}, ElementType = {header['ElementType']}"
              + (f", ElementNumberOfChannels = {channels}" if channels != 1 else "")
              + (f", HeaderSize = {offset}" if offset else ""))
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


def read_geometry(path: str | Path) -> Geometry:
    """Geometry of a ``.mhd`` from its header alone (no pixels read); checks the ``.raw`` first."""
    import SimpleITK as sitk  # noqa: N813

    path = Path(path)
    check_metaimage(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise DataError(f"{path}: SimpleITK cannot read the header ({_first_line(exc)})") from exc
    if reader.GetDimension() != 3:
        raise DataError(f"{path}: expected a 3-D image, got {reader.GetDimension()}-D")
    return _checked_geometry(Geometry.from_sitk(reader), path)


def _checked_geometry(geometry: Geometry, path: Path) -> Geometry:
    """Refuse a geometry that places voxels nowhere (non-finite or zero spacing, singular direction)."""
    if not (np.all(np.isfinite(geometry.spacing)) and np.all(geometry.spacing > 0)):
        raise DataError(f"{path}: voxel spacing {geometry.spacing.tolist()} mm must be finite and above 0")
    if not np.all(np.isfinite(geometry.origin)):
        raise DataError(f"{path}: origin {geometry.origin.tolist()} is not finite")
    if not np.all(np.isfinite(geometry.direction)) or abs(np.linalg.det(geometry.direction)) < 1e-6:
        raise DataError(f"{path}: direction (TransformMatrix) {geometry.direction.ravel().tolist()} is "
                        f"singular or not finite")
    return geometry


def read_scan(path: str | Path) -> CTVolume:
    """Read one LUNA16 ``.mhd`` + ``.raw`` (validated first) as a :class:`CTVolume` in HU."""
    check_metaimage(path)
    return _read_with_sitk(Path(path))


def read_ct(path: str | Path, series_id: str | None = None) -> CTVolume:
    """Read a CT volume in HU: ``.mhd``/``.mha``, ``.nii``/``.nii.gz``, ``.nrrd``, or a DICOM series folder.

    A folder holding several DICOM series needs ``series_id`` (the error lists them).
    """
    import SimpleITK as sitk  # noqa: N813

    path = Path(path)
    if path.is_dir():
        # GDCM prints "No Series were found" for a folder without DICOM; the error below says it better.
        shown = sitk.ProcessObject.GetGlobalWarningDisplay()
        sitk.ProcessObject.SetGlobalWarningDisplay(False)
        try:
            ids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path)))
        finally:
            sitk.ProcessObject.SetGlobalWarningDisplay(shown)
        if not ids:
            raise DataError(f"{path}: folder holds no DICOM series")
        if series_id is None:
            if len(ids) > 1:
                raise DataError(f"{path}: {len(ids)} DICOM series, pick one with series_id: {ids}")
            series_id = ids[0]
        elif series_id not in ids:
            raise DataError(f"{path}: no DICOM series {series_id!r}; found {ids}")
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), series_id))
        try:
            image = reader.Execute()
        except RuntimeError as exc:
            raise DataError(f"{path}: cannot read DICOM series {series_id} ({_first_line(exc)})") from exc
        return _volume_from_image(image, path)
    if not path.exists():
        raise DataError(f"{path}: CT file not found")
    if path.suffix.lower() in (".mhd", ".mha"):
        check_metaimage(path)
    if path.name.lower().endswith((".nii", ".nii.gz")):
        n_bad = _nifti_nonfinite(path)
        if n_bad:
            raise DataError(f"{path}: {n_bad} NaN or infinite voxel(s); fix or mask the image first")
    return _read_with_sitk(path)


def _nifti_nonfinite(path: Path) -> int:
    """NaN/inf voxels of a float NIfTI-1/2 file, counted from its bytes.

    ITK's NIfTI reader silently turns NaN into 0 (water), so the check cannot run on what SimpleITK
    returns. Integer files are not read at all; float data is streamed in 16 MB chunks.
    """
    import gzip

    try:
        return _count_nifti_nonfinite(path, gzip.open if path.name.lower().endswith(".gz") else open)
    except (OSError, EOFError):
        return 0  # not readable as (gzipped) NIfTI: SimpleITK will report it


def _count_nifti_nonfinite(path: Path, opener: Any) -> int:
    with opener(path, "rb") as fh:
        head = fh.read(540)
        if len(head) < 348:
            return 0  # too short for NIfTI: SimpleITK will report it
        for order in "<>":
            sizeof_hdr = int(np.frombuffer(head[:4], dtype=f"{order}i4")[0])
            if sizeof_hdr in (348, 540):
                break
        else:
            return 0
        if sizeof_hdr == 348:  # NIfTI-1: datatype at byte 70, vox_offset (float32) at 108
            datatype = int(np.frombuffer(head[70:72], dtype=f"{order}i2")[0])
            offset = int(np.frombuffer(head[108:112], dtype=f"{order}f4")[0])
        else:  # NIfTI-2: datatype at byte 12, vox_offset (int64) at 168
            datatype = int(np.frombuffer(head[12:14], dtype=f"{order}i2")[0])
            offset = int(np.frombuffer(head[168:176], dtype=f"{order}i8")[0])
        kind = {16: "f4", 64: "f8"}.get(datatype)  # FLOAT32, FLOAT64
        if kind is None or offset < sizeof_hdr:
            return 0
        item = np.dtype(f"{order}{kind}")
        fh.seek(offset)
        count = 0
        while chunk := fh.read((1 << 24) // item.itemsize * item.itemsize):
            values = np.frombuffer(chunk[: len(chunk) // item.itemsize * item.itemsize], dtype=item)
            count += int(np.count_nonzero(~np.isfinite(values)))
    return count


def _read_with_sitk(path: Path) -> CTVolume:
    import SimpleITK as sitk  # noqa: N813

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise DataError(f"{path}: SimpleITK cannot read it ({_first_line(exc)})") from exc
    return _volume_from_image(image, path)


def _volume_from_image(image: Any, path: Path) -> CTVolume:
    import SimpleITK as sitk  # noqa: N813

    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(f"{path}: expected a scalar 3-D image, got {image.GetDimension()}-D with "
                        f"{image.GetNumberOfComponentsPerPixel()} component(s)")
    if image.GetPixelID() not in (sitk.sitkInt16, sitk.sitkFloat32):
        # Other types (uint16 DICOM, float64 NIfTI, ...) become float32 so HU arithmetic is uniform.
        image = sitk.Cast(image, sitk.sitkFloat32)
    array = sitk.GetArrayViewFromImage(image)
    # min/max propagate NaN and inf without a full-size temporary.
    if array.dtype.kind == "f" and not (np.isfinite(array.min()) and np.isfinite(array.max())):
        n_bad = int(np.count_nonzero(~np.isfinite(array)))
        raise DataError(f"{path}: {n_bad} NaN or infinite voxel(s); fix or mask the image first")
    return CTVolume(array=array, geometry=_checked_geometry(Geometry.from_sitk(image), path), path=path,
                    image=image)


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Exception thrown", "/"))]
    return (useful or lines or [type(exc).__name__])[0]
