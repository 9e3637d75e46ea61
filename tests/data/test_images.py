"""images: MetaImage header checks, and CT volumes read through SimpleITK (.mhd, NIfTI, DICOM series)
with one geometry convention."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813
from luna_synth import FLIPPED, Scan, luna_uid, render, write_scan

from naslung.data.errors import DataError
from naslung.data.images import read_ct, read_geometry, read_scan
from naslung.data.metaimage import check_metaimage

SERIES_UID = "1.2.826.0.1.3680043.2.1125.1.1"


def write_dicom_series(image: sitk.Image, folder: Path, series_uid: str = SERIES_UID) -> None:
    """One DICOM file per axial slice of ``image``, with the position and orientation GDCM sorts by."""
    folder.mkdir(parents=True, exist_ok=True)
    d = image.GetDirection()
    orientation = "\\".join(str(v) for v in (d[0], d[3], d[6], d[1], d[4], d[7]))  # row, column cosines
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetSize()[2]):
        axial = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in (("0020|000e", series_uid), ("0020|0013", str(k + 1)),
                           ("0020|0032", "\\".join(map(str, position))), ("0020|0037", orientation),
                           ("0008|0060", "CT")):
            axial.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(axial)


def test_check_metaimage_missing_and_truncated_raw(tmp_path: Path) -> None:
    mhd = write_scan(tmp_path, Scan(luna_uid(0), 0, shape_zyx=(4, 8, 8)))
    header = check_metaimage(mhd)
    assert header["ElementType"] == "MET_SHORT"
    raw = mhd.with_suffix(".raw")
    raw.write_bytes(raw.read_bytes()[:-2])
    with pytest.raises(DataError, match=r"truncated, 510 bytes but .* needs 512"):
        read_scan(mhd)
    raw.unlink()
    with pytest.raises(DataError, match=r"\.raw: pixel data file missing"):
        read_geometry(mhd)
    with pytest.raises(DataError, match="header not found"):
        check_metaimage(tmp_path / "nothing.mhd")
    (tmp_path / "bad.mhd").write_text("hello\n")
    with pytest.raises(DataError, match="not a valid MetaImage header"):
        read_ct(tmp_path / "bad.mhd")


@pytest.mark.parametrize("name", ["ct.mhd", "ct.nii.gz", "ct.nii"])
def test_read_ct_round_trip(tmp_path: Path, name: str) -> None:
    scan = Scan("x", 0, shape_zyx=(6, 10, 12), direction=FLIPPED, origin=(5.0, -3.0, 7.0))
    array = render(scan).astype(np.int16)
    array[1, 2, 3] = 321
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(scan.spacing)
    image.SetOrigin(scan.origin)
    image.SetDirection(scan.direction)
    sitk.WriteImage(image, str(tmp_path / name))
    volume = read_ct(tmp_path / name)
    np.testing.assert_array_equal(volume.array, array)
    np.testing.assert_allclose(volume.geometry.spacing, scan.spacing, atol=1e-5)
    np.testing.assert_allclose(volume.geometry.origin, scan.origin, atol=1e-4)
    np.testing.assert_allclose(volume.geometry.direction.ravel(), scan.direction, atol=1e-6)
    assert volume.geometry.size == (12, 10, 6)


def test_read_ct_dicom_series(tmp_path: Path) -> None:
    array = (np.arange(4 * 5 * 6).reshape(4, 5, 6) * 10 - 500).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.7, 0.8, 2.0))
    image.SetOrigin((5.0, -3.0, 7.0))
    write_dicom_series(image, tmp_path)
    volume = read_ct(tmp_path)
    np.testing.assert_array_equal(volume.array, array)
    np.testing.assert_allclose(volume.geometry.spacing, (0.7, 0.8, 2.0), atol=1e-6)
    np.testing.assert_allclose(volume.geometry.origin, (5.0, -3.0, 7.0), atol=1e-6)
    with pytest.raises(DataError, match="no DICOM series 'nope'"):
        read_ct(tmp_path, series_id="nope")


@pytest.mark.parametrize(("name", "dtype"), [("ct.mhd", np.float32), ("ct.nii.gz", np.float32),
                                             ("ct.nii", np.float32), ("ct.nii.gz", np.float64)])
def test_read_ct_rejects_nan_voxels(tmp_path: Path, name: str, dtype: type) -> None:
    # SimpleITK's NIfTI reader returns NaN and inf as 0 (water): the NIfTI files are checked on disk.
    array = np.zeros((4, 5, 6), dtype=dtype)
    array[2, 2, 2] = np.nan
    array[3, 1, 0] = np.inf
    sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / name))
    with pytest.raises(DataError, match=rf"{name}: 2 NaN or infinite voxel"):
        read_ct(tmp_path / name)


def test_read_ct_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="CT file not found"):
        read_ct(tmp_path / "missing.nii.gz")
    with pytest.raises(DataError, match="no DICOM series"):
        read_ct(tmp_path)
    (tmp_path / "junk.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(DataError, match="junk.nii.gz: not a readable NIfTI file"):
        read_ct(tmp_path / "junk.nii.gz")


def test_nifti_and_dicom_read_with_the_geometry_of_the_mhd(tmp_path: Path) -> None:
    """One flipped LUNA16-style scan as .mhd, NIfTI and a DICOM series (all written by SimpleITK): the same
    (z, y, x) array, origin, spacing and direction, so a world point lands on the same voxel in all three."""
    scan = Scan(luna_uid(0), 0, shape_zyx=(5, 9, 11), spacing=(0.7, 0.8, 2.5), origin=(31.0, -12.0, -240.0),
                direction=FLIPPED)
    mhd = write_scan(tmp_path / "luna", scan, render(scan) + np.arange(5 * 9 * 11).reshape(5, 9, 11) % 97)
    reference = read_scan(mhd)
    image = sitk.ReadImage(str(mhd))
    for name in ("ct.nii", "ct.nii.gz"):
        sitk.WriteImage(image, str(tmp_path / name))
    write_dicom_series(image, tmp_path / "dicom")
    world = reference.geometry.index_to_world([3.0, 2.0, 4.0])
    for path in (tmp_path / "ct.nii", tmp_path / "ct.nii.gz", tmp_path / "dicom"):
        volume = read_ct(path)
        np.testing.assert_array_equal(volume.array, reference.array, err_msg=str(path))
        assert volume.geometry.size == reference.geometry.size == (11, 9, 5)
        np.testing.assert_allclose(volume.geometry.origin, reference.geometry.origin, atol=1e-4)
        np.testing.assert_allclose(volume.geometry.spacing, reference.geometry.spacing, atol=1e-5)
        np.testing.assert_allclose(volume.geometry.direction, reference.geometry.direction, atol=1e-6)
        np.testing.assert_allclose(volume.geometry.world_to_index(world), [3.0, 2.0, 4.0], atol=1e-4)
        assert volume.geometry.flipped


def test_read_ct_picks_one_of_several_dicom_series(tmp_path: Path) -> None:
    first = sitk.GetImageFromArray(np.full((3, 4, 5), 10, dtype=np.int16))
    second = sitk.GetImageFromArray(np.full((3, 4, 5), -20, dtype=np.int16))
    write_dicom_series(first, tmp_path, series_uid="1.2.3.1")
    write_dicom_series(second, tmp_path / "x", series_uid="1.2.3.2")
    for path in (tmp_path / "x").iterdir():  # the second series' files beside the first's
        path.rename(tmp_path / f"other-{path.name}")
    with pytest.raises(DataError, match=r"2 DICOM series, pick one with series_id: \['1.2.3.1', '1.2.3.2'\]"):
        read_ct(tmp_path)
    assert read_ct(tmp_path, series_id="1.2.3.2").array.max() == -20
    assert read_ct(tmp_path, series_id="1.2.3.1").array.min() == 10
