"""The crop dataset validator (:mod:`naslung.data.validate`) and prepare's table checks: fault injection.

Each case damages a copy of a tiny dataset (or of a LUNA16-style tree's tables) in one way, runs a command
on it, and asserts exit 2, one ``error:`` line naming the file (and the attribute, array or column), and
that every file present before is byte-identical after.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from naslung.data.errors import DataError
from naslung.data.pixels import check_pixels

from .runtime_support import TRAIN_FAST, cli, error_line, write_tiny

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))

from luna_synth import make_tree  # noqa: E402


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny(tmp_path_factory.mktemp("validator") / "clean.h5")


def _float_images(value: float, row: int = 0) -> Callable[[h5py.File], None]:
    def damage(h5: h5py.File) -> None:
        images = h5["images"][()].astype(np.float32)
        images[row, 1, 2, 3] = value
        del h5["images"]
        h5["images"] = images

    return damage


def _attr(key: str, value: object) -> Callable[[h5py.File], None]:
    def damage(h5: h5py.File) -> None:
        h5.attrs[key] = value

    return damage


def _array(name: str, row: int, value: object) -> Callable[[h5py.File], None]:
    def damage(h5: h5py.File) -> None:
        data = h5[name][()]
        data[row] = value
        h5[name][...] = data

    return damage


def _labels(value: int) -> Callable[[h5py.File], None]:
    def damage(h5: h5py.File) -> None:
        h5["labels"][...] = value

    return damage


def _images(edit: Callable[[np.ndarray], None]) -> Callable[[h5py.File], None]:
    def damage(h5: h5py.File) -> None:
        images = h5["images"][()]
        edit(images)
        h5["images"][...] = images

    return damage


def _crop_2d(h5: h5py.File) -> None:
    images = h5["images"][()][:, 5]
    del h5["images"]
    h5["images"] = images  # 2-D crops, attrs still say spatial_dims 3


def _repeat_nodule(h5: h5py.File) -> None:
    ids = [s.decode() if isinstance(s, bytes) else str(s) for s in h5["nodule_id"][()]]
    uids = [s.decode() if isinstance(s, bytes) else str(s) for s in h5["seriesuid"][()]]
    ids[3], uids[3] = ids[2], uids[2]
    for name, values in (("nodule_id", ids), ("seriesuid", uids)):
        del h5[name]
        h5.create_dataset(name, data=np.array(values, dtype=object), dtype=h5py.string_dtype())


def _air(images: np.ndarray) -> None:
    images[4] = 0


def _bright(images: np.ndarray) -> None:
    images[6, 0, 0, 0] = 3000


#: (id, damage, commands it must fail, fragments of the one line)
CASES: list[tuple[str, Callable[[h5py.File], None], tuple[str, ...], tuple[str, ...]]] = [
    ("inf-pixels", _float_images(np.inf), ("train", "check"), ("'images'", "non-finite")),
    ("nan-pixels", _float_images(np.nan, 7), ("train", "check"), ("row 7", "non-finite")),
    ("size-vs-shape", _attr("size", 6), ("train", "info", "check"), ("size 6", "margin 1", "side 10")),
    ("negative-margin", _attr("margin", -1), ("train", "info", "check"), ("'margin'", ">= 0")),
    ("fractional-margin", _attr("margin", 1.5), ("train", "info"), ("'margin'", "whole number")),
    ("zero-size", _attr("size", 0), ("train", "info"), ("'size'",)),
    ("dims-4", _attr("spatial_dims", 4), ("train", "info"), ("'spatial_dims'",)),
    ("dims-vs-shape", _crop_2d, ("train", "info"), ("2-D crops", "'spatial_dims' is 3")),
    ("spacing-zero", _attr("spacing_mm", 0.0), ("train", "info"), ("'spacing_mm'",)),
    ("spacing-inf", _attr("spacing_mm", np.inf), ("train", "info"), ("'spacing_mm'",)),
    ("negative-diameter", _array("diameter_mm", 3, -4.0), ("train", "info"), ("'diameter_mm'", "row 3")),
    ("nan-diameter", _array("diameter_mm", 5, np.nan), ("train", "info"), ("'diameter_mm'", "row 5")),
    ("inf-centre", _array("world_center", 2, np.inf), ("train", "info"), ("'world_center'", "row 2")),
    ("negative-fold", _array("fold", 1, -1), ("train", "info"), ("'fold'", "row 1")),
    ("one-class-benign", _labels(0), ("train",), ("only class 0", "benign and malignant")),
    ("one-class-malignant", _labels(1), ("train",), ("only class 1",)),
    ("constant-crop", _images(_air), ("check",), ("row 4", "constant")),
    ("outside-window", _images(_bright), ("check",), ("row 6", "outside the window")),
    ("repeated-nodule", _repeat_nodule, ("check",), ("row 3", "repeats nodule")),
]
COMMANDS = {
    "train": lambda d, tmp: ["train", "--data", d, "--fold", "1", "--out", tmp / "run", *TRAIN_FAST],
    "info": lambda d, tmp: ["data", "info", d],
    "check": lambda d, tmp: ["data", "info", d, "--check"],
}
PARAMS = [pytest.param(damage, command, fragments, id=f"{case}-{command}")
          for case, damage, commands, fragments in CASES for command in commands]


@pytest.mark.parametrize(("damage", "command", "fragments"), PARAMS)
def test_damaged_dataset_is_refused(clean: Path, tmp_path: Path, damage: Callable[[h5py.File], None],
                                    command: str, fragments: tuple[str, ...]) -> None:
    data = tmp_path / "d.h5"
    shutil.copy(clean, data)
    with h5py.File(data, "a") as h5:
        damage(h5)
    before = snapshot(tmp_path)
    line = error_line(cli(*COMMANDS[command](data, tmp_path)))
    assert str(data) in line, line
    for fragment in fragments:
        assert fragment in line, line
    assert snapshot(tmp_path) == before  # nothing written (no run folder either)


def test_clean_dataset_passes_the_full_check(clean: Path) -> None:
    assert check_pixels(clean) == {"crops_read": 40, "problems": 0}
    result = cli("data", "info", clean, "--check", "--json")
    assert result.exit_code == 0, result.output
    assert '"crops_read": 40' in result.stdout


def test_check_counts_every_problem(clean: Path, tmp_path: Path) -> None:
    data = tmp_path / "d.h5"
    shutil.copy(clean, data)
    with h5py.File(data, "a") as h5:
        images = h5["images"][()]
        images[[1, 8, 9]] = -1000
        h5["images"][...] = images
    with pytest.raises(DataError, match=r"row 1 is constant.*\(3 constant, of 40 crops"):
        check_pixels(data)


# ---- prepare: a label table or annotations.csv with an impossible value ------------------------------------
def _set(name: str, column: str, row: int, value: object) -> Callable[[Path], Path]:
    def damage(root: Path) -> Path:
        table = pd.read_csv(root / name, dtype={"seriesuid": str})
        table.loc[row, column] = value
        table.to_csv(root / name, index=False)
        return root / name

    return damage


TABLES: list[tuple[str, Callable[[Path], Path], tuple[str, ...]]] = [
    ("labels-negative-diameter", _set("labels.csv", "diameter_mm", 1, -6.0),
     ("'diameter_mm'", "negative", "data row 2")),
    ("labels-inf-diameter", _set("labels.csv", "diameter_mm", 0, np.inf), ("'diameter_mm'", "infinite")),
    ("labels-negative-readers", _set("labels.csv", "n_readers", 2, -3), ("'n_readers'", "data row 3")),
    ("labels-inf-coordinate", _set("labels.csv", "coordX", 3, -np.inf), ("'coordX'", "data row 4")),
    ("annotations-negative-diameter", _set("annotations.csv", "diameter_mm", 0, -1.0),
     ("'diameter_mm'", "data row 1")),
]


@pytest.mark.parametrize(("damage", "fragments"), [c[1:] for c in TABLES], ids=[c[0] for c in TABLES])
def test_prepare_refuses_impossible_table_values(tmp_path: Path, damage: Callable[[Path], Path],
                                                 fragments: tuple[str, ...]) -> None:
    tree = make_tree(tmp_path / "luna")
    table = damage(tree.root)
    before = snapshot(tmp_path)
    out = tmp_path / "crops.h5"
    line = error_line(cli("data", "prepare", "--luna", tree.root, "--out", out, "--size", "8",
                          "--margin", "2"))
    assert str(table) in line, line
    for fragment in fragments:
        assert fragment in line, line
    assert snapshot(tmp_path) == before and not out.exists()
