"""Checked CSV reading: a missing file, column or number is a :class:`DataError` naming the file and row."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from naslung.data.errors import DataError


def read_csv_checked(path: str | Path, required: Iterable[str], numeric: Iterable[str] = (),
                     str_columns: Iterable[str] = ("seriesuid",), nonnegative: Iterable[str] = ()) -> Any:
    """Read a CSV as a DataFrame; a missing file or column, a non-numeric, NaN or infinite value in a
    ``numeric`` column, or a negative value in a ``nonnegative`` one, is a :class:`DataError` naming the
    file, the column and the first bad row."""
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
        _check_values(path, df, col, ~np.isfinite(df[col].to_numpy()), "infinite")
    for col in nonnegative:
        _check_values(path, df, col, df[col].to_numpy(np.float64) < 0, "negative")
    for col in str_columns:
        if col in df.columns:
            df[col] = df[col].astype(str).str.strip()
    return df


def _check_values(path: Path, df: Any, col: str, bad: np.ndarray, what: str) -> None:
    """Refuse the ``bad`` rows of column ``col``, naming the file, the first such data row and its value."""
    rows = np.flatnonzero(bad)
    if len(rows):
        row = int(rows[0])
        raise DataError(f"{path}: column {col!r} has {len(rows)} {what} value(s), first at data row "
                        f"{row + 1} ({df[col].iloc[row]})")
