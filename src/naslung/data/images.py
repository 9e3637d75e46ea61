"""Read CT volumes in HU through SimpleITK: ``.mhd``/``.mha`` (+ ``.raw``), NIfTI, NRRD and DICOM series.

Array and geometry conventions are those of :mod:`naslung.data.geometry`: the array is ``(z, y, x)`` as
SimpleITK returns it, the geometry is ITK's ``(x, y, z)`` origin, spacing and direction (LPS), for every
format alike. MetaImage headers are checked first (:func:`naslung.data.metaimage.check_metaimage`); every
geometry passes :func:`naslung.data.scan_check.check_geometry`, and what ITK prints while reading is an error
(:func:`naslung.data.scan_check.itk_warnings_as_errors`). The HU range is the callers' check
(:func:`naslung.data.scan_check.check_scan`).

Non-finite voxels are refused. SimpleITK keeps them for most formats, so the returned array is checked;
its NIfTI reader (niftilib) silently turns NaN and inf into 0, i.e. water, so for a float NIfTI file the
stored values are counted through nibabel instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from naslung.data.errors import DataError
from naslung.data.geometry import CTVolume, Geometry
from naslung.data.metaimage import check_metaimage
from naslung.data.scan_check import check_geometry, check_slice_positions, itk_warnings_as_errors

NIFTI_SUFFIXES = (".nii", ".nii.gz")
# NIfTI voxels are counted in slabs of about this many bytes, so the check holds no second full volume.
_NIFTI_SLAB_BYTES = 16 << 20


def read_geometry(path: str | Path) -> Geometry:
    """Geometry of a ``.mhd`` from its header alone (no pixels read); checks the ``.raw`` first."""
    import SimpleITK as sitk  # noqa: N813

    path = Path(path)
    check_metaimage(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        with itk_warnings_as_errors(path):
            reader.ReadImageInformation()
    except RuntimeError as exc:
        raise DataError(f"{path}: SimpleITK cannot read the header ({_first_line(exc)})") from exc
    if reader.GetDimension() != 3:
        raise DataError(f"{path}: expected a 3-D image, got {reader.GetDimension()}-D")
    return check_geometry(Geometry.from_sitk(reader), path)


def read_nifti_geometry(path: str | Path) -> Geometry:
    """Geometry of a NIfTI (or any single-file) volume from its header alone; a DataError names the file."""
    import SimpleITK as sitk  # noqa: N813

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: volume file not found")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        with itk_warnings_as_errors(path):
            reader.ReadImageInformation()
    except RuntimeError as exc:
        raise DataError(f"{path}: SimpleITK cannot read the header ({_first_line(exc)})") from exc
    if reader.GetDimension() != 3:
        raise DataError(f"{path}: expected a 3-D image, got {reader.GetDimension()}-D")
    return check_geometry(Geometry.from_sitk(reader), path)


def read_scan(path: str | Path) -> CTVolume:
    """Read one LUNA16 ``.mhd`` + ``.raw`` (validated first) as a :class:`CTVolume` in HU."""
    check_metaimage(path)
    return _read_file(Path(path))


def read_ct(path: str | Path, series_id: str | None = None) -> CTVolume:
    """Read a CT volume in HU: ``.mhd``/``.mha``, ``.nii``/``.nii.gz``, ``.nrrd``, or a DICOM series folder.

    A folder holding several DICOM series needs ``series_id`` (the error lists them).
    """
    path = Path(path)
    if path.is_dir():
        return read_dicom_series(path, series_id)
    if not path.exists():
        raise DataError(f"{path}: CT file not found")
    if path.suffix.lower() in (".mhd", ".mha"):
        check_metaimage(path)
    return _read_file(path)


def dicom_series_ids(folder: str | Path) -> list[str]:
    """The DICOM series uids GDCM finds in ``folder`` (not its subfolders)."""
    import SimpleITK as sitk  # noqa: N813

    # GDCM prints "No Series were found" for a folder without DICOM; the callers' errors say it better.
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def read_dicom_series(folder: str | Path, series_id: str | None = None) -> CTVolume:
    """Read one DICOM series of ``folder`` (slices sorted by GDCM along their normal) as a CTVolume."""
    import SimpleITK as sitk  # noqa: N813

    folder = Path(folder)
    ids = dicom_series_ids(folder)
    if not ids:
        raise DataError(f"{folder}: folder holds no DICOM series")
    if series_id is None:
        if len(ids) > 1:
            raise DataError(f"{folder}: {len(ids)} DICOM series, pick one with series_id: {ids}")
        series_id = ids[0]
    elif series_id not in ids:
        raise DataError(f"{folder}: no DICOM series {series_id!r}; found {ids}")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_id)
    check_slice_positions(folder, files)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        with itk_warnings_as_errors(folder):
            image = reader.Execute()
    except RuntimeError as exc:
        raise DataError(f"{folder}: cannot read DICOM series {series_id} ({_first_line(exc)})") from exc
    return _volume_from_image(image, folder)


def check_nifti_payload(path: str | Path) -> None:
    """Refuse a NIfTI file whose voxel payload is shorter than its header says, or whose gzip stream is
    damaged: SimpleITK reads a truncated ``.nii.gz`` without an error and fills the rest with zeros.

    Streams the file in slabs (no second copy of the volume in memory).
    """
    import zlib

    try:
        import nibabel as nib
    except ImportError as exc:
        raise DataError(f"{path}: checking a NIfTI file needs nibabel ({exc})") from exc
    path = Path(path)
    try:
        header = nib.load(str(path)).header
        need = int(header.get_data_offset()) + int(np.prod(header.get_data_shape(), dtype=np.int64)) * \
            np.dtype(header.get_data_dtype()).itemsize
    except Exception as exc:  # nibabel raises many types on a damaged header; name the file
        raise DataError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from exc
    if not path.name.lower().endswith(".gz"):
        have = path.stat().st_size
    else:
        import gzip

        have = 0
        try:
            with gzip.open(path, "rb") as fh:
                while chunk := fh.read(_NIFTI_SLAB_BYTES):
                    have += len(chunk)
        except (EOFError, OSError, zlib.error) as exc:
            raise DataError(f"{path}: damaged or truncated gzip stream after {have} bytes ({exc})") from exc
    if have < need:
        raise DataError(f"{path}: truncated: {have} bytes of voxel data and header, the header needs {need}")


def _read_file(path: Path) -> CTVolume:
    import SimpleITK as sitk  # noqa: N813

    if path.name.lower().endswith(NIFTI_SUFFIXES):
        check_nifti_payload(path)
    try:
        with itk_warnings_as_errors(path):
            image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise DataError(f"{path}: SimpleITK cannot read it ({_first_line(exc)})") from exc
    float_nifti = path.name.lower().endswith(NIFTI_SUFFIXES) and image.GetPixelID() in (sitk.sitkFloat32,
                                                                                       sitk.sitkFloat64)
    if float_nifti and image.GetDimension() == 3:  # other shapes are refused below
        n_bad = nifti_nonfinite(path)
        if n_bad:
            raise DataError(f"{path}: {n_bad} NaN or infinite voxel(s); fix or mask the image first")
    return _volume_from_image(image, path)


def nifti_nonfinite(path: str | Path) -> int:
    """NaN/inf values stored in a NIfTI file (0 for an integer file), read through nibabel in slabs."""
    try:
        import nibabel as nib
    except ImportError as exc:
        raise DataError(f"{path}: checking a float NIfTI file for NaN needs nibabel ({exc})") from exc

    try:
        # keep_file_open: a .nii.gz is then decompressed once, slab after slab, not reopened for each slab.
        proxy = nib.load(str(path), keep_file_open=True).dataobj
        if np.dtype(proxy.dtype).kind != "f" or not proxy.shape:
            return 0
        plane = int(np.prod(proxy.shape[:-1], dtype=np.int64)) * np.dtype(proxy.dtype).itemsize
        step = max(1, _NIFTI_SLAB_BYTES // max(plane, 1))
        count = 0
        for start in range(0, proxy.shape[-1], step):
            count += int(np.count_nonzero(~np.isfinite(proxy[..., start:start + step])))
        return count
    except Exception as exc:  # nibabel raises many types on a file SimpleITK accepted; name the file
        raise DataError(f"{path}: cannot check the NIfTI voxels for NaN ({type(exc).__name__}: {exc})") \
            from exc


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
    geometry = check_geometry(Geometry.from_sitk(image), path)
    return CTVolume(array=array, geometry=geometry, path=path, image=image)


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Exception thrown", "/"))]
    return (useful or lines or [type(exc).__name__])[0]
