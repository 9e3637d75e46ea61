"""The LUNA16 tree on disk: ``subsetK/<seriesuid>.mhd`` folders, the official subset table and the CSVs.

Reading the scans: :mod:`naslung.data.images`; where their voxels sit: :mod:`naslung.data.geometry`.
"""

from __future__ import annotations

import csv
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from naslung.data.errors import DataError
from naslung.data.tables import read_csv_checked

N_SUBSETS = 10
SUBSET_RE = re.compile(r"^subset(\d)$")
ANNOTATION_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm")
CANDIDATE_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "class")


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
    """The official LUNA16 ``seriesuid -> subset`` table shipped with naslung (888 series, file order)."""
    text = resources.files("naslung.resources").joinpath("luna16_subsets.csv").read_text()
    table = {row["seriesuid"].strip(): int(row["subset"]) for row in csv.DictReader(text.splitlines())
             if row.get("seriesuid")}
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


def find_csv(root: str | Path, name: str) -> Path | None:
    """``name`` (e.g. ``annotations.csv``) at the root or in ``CSVFILES/`` (how the LUNA16 zip unpacks)."""
    for candidate in (Path(root) / name, Path(root) / "CSVFILES" / name):
        if candidate.is_file():
            return candidate
    return None


def find_annotations(root: str | Path) -> Path | None:
    """The tree's ``annotations.csv`` (see :func:`find_csv`), else None."""
    return find_csv(root, "annotations.csv")


def read_annotations(path: str | Path) -> Any:
    """LUNA16 ``annotations.csv`` (seriesuid, coordX, coordY, coordZ in world mm, diameter_mm)."""
    return read_csv_checked(path, ANNOTATION_COLUMNS, numeric=ANNOTATION_COLUMNS[1:],
                            nonnegative=("diameter_mm",))


def read_candidates(path: str | Path) -> Any:
    """LUNA16 ``candidates.csv`` / ``candidates_V2.csv`` (seriesuid, coordX, coordY, coordZ in world mm,
    class: 1 nodule, 0 not); a class other than 0 or 1 is a :class:`DataError` naming the row."""
    df = read_csv_checked(path, CANDIDATE_COLUMNS, numeric=CANDIDATE_COLUMNS[1:])
    bad = ~df["class"].isin([0, 1])
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise DataError(f"{path}: column 'class' must be 0 or 1, got {df['class'].iloc[row]:g} at data row "
                        f"{row + 1}")
    df["class"] = df["class"].astype(int)
    return df
