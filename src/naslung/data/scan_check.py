"""The one plausibility check of a CT scan, shared by ``data prepare --luna``, ``predict`` and the VOI path.

Format checks come first, where each format is read (:mod:`naslung.data.metaimage` for the payload of a
``.mhd``, :func:`naslung.data.images.check_nifti_payload` for NIfTI). This module adds what holds for every
format:

* **geometry** (:func:`check_geometry`): voxel spacing finite and within :data:`SPACING_MM` on every axis
  (``ElementSpacing 1e30`` would put the world centre at 5.6e31 mm and make every crop constant), and an
  orthonormal direction (a rotation, possibly flipped; a sheared or scaled ``TransformMatrix`` is refused);
* **slices** (:func:`check_slice_positions`): a DICOM series' slice positions evenly spaced along the slice
  normal, so a missing or duplicated slice is refused instead of stretching the volume;
* **HU range** (:func:`check_hu`): voxel values that a chest CT in HU can hold: not constant, some air or
  lung (below :data:`AIR_BELOW_HU`), some tissue (above :data:`TISSUE_ABOVE_HU`), all within int16;
* **ITK warnings** (:func:`itk_warnings_as_errors`): whatever ITK prints while it reads (e.g. "Uncompress
  failed", "Non uniform sampling or missing slices") becomes an error.

Every refusal is a :class:`~naslung.data.errors.DataError` whose message is one line naming the file.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from naslung.data.errors import DataError

if TYPE_CHECKING:
    from naslung.data.geometry import CTVolume, Geometry

#: Voxel spacing (mm) accepted on every axis: CT pixels are 0.2-1 mm, slices 0.5-5 mm.
SPACING_MM = (0.1, 10.0)
#: A direction is orthonormal when ``D.T @ D`` is the identity within this (headers store 6-8 digits).
ORTHONORMAL_TOL = 1e-3
#: Slice gaps may differ from their median by this share (or 0.01 mm) before a slice counts as missing.
SLICE_GAP_TOL = 0.05
#: A CT in HU holds some voxels of air or lung below this, and some tissue above TISSUE_ABOVE_HU.
AIR_BELOW_HU = -300.0
TISSUE_ABOVE_HU = -900.0
HU_LIMITS = (-32768.0, 32767.0)


def check_geometry(geometry: Geometry, path: str | Path) -> Geometry:
    """``geometry`` when its spacing is within :data:`SPACING_MM` and its direction orthonormal."""
    geometry.checked(path)  # finite origin, spacing > 0, invertible direction
    lo, hi = SPACING_MM
    spacing = np.asarray(geometry.spacing, dtype=np.float64)
    if np.any(spacing < lo) or np.any(spacing > hi):
        shown = [float(f"{s:.6g}") for s in spacing]
        raise DataError(f"{path}: voxel spacing {shown} mm is outside {lo:g}-{hi:g} mm on some axis; the "
                        f"header's ElementSpacing / PixelSpacing / slice spacing is wrong")
    d = np.asarray(geometry.direction, dtype=np.float64).reshape(3, 3)
    if not np.allclose(d.T @ d, np.eye(3), atol=ORTHONORMAL_TOL):
        shown = [float(f"{v:.4g}") for v in d.ravel()]
        raise DataError(f"{path}: direction (TransformMatrix) {shown} is not orthonormal (sheared or scaled "
                        f"axes); a CT header holds a rotation, e.g. the identity or a flipped matrix")
    return geometry


def check_slice_positions(folder: str | Path, files: Sequence[str]) -> None:
    """Refuse a DICOM series whose slices (``files``, sorted by GDCM) are not evenly spaced along their
    normal (ImageOrientationPatient): a missing slice leaves a double gap, a repeated one a zero gap, and
    an unreadable slice is named. Reads headers only."""
    import SimpleITK as sitk  # noqa: N813

    if len(files) < 3:
        return
    positions, normal = [], None
    for name in files:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(name))
        try:
            with itk_warnings_as_errors(name):
                reader.ReadImageInformation()
            text = reader.GetMetaData("0020|0032") if reader.HasMetaDataKey("0020|0032") else None
            position = [float(v) for v in text.replace("\\", " ").split()] if text else None
            if normal is None and reader.HasMetaDataKey("0020|0037"):
                cosines = [float(v) for v in reader.GetMetaData("0020|0037").replace("\\", " ").split()]
                normal = np.cross(cosines[:3], cosines[3:6]) if len(cosines) == 6 else None
        except (RuntimeError, ValueError) as exc:
            raise DataError(f"{name}: corrupt DICOM slice of the series in {folder} ({_first_line(exc)})") \
                from exc
        if position is None or len(position) != 3:
            return  # no ImagePositionPatient: GDCM ordered the slices by other means; nothing to compare
        positions.append(position)
    if normal is None:
        return
    along = np.asarray(positions, dtype=np.float64) @ np.asarray(normal, dtype=np.float64)
    gaps = np.abs(np.diff(along))
    median = float(np.median(gaps))
    bad = np.flatnonzero(np.abs(gaps - median) > max(0.01, SLICE_GAP_TOL * median))
    if median <= 0 or bad.size:
        i = int(bad[0]) if bad.size else 0
        raise DataError(f"{folder}: DICOM slices unevenly spaced ({gaps[i]:.3g} mm between "
                        f"{Path(files[i]).name} and {Path(files[i + 1]).name}, {median:.3g} mm elsewhere): "
                        f"missing or repeated slices")


def check_hu(volume: CTVolume) -> CTVolume:
    """``volume`` when its voxel values are those of a CT in HU (see the module docstring)."""
    array = volume.array
    lo, hi = float(array.min()), float(array.max())
    path = volume.path
    if lo == hi:
        raise DataError(f"{path}: every voxel is {lo:g} HU; the pixel data is empty or was not decoded")
    if lo < HU_LIMITS[0] or hi > HU_LIMITS[1]:
        raise DataError(f"{path}: voxel values {lo:.6g} .. {hi:.6g} lie outside the HU range of CT "
                        f"({HU_LIMITS[0]:g} .. {HU_LIMITS[1]:g})")
    if lo >= AIR_BELOW_HU or hi <= TISSUE_ABOVE_HU:
        raise DataError(f"{path}: voxel values {lo:g} .. {hi:g} are not a chest CT in HU (expected air or "
                        f"lung below {AIR_BELOW_HU:g} and tissue above {TISSUE_ABOVE_HU:g}); stored values "
                        f"without their rescale slope and intercept?")
    return volume


def check_scan(volume: CTVolume) -> CTVolume:
    """The whole check of a scan read by :mod:`naslung.data.images`: geometry, then the HU range."""
    check_geometry(volume.geometry, volume.path)
    return check_hu(volume)


@contextmanager
def itk_warnings_as_errors(path: str | Path) -> Iterator[None]:
    """Run the block with the process's stderr (fd 2) captured; what ITK printed there becomes a DataError
    naming ``path`` (ITK reports a failed read of pixels as a printed warning and goes on)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (an embedded interpreter): nothing to capture
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        text = sink.read().decode("utf-8", errors="replace")
    # A progress bar redrawn meanwhile (rich, on a terminal) writes escape sequences: not ITK's lines.
    lines = [ln for ln in text.splitlines() if ln.strip()]
    itk = [ln for ln in lines if "\x1b" not in ln]
    if itk:
        raise DataError(f"{path}: ITK: {_itk_message(itk)}")
    if text:
        sys.stderr.write(text)


def _itk_message(lines: list[str]) -> str:
    """The informative line of what ITK printed (``WARNING: In /path/file.cxx, line N`` is not)."""
    lines = [ln.strip() for ln in lines]
    useful = [ln for ln in lines if not ln.startswith(("WARNING: In ", "ERROR: In ", "WARNING", "ERROR"))]
    message = (useful or lines)[0]
    return message.split("): ", 1)[-1] if "): " in message else message


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Exception thrown", "/"))]
    return (useful or lines or [type(exc).__name__])[0]
