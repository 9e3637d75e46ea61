"""luna16: world <-> voxel transforms (flipped TransformMatrix), subset discovery, header checks, read_ct."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813
from luna_synth import FLIPPED, Scan, luna_uid, render, write_scan

from naslung.data.errors import DataError
from naslung.data.luna16 import (
    Geometry,
    check_metaimage,
    discover_scans,
    index_to_world,
    load_subset_table,
    read_annotations,
    read_ct,
    read_geometry,
    read_scan,
    world_to_index,
)

ORIGIN, SPACING = (10.0, 20.0, 30.0), (0.7, 0.7, 2.5)


@pytest.mark.parametrize(("direction", "world", "index"), [
    # identity: world = origin + index * spacing
    ((1, 0, 0, 0, 1, 0, 0, 0, 1), (10 + 0.7 * 5, 20 + 0.7 * 6, 30 + 2.5 * 7), (5, 6, 7)),
    # LUNA16's flipped matrix: x and y run backwards from the origin
    (FLIPPED, (10 - 0.7 * 5, 20 - 0.7 * 6, 30 + 2.5 * 7), (5, 6, 7)),
    # z flipped too, and a fractional index
    ((-1, 0, 0, 0, 1, 0, 0, 0, -1), (10 - 0.7 * 2.5, 20 + 0.7 * 3, 30 - 2.5 * 1.5), (2.5, 3, 1.5)),
    # axes permuted: index x runs along world y, index y along world x
    ((0, 1, 0, 1, 0, 0, 0, 0, 1), (10 + 0.7 * 6, 20 + 0.7 * 5, 30 + 2.5 * 7), (5, 6, 7)),
])
def test_world_to_index_hand_computed(direction, world, index) -> None:
    np.testing.assert_allclose(world_to_index(world, ORIGIN, SPACING, direction), index, atol=1e-9)
    np.testing.assert_allclose(index_to_world(index, ORIGIN, SPACING, direction), world, atol=1e-9)
    image = sitk.Image(8, 8, 8, sitk.sitkInt16)
    image.SetOrigin(ORIGIN)
    image.SetSpacing(SPACING)
    image.SetDirection([float(v) for v in direction])
    np.testing.assert_allclose(image.TransformPhysicalPointToContinuousIndex(world), index, atol=1e-9)


def test_world_to_index_matches_simpleitk_for_oblique_directions() -> None:
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    image = sitk.Image(4, 4, 4, sitk.sitkInt16)
    image.SetOrigin(ORIGIN)
    image.SetSpacing(SPACING)
    image.SetDirection(q.ravel().tolist())
    points = rng.uniform(-50, 50, size=(5, 3))
    ours = world_to_index(points, ORIGIN, SPACING, q)  # vectorised over points
    for p, idx in zip(points, ours, strict=True):
        np.testing.assert_allclose(idx, image.TransformPhysicalPointToContinuousIndex(p.tolist()), atol=1e-9)


def test_geometry_contains_and_flipped() -> None:
    direction = np.array(FLIPPED, dtype=float).reshape(3, 3)
    g = Geometry(np.array(ORIGIN), np.array(SPACING), direction, (10, 10, 4))
    assert g.flipped
    assert g.contains(g.index_to_world([0, 0, 0])) and g.contains(g.index_to_world([9.4, 9.4, 3.4]))
    assert not g.contains(g.index_to_world([-0.6, 0, 0])) and not g.contains(g.index_to_world([0, 0, 3.6]))


def test_subset_table_is_the_luna16_list() -> None:
    table = load_subset_table()
    assert len(table) == 888 and set(table.values()) == set(range(10))


def _scan_tree(root: Path) -> None:
    for subset in (0, 3):
        write_scan(root, Scan(luna_uid(subset), subset, shape_zyx=(4, 8, 8)))


def test_discover_scans_folds_and_warnings(tmp_path: Path) -> None:
    _scan_tree(tmp_path)
    index = discover_scans(tmp_path)
    assert {r.subset for r in index.scans.values()} == {0, 3} and not index.warnings
    assert index.missing_from_tree == 886
    # A LUNA16 series in the wrong folder: the folder wins, with a warning. A non-LUNA16 series: warning.
    write_scan(tmp_path, Scan(luna_uid(5), 7, shape_zyx=(4, 8, 8)))
    write_scan(tmp_path, Scan("1.2.3.4", 2, shape_zyx=(4, 8, 8)))
    index = discover_scans(tmp_path)
    assert index.scans[luna_uid(5)].subset == 7 and index.scans["1.2.3.4"].subset == 2
    assert any("LUNA16: subset5" in w for w in index.warnings)
    assert any("1 series not in the LUNA16 list" in w for w in index.warnings)
    assert not discover_scans(tmp_path, extra_subsets={"1.2.3.4": 2}).warnings[1:]


def test_discover_scans_nested_folder_and_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        discover_scans(tmp_path / "nope")
    with pytest.raises(DataError, match="no subset0"):
        discover_scans(tmp_path)
    _scan_tree(tmp_path / "x")
    shutil.move(tmp_path / "x" / "subset0", tmp_path / "subset0" / "subset0")  # subset0/subset0/*.mhd
    assert list(discover_scans(tmp_path).scans) == [luna_uid(0)]
    write_scan(tmp_path, Scan(luna_uid(0), 4, shape_zyx=(4, 8, 8)))
    with pytest.raises(DataError, match="also found at"):
        discover_scans(tmp_path)


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
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(4):
        axial = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in (("0020|000e", "1.2.826.0.1.3680043.2.1125.1.1"), ("0020|0013", str(k)),
                           ("0020|0032", "\\".join(map(str, position))), ("0020|0037", "1\\0\\0\\0\\1\\0"),
                           ("0008|0060", "CT")):
            axial.SetMetaData(tag, value)
        writer.SetFileName(str(tmp_path / f"{k}.dcm"))
        writer.Execute(axial)
    volume = read_ct(tmp_path)
    np.testing.assert_array_equal(volume.array, array)
    np.testing.assert_allclose(volume.geometry.spacing, (0.7, 0.8, 2.0), atol=1e-6)
    np.testing.assert_allclose(volume.geometry.origin, (5.0, -3.0, 7.0), atol=1e-6)
    with pytest.raises(DataError, match="no DICOM series 'nope'"):
        read_ct(tmp_path, series_id="nope")


@pytest.mark.parametrize("name", ["ct.mhd", "ct.nii.gz"])
def test_read_ct_rejects_nan_voxels(tmp_path: Path, name: str) -> None:
    array = np.zeros((4, 5, 6), dtype=np.float32)
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
    with pytest.raises(DataError, match="SimpleITK cannot read it"):
        read_ct(tmp_path / "junk.nii.gz")


def test_read_annotations_checks_columns(tmp_path: Path) -> None:
    path = tmp_path / "annotations.csv"
    path.write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n1.2.3,1.5,2,3,4\n")
    df = read_annotations(path)
    assert df["seriesuid"].tolist() == ["1.2.3"] and df["coordX"].tolist() == [1.5]
    path.write_text("seriesuid,coordX,coordY,diameter_mm\n1.2.3,1,2,4\n")
    with pytest.raises(DataError, match=r"annotations.csv: missing column\(s\) \['coordZ'\]"):
        read_annotations(path)
    path.write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n1.2.3,1,,3,4\n")
    with pytest.raises(DataError, match="column 'coordY' has 1 missing or non-numeric"):
        read_annotations(path)
