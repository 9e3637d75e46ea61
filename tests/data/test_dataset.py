"""dataset: HDF5 round trip, schema version checks, streaming writer, atomicity, summaries."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from naslung.data.dataset import (
    SCHEMA_VERSION,
    DatasetWriter,
    describe_dataset,
    load_dataset,
    read_attrs,
    read_rows,
    write_dataset,
)
from naslung.data.errors import DataError

ATTRS = {"spatial_dims": 3, "size": 4, "margin": 1, "spacing_mm": 1.0, "window": [-1000.0, 400.0],
         "rating_names": ["texture", "margin"], "provenance": {"source": "test", "command": "pytest"}}


def arrays(n: int = 5, side: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "images": rng.integers(-1000, 401, size=(n, side, side, side)).astype(np.int16),
        "labels": np.arange(n) % 2, "fold": np.arange(n) % 10,
        "seriesuid": [f"1.2.{i // 2}" for i in range(n)],
        "nodule_id": [str(i) for i in range(n)], "world_center": rng.normal(size=(n, 3)),
        "diameter_mm": rng.uniform(3, 30, n), "malignancy_mean": rng.uniform(1, 5, n),
        "malignancy_median": rng.uniform(1, 5, n), "ratings": rng.uniform(1, 5, (n, 2)),
        "padded": np.arange(n) == 1,
    }


def test_round_trip(tmp_path: Path) -> None:
    data = arrays()
    write_dataset(tmp_path / "d.h5", data, ATTRS)
    ds = load_dataset(tmp_path / "d.h5")
    assert len(ds) == 5 and ds.spatial_dims == 3 and ds.size == 4 and ds.margin == 1
    np.testing.assert_allclose(ds.images, (data["images"] + 1000.0) / 1400.0, atol=1e-6)
    assert ds.images.dtype == np.float32 and ds.images.min() >= 0 and ds.images.max() <= 1
    assert ds.labels.dtype == np.uint8 and ds.fold.dtype == np.int8 and ds.padded.dtype == bool
    assert ds.seriesuid.tolist() == data["seriesuid"] and ds.nodule_id.tolist() == data["nodule_id"]
    np.testing.assert_allclose(ds.world_center, data["world_center"])
    np.testing.assert_allclose(ds.ratings, data["ratings"], rtol=1e-6)
    assert ds.attrs["provenance"] == ATTRS["provenance"] and ds.attrs["schema_version"] == SCHEMA_VERSION
    sub = ds.subset(ds.labels == 1)
    assert len(sub) == 2 and sub.nodule_id.tolist() == ["1", "3"] and sub.attrs == ds.attrs


def test_two_d_and_empty(tmp_path: Path) -> None:
    data = arrays()
    data["images"] = data["images"][:, 0]
    write_dataset(tmp_path / "d2.h5", data, {**ATTRS, "spatial_dims": 2})
    assert load_dataset(tmp_path / "d2.h5").spatial_dims == 2
    with DatasetWriter(tmp_path / "e.h5", (6, 6), {**ATTRS, "spatial_dims": 2}):
        pass
    empty = load_dataset(tmp_path / "e.h5")
    assert len(empty) == 0 and empty.images.shape == (0, 6, 6) and empty.ratings.shape == (0, 2)


def test_streaming_equals_one_shot(tmp_path: Path) -> None:
    data = arrays(n=7)
    write_dataset(tmp_path / "a.h5", data, ATTRS)
    with DatasetWriter(tmp_path / "b.h5", (6, 6, 6), ATTRS) as writer:
        for lo, hi in ((0, 3), (3, 3), (3, 7)):
            writer.append(data["images"][lo:hi], **{k: v[lo:hi] for k, v in data.items() if k != "images"})
    a, b = load_dataset(tmp_path / "a.h5"), load_dataset(tmp_path / "b.h5")
    for name in ("images", "labels", "fold", "seriesuid", "world_center", "ratings", "padded"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_failed_write_keeps_the_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "d.h5"
    write_dataset(path, arrays(seed=1), ATTRS)
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="boom"), DatasetWriter(path, (6, 6, 6), ATTRS) as writer:
        data = arrays(seed=2)
        writer.append(data.pop("images"), **data)
        raise RuntimeError("boom")
    with pytest.raises(ValueError, match="missing arrays"):
        write_dataset(path, {k: v for k, v in arrays().items() if k != "padded"}, ATTRS)
    with pytest.raises(ValueError, match="crops of shape"), DatasetWriter(path, (5, 5, 5), ATTRS) as writer:
        data = arrays()
        writer.append(data.pop("images"), **data)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["d.h5"]


def test_schema_and_version_checks(tmp_path: Path) -> None:
    path = tmp_path / "d.h5"
    write_dataset(path, arrays(), ATTRS)
    with h5py.File(path, "a") as h5:
        h5.attrs["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(DataError, match="newer than this naslung"):
        load_dataset(path)
    with h5py.File(path, "a") as h5:
        del h5.attrs["schema_version"]
    with pytest.raises(DataError, match="no valid schema_version"):
        read_attrs(path)
    with h5py.File(path, "a") as h5:
        h5.attrs["schema_version"] = SCHEMA_VERSION
        h5.attrs["schema"] = "something-else"
    with pytest.raises(DataError, match="not a naslung crop dataset"):
        read_attrs(path)
    (tmp_path / "junk.h5").write_bytes(b"junk")
    with pytest.raises(DataError, match="not a readable HDF5"):
        read_attrs(tmp_path / "junk.h5")
    with pytest.raises(FileNotFoundError):
        read_attrs(tmp_path / "missing.h5")


def test_describe_and_read_rows(tmp_path: Path) -> None:
    write_dataset(tmp_path / "d.h5", arrays(n=6), ATTRS)
    summary = describe_dataset(tmp_path / "d.h5")
    assert (summary["n"], summary["benign"], summary["malignant"], summary["scans"]) == (6, 3, 3, 3)
    assert summary["by_fold"][1] == {"benign": 0, "malignant": 1, "total": 1}
    assert summary["padded"] == 1 and summary["image_shape"] == [6, 6, 6, 6]
    assert summary["provenance"]["command"] == "pytest" and "provenance" not in summary["attrs"]
    rows = read_rows(tmp_path / "d.h5", np.array([4, 1]), ("images", "seriesuid"))
    assert rows["images"].dtype == np.int16 and rows["seriesuid"].tolist() == ["1.2.0", "1.2.2"]
