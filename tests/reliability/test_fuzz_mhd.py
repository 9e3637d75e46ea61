"""Fuzzing the MetaImage header reader: a geometry, or a DataError naming the .mhd or its .raw."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from naslung.data.errors import DataError
from naslung.data.images import read_geometry, read_scan
from naslung.data.metaimage import check_metaimage

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
GOOD = {
    "ObjectType": "Image", "NDims": "3", "BinaryData": "True", "BinaryDataByteOrderMSB": "False",
    "CompressedData": "False", "TransformMatrix": "1 0 0 0 1 0 0 0 1", "Offset": "-10 -20 -30",
    "ElementSpacing": "0.7 0.7 1.25", "DimSize": "4 5 6", "ElementType": "MET_SHORT",
    "ElementDataFile": "s.raw",
}
VALUES = st.one_of(
    st.sampled_from(["", "0", "-1", "nan", "inf", "1e400", "3", "2", "4 5 6", "4 5", "4 5 6 7", "0 0 0",
                     "1 0 0 0 1 0 0 0 1", "0 0 0 0 0 0 0 0 0", "-1 0 0 0 -1 0 0 0 1", "MET_UCHAR",
                     "MET_FLOAT", "MET_SHORT", "MET_NOPE", "LOCAL", "missing.raw", "True", "False", "4 5 -6",
                     "4.5 5 6", "99999 99999 99999", "\u0664 5 6", "-1 -1 -1"]),
    st.text(max_size=12).filter(lambda t: "\n" not in t and "\r" not in t))


@st.composite
def header(draw: st.DrawFn) -> tuple[str, int]:
    fields = dict(GOOD)
    for key in draw(st.lists(st.sampled_from(sorted(GOOD)), max_size=3, unique=True)):
        if draw(st.booleans()):
            fields[key] = draw(VALUES)
        else:
            del fields[key]
    lines = [f"{k} = {v}" for k, v in fields.items()]
    if draw(st.integers(0, 9)) == 0:
        lines.insert(draw(st.integers(0, len(lines))), draw(st.text(max_size=20)))
    size = draw(st.sampled_from([4 * 5 * 6 * 2, 4 * 5 * 6 * 2 - 1, 4 * 5 * 6 * 2 + 2, 4 * 5 * 6, 0]))
    return "\n".join(lines) + "\n", size


@FUZZ
@given(header())
def test_mhd_header(case: tuple[str, int]) -> None:
    text, raw_size = case
    with tempfile.TemporaryDirectory() as folder:
        mhd, raw = Path(folder) / "s.mhd", Path(folder) / "s.raw"
        mhd.write_bytes(text.encode("utf-8", errors="replace"))
        raw.write_bytes(np.arange(raw_size, dtype=np.uint8).tobytes())
        for reader in (check_metaimage, read_geometry, read_scan):
            try:
                reader(mhd)
            except DataError as exc:
                message = str(exc)
                assert str(mhd.parent) in message and ("s.mhd" in message or "s.raw" in message), message
        if text == "".join(f"{k} = {v}\n" for k, v in GOOD.items()) and raw_size == 240:
            assert read_scan(mhd).array.shape == (6, 5, 4)


def test_fuzzer_reaches_valid_headers() -> None:
    """The base case is valid, so the fuzzer exercises both outcomes."""
    with tempfile.TemporaryDirectory() as folder:
        mhd = Path(folder) / "s.mhd"
        mhd.write_text("".join(f"{k} = {v}\n" for k, v in GOOD.items()))
        (Path(folder) / "s.raw").write_bytes(bytes(240))
        geometry = read_geometry(mhd)
        assert geometry.size == (4, 5, 6) and np.allclose(geometry.spacing, (0.7, 0.7, 1.25))
