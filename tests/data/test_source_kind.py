"""source_kind: prepare types every dataset as luna16, phantom or other, and the phantom labels follow it."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from luna_synth import Scan, Sphere, Tree, label_row, make_tree, write_scan

from naslung.cli.search import _data_note
from naslung.data.dataset import (
    DatasetWriter,
    describe_dataset,
    load_dataset,
    read_source_kind,
    source_kind_of,
    write_dataset,
)
from naslung.data.errors import DataError
from naslung.data.prepare import PrepareConfig, prepare_dataset
from naslung.data.source import is_phantom, source_kind
from naslung.report.discover import RunInfo


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return make_tree(tmp_path / "luna")


def prepare(root: Path, out: Path) -> Path:
    prepare_dataset(PrepareConfig(root, out, size=8, margin=2))
    return out


def run_info(dataset_path: Path) -> RunInfo:
    """A run's record of its dataset, as training writes it into config.json."""
    ds = load_dataset(dataset_path)
    config = {"dataset": {"source": str(dataset_path), "source_kind": ds.source_kind,
                          "provenance": ds.attrs["provenance"]}}
    return RunInfo(path=dataset_path.parent, result={}, config=config, cv_dir=None)


def stored_kind(path: Path) -> str:
    with h5py.File(path, "r") as h5:
        return str(h5.attrs["source_kind"])


def test_luna16_tree_is_luna16_and_not_labelled_phantom(tree: Tree, tmp_path: Path) -> None:
    out = prepare(tree.root, tmp_path / "d.h5")
    assert stored_kind(out) == "luna16"  # written by prepare, not inferred at load
    assert load_dataset(out).source_kind == read_source_kind(out) == "luna16"
    assert describe_dataset(out)["attrs"]["source_kind"] == "luna16"
    assert _data_note(out) == ""  # the search plot's title
    assert not run_info(out).phantom  # the report's tables


def test_phantom_tree_is_phantom_and_labelled(tree: Tree, tmp_path: Path) -> None:
    sources = [{"seriesuid": s.uid, "source_seriesuid": s.uid, "nodule_id": 0, "subset": s.subset}
               for s in tree.scans]
    manifest = {"schema": "naslung-phantom", "version": 2, "seed": 0, "limit": None, "complete": True,
                "disclaimer": "synthetic CT", "sources": sources}
    (tree.root / "phantom.json").write_text(json.dumps(manifest))
    out = prepare(tree.root, tmp_path / "p.h5")
    assert stored_kind(out) == "phantom" and load_dataset(out).source_kind == "phantom"
    assert describe_dataset(out)["provenance"]["phantom"] == {
        "schema": "naslung-phantom", "version": 2, "seed": 0, "limit": None, "disclaimer": "synthetic CT"}
    assert "phantom" in _data_note(out)
    assert run_info(out).phantom


def test_tree_of_other_series_is_other(tmp_path: Path) -> None:
    root = tmp_path / "own"
    scan = Scan("1.2.826.0.1.99.1", 4, spheres=[Sphere((2.0, -5.0, -75.0), 8.0)])
    write_scan(root, scan)
    pd.DataFrame([label_row(scan, 0, scan.spheres[0], [4, 5, 4])]).to_csv(root / "labels.csv", index=False)
    out = prepare(root, tmp_path / "o.h5")
    assert stored_kind(out) == "other" and load_dataset(out).source_kind == "other"
    assert _data_note(out) == "" and not run_info(out).phantom


def _arrays(n: int = 2, side: int = 4) -> dict[str, np.ndarray]:
    return {"images": np.zeros((n, side, side, side), np.int16), "labels": np.arange(n) % 2,
            "fold": np.zeros(n), "seriesuid": ["1.2"] * n, "nodule_id": [str(i) for i in range(n)],
            "world_center": np.zeros((n, 3)), "diameter_mm": np.ones(n), "malignancy_mean": np.ones(n),
            "malignancy_median": np.ones(n), "ratings": np.zeros((n, 0)), "padded": np.zeros(n, bool)}


@pytest.mark.parametrize(("provenance", "expected"), [
    ({"source": "/data/phantom", "phantom": {"seed": 0, "disclaimer": "synthetic"}}, "phantom"),
    ({"source": "/data/phantom-like-name", "phantom": None}, "luna16"),  # prepare's real-data mark
    ({"phantom": {}}, "luna16"),
    ({"source": "phantom"}, "other"),  # no explicit entry: not written by prepare, the word does not count
    (None, "other"),
])
def test_files_without_the_attribute_are_classified_from_the_phantom_entry(
        tmp_path: Path, provenance: object, expected: str) -> None:
    attrs = {"window": [-1000.0, 400.0], **({"provenance": provenance} if provenance is not None else {})}
    path = write_dataset(tmp_path / "old.h5", _arrays(), attrs)
    assert load_dataset(path).source_kind == read_source_kind(path) == expected
    assert is_phantom(provenance) == (expected == "phantom")
    assert source_kind({"dataset": {"provenance": provenance}}) == expected  # a run's config.json


def test_the_attribute_wins_and_bad_values_are_refused(tmp_path: Path) -> None:
    attrs = {"window": [-1000.0, 400.0], "source_kind": "luna16", "provenance": {"phantom": {"seed": 0}}}
    assert read_source_kind(write_dataset(tmp_path / "a.h5", _arrays(), attrs)) == "luna16"
    assert source_kind_of({"source_kind": "phantom", "provenance": {"phantom": None}}) == "phantom"
    with pytest.raises(ValueError, match="source_kind must be one of"):
        DatasetWriter(tmp_path / "b.h5", (4, 4, 4), {"window": [-1000.0, 400.0], "source_kind": "LUNA"})
    path = write_dataset(tmp_path / "c.h5", _arrays(), {"window": [-1000.0, 400.0]})
    with h5py.File(path, "a") as h5:
        h5.attrs["source_kind"] = "real"
    with pytest.raises(DataError, match=r"c\.h5: attribute 'source_kind' must be one of .* got 'real'"):
        load_dataset(path)
