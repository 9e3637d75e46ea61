"""luna16: the official subset table, subset discovery in a LUNA16 tree, and its CSVs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from luna_synth import Scan, luna_uid, write_scan

from naslung.data.errors import DataError
from naslung.data.luna16 import discover_scans, load_subset_table, read_annotations, read_candidates


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


def test_read_candidates_checks_the_class(tmp_path: Path) -> None:
    path = tmp_path / "candidates_V2.csv"
    path.write_text("seriesuid,coordX,coordY,coordZ,class\n1.2.3,1.5,2,3,1\n1.2.3,-4,5,6,0\n")
    df = read_candidates(path)
    assert df["class"].tolist() == [1, 0] and df["class"].dtype.kind == "i"
    assert df["coordX"].tolist() == [1.5, -4]
    path.write_text("seriesuid,coordX,coordY,coordZ,class\n1.2.3,1.5,2,3,1\n1.2.3,-4,5,6,2\n")
    with pytest.raises(DataError, match=r"V2.csv: column 'class' must be 0 or 1, got 2 at data row 2"):
        read_candidates(path)
    path.write_text("seriesuid,coordX,coordY,coordZ\n1.2.3,1.5,2,3\n")
    with pytest.raises(DataError, match=r"missing column\(s\) \['class'\]"):
        read_candidates(path)
