"""Fuzzing the label and annotation CSV loaders: a table, or a ValueError/DataError naming the file."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from naslung.data.labels import LABEL_COLUMNS, read_label_table
from naslung.data.luna16 import ANNOTATION_COLUMNS, read_annotations
from naslung.data.prepare import resolve_labels

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CELLS = st.one_of(
    st.sampled_from(["", "nan", "NaN", "inf", "-1", "0", "3", "1.5", "abc", '"', '""', "1e400", " 2 ", "٤",
                     "1.3.6.1.4.1", "a,b", "\x00", "\r", "—"]),
    st.floats(allow_nan=True).map(str), st.integers().map(str), st.text(max_size=6))


@st.composite
def csv_bytes(draw: st.DrawFn, columns: tuple[str, ...]) -> bytes:
    """A CSV with most of ``columns`` (some dropped, renamed or duplicated) and fuzzed cells, or raw bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=200))
    header = [c for c in columns if draw(st.integers(0, 9))]
    header += draw(st.lists(st.sampled_from([*columns, "extra", "", " coordX"]), max_size=2))
    rows = draw(st.lists(st.lists(CELLS, min_size=len(header), max_size=len(header) + 1), max_size=4))
    text = "\n".join(",".join(row) for row in [header, *rows])
    return text.encode(draw(st.sampled_from(["utf-8", "latin-1", "utf-16"])), errors="replace")


def _loads_or_names_file(loader, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "table.csv"
        path.write_bytes(data)
        try:
            loader(path)
        except ValueError as exc:  # DataError is a ValueError
            assert str(path) in str(exc), str(exc)


@FUZZ
@given(csv_bytes(ANNOTATION_COLUMNS))
def test_annotations_csv(data: bytes) -> None:
    _loads_or_names_file(read_annotations, data)


@FUZZ
@given(csv_bytes(LABEL_COLUMNS))
def test_label_csv_for_prepare(data: bytes) -> None:
    _loads_or_names_file(lambda p: resolve_labels(str(p), p.parent), data)


@FUZZ
@given(csv_bytes(LABEL_COLUMNS))
def test_label_table_reader(data: bytes) -> None:
    _loads_or_names_file(read_label_table, data)
