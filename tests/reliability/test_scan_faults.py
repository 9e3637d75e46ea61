"""The one scan check (:mod:`naslung.data.scan_check`) at ``predict`` and ``data prepare --luna``: fault
injection from a table.

Each case damages one scan of a tiny LUNA16-style tree (or a DICOM series) that the test writes, and asserts:
``predict`` exits 2 with one ``error:`` line naming the file and the problem; ``prepare`` skips the scan,
lists it with its reason in ``OUT.errors.json`` and counts it; every file present before is byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813

from .runtime_support import TRAIN_FAST, cli, error_line, write_tiny

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))

from luna_synth import make_tree  # noqa: E402


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("scans")
    run = root / "run"
    trained = cli("train", "--data", write_tiny(root / "d.h5"), "--fold", 1, "--out", run, *TRAIN_FAST,
                  "--epochs", "1")
    assert trained.exit_code == 0, trained.output
    tree = make_tree(root / "luna")
    return {"root": root, "RUN": run, "LUNA": tree.root, "UID": Path(tree.scans[0].uid),
            "SUBSET": Path(f"subset{tree.scans[0].subset}")}


def _header(key: str, value: str) -> Callable[[Path], None]:
    def damage(mhd: Path) -> None:
        text = mhd.read_text()
        assert re.search(rf"^{key} = ", text, flags=re.M), key
        mhd.write_text(re.sub(rf"^{key} = .*$", f"{key} = {value}", text, flags=re.M))
    return damage


def _raw(edit: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def damage(mhd: Path) -> None:
        raw = mhd.with_suffix(".raw")
        raw.write_bytes(edit(raw.read_bytes()))
    return damage


def _pixels(values: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    return _raw(lambda b: values(np.frombuffer(b, dtype="<i2")).astype("<i2").tobytes())


#: (id, damage of the .mhd (and its .raw), fragments the one error line must hold; {raw}/{mhd}: the file)
SCAN_FAULTS: list[tuple[str, Callable[[Path], None], tuple[str, ...]]] = [
    ("compressed-flag-raw-payload", _header("CompressedData", "True"), ("{raw}", "not a zlib stream")),
    ("raw-short", _raw(lambda b: b[:-100]), ("{raw}", "truncated")),
    ("raw-long", _raw(lambda b: b + b"\0" * 64), ("{raw}", "DimSize")),
    ("spacing-1e30", _header("ElementSpacing", "1e30 1e30 1e30"), ("{mhd}", "outside 0.1-10 mm")),
    ("spacing-tiny", _header("ElementSpacing", "0.001 0.8 1.25"), ("{mhd}", "outside 0.1-10 mm")),
    ("spacing-huge-slices", _header("ElementSpacing", "0.8 0.8 50"), ("{mhd}", "outside 0.1-10 mm")),
    ("transform-sheared", _header("TransformMatrix", "1 0.5 0 0 1 0 0 0 1"), ("{mhd}", "not orthonormal")),
    ("transform-scaled", _header("TransformMatrix", "2 0 0 0 1 0 0 0 1"), ("{mhd}", "not orthonormal")),
    ("all-zero-pixels", _pixels(np.zeros_like), ("{mhd}", "every voxel is 0 HU")),
    ("stored-values-not-hu", _pixels(lambda a: a + 1024), ("{mhd}", "not a chest CT in HU")),
]
IDS = [c[0] for c in SCAN_FAULTS]


def _damaged_tree(world: dict[str, Path], tmp_path: Path,
                  damage: Callable[[Path], None]) -> tuple[Path, Path]:
    luna = tmp_path / "luna"
    shutil.copytree(world["LUNA"], luna)
    mhd = luna / world["SUBSET"] / f"{world['UID']}.mhd"
    damage(mhd)
    return luna, mhd


def _fill(fragments: tuple[str, ...], mhd: Path) -> list[str]:
    return [f.format(mhd=mhd, raw=mhd.with_suffix(".raw")) for f in fragments]


@pytest.mark.parametrize(("damage", "fragments"), [c[1:] for c in SCAN_FAULTS], ids=IDS)
def test_predict_refuses(world: dict[str, Path], tmp_path: Path, damage: Callable[[Path], None],
                         fragments: tuple[str, ...]) -> None:
    _, mhd = _damaged_tree(world, tmp_path, damage)
    before = snapshot(tmp_path)
    line = error_line(cli("predict", "--model", world["RUN"], "--image", mhd, "--coords", "0,0,-75"))
    for fragment in _fill(fragments, mhd):
        assert fragment in line, (fragment, line)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(("damage", "fragments"), [c[1:] for c in SCAN_FAULTS], ids=IDS)
def test_prepare_skips_and_lists(world: dict[str, Path], tmp_path: Path, damage: Callable[[Path], None],
                                 fragments: tuple[str, ...]) -> None:
    luna, mhd = _damaged_tree(world, tmp_path, damage)
    before = snapshot(tmp_path)
    out = tmp_path / "crops.h5"
    result = cli("data", "prepare", "--luna", luna, "--out", out, "--size", 8, "--margin", 1, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["skipped"]["refused_scans"] == 1 and report["n_scans"] == 2
    listed = json.loads((tmp_path / "crops.h5.errors.json").read_text())["refused"]
    assert [entry["scan"] for entry in listed] == [str(mhd)]
    reason = listed[0]["reason"]
    assert "\n" not in reason and all(f in reason for f in _fill(fragments, mhd)), reason
    warned = " ".join(result.stderr.split())
    assert "scan skipped" in warned and str(mhd.name) in warned.replace(" ", "")
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before
    assert set(after) - set(before) == {"crops.h5", "crops.h5.errors.json"}


def test_prepare_refuses_when_every_scan_is_bad(world: dict[str, Path], tmp_path: Path) -> None:
    luna = tmp_path / "luna"
    shutil.copytree(world["LUNA"], luna)
    for mhd in luna.rglob("*.mhd"):
        _header("ElementSpacing", "1e30 1e30 1e30")(mhd)
    before = snapshot(tmp_path)
    line = error_line(cli("data", "prepare", "--luna", luna, "--out", tmp_path / "crops.h5", "--size", 8,
                          "--margin", 1))
    assert "outside 0.1-10 mm" in line and "every scan with labelled nodules refused" in line
    assert "crops.h5.errors.json" in line and not (tmp_path / "crops.h5").exists()
    assert {k: v for k, v in snapshot(tmp_path).items() if k in before} == before


# ---------------------------------------------------------------------------------------------- DICOM
SERIES = "1.2.826.0.1.3680043.2.1125.1"


def _write_series(folder: Path, series_uid: str = SERIES, n: int = 8) -> None:
    """A DICOM series of ``n`` axial slices around world (0, 0, -75) mm, lung and tissue in it."""
    folder.mkdir(parents=True, exist_ok=True)
    array = np.full((n, 32, 32), -800, dtype=np.int16)
    array[:, 12:20, 12:20] = 40
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, 2.0))
    image.SetOrigin((-16.0, -16.0, -75.0 - n))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(n):
        axial = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in (("0020|000e", series_uid), ("0020|0013", str(k + 1)),
                           ("0020|0032", "\\".join(map(str, position))), ("0020|0037", "1\\0\\0\\0\\1\\0"),
                           ("0008|0060", "CT")):
            axial.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{series_uid}-{k:03d}.dcm"))
        writer.Execute(axial)


def _missing_slice(folder: Path) -> None:
    sorted(folder.glob("*.dcm"))[3].unlink()


def _corrupt_slice(folder: Path) -> None:
    victim = sorted(folder.glob("*.dcm"))[3]
    data = victim.read_bytes()
    victim.write_bytes(data[:200] + b"\xff" * 64)


#: (id, damage of the series folder, fragments of the one error line; {dir}: the folder)
DICOM_FAULTS: list[tuple[str, Callable[[Path], None], tuple[str, ...]]] = [
    ("missing-slice", _missing_slice, ("{dir}", "unevenly spaced", "missing or repeated")),
    ("corrupt-slice", _corrupt_slice, ("{dir}",)),
]


@pytest.mark.parametrize(("damage", "fragments"), [c[1:] for c in DICOM_FAULTS],
                         ids=[c[0] for c in DICOM_FAULTS])
def test_predict_refuses_a_damaged_series(world: dict[str, Path], tmp_path: Path,
                                          damage: Callable[[Path], None], fragments: tuple[str, ...]) -> None:
    folder = tmp_path / "dicom"
    _write_series(folder)
    damage(folder)
    before = snapshot(tmp_path)
    line = error_line(cli("predict", "--model", world["RUN"], "--image", folder, "--coords", "0,0,-75"))
    for fragment in fragments:
        assert fragment.format(dir=folder) in line, (fragment, line)
    assert snapshot(tmp_path) == before


def test_predict_picks_a_series_of_a_mixed_folder(world: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "dicom"
    _write_series(folder, SERIES)
    _write_series(folder, SERIES[:-1] + "2")
    before = snapshot(tmp_path)
    line = error_line(cli("predict", "--model", world["RUN"], "--image", folder, "--coords", "0,0,-75"))
    assert str(folder) in line and "2 DICOM series" in line and "--series" in line and SERIES in line
    line = error_line(cli("predict", "--model", world["RUN"], "--image", folder, "--coords", "0,0,-75",
                          "--series", "9.9.9"))
    assert "9.9.9" in line and str(folder) in line
    result = cli("predict", "--model", world["RUN"], "--image", folder, "--coords", "0,0,-75", "--series",
                 SERIES, "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["nodules"]) == 1
    assert snapshot(tmp_path) == before
