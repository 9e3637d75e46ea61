"""`naslung predict` on a CT file: agrees with evaluation, handles formats and ensembles, fails clearly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813
import torch
from typer.testing import CliRunner

from naslung.data.dataset import load_dataset
from naslung.data.errors import DataError
from naslung.serving.predict import (
    find_members,
    load_members,
    parse_coords,
    predict_nodules,
    read_coords_file,
    resolve_settings,
)
from naslung.serving.runs import load_run_model
from naslung.train.engine import predict_proba


def _scan_path(tree, uid):
    scan = tree.scan(uid)
    return tree.root / f"subset{scan.subset}" / f"{uid}.mhd"


def test_predict_equals_evaluation_on_every_prepared_nodule(tiny_runs, luna):
    tree, data = luna
    dataset = load_dataset(data)
    members = [load_run_model(tiny_runs["asoftmax"])]
    settings, notes = resolve_settings(members)
    assert notes == [] and settings.window == (-1000.0, 400.0) and settings.spacing == 1.0
    expected = predict_proba(members[0].model, torch.from_numpy(dataset.images), dataset.size, 8)
    assert len(dataset) == 4 and dataset.padded.any()  # one crop reaches past its scan border
    for i in range(len(dataset)):
        world = tuple(dataset.world_center[i])
        (got,) = predict_nodules(_scan_path(tree, dataset.seriesuid[i]), [("n", world)], members, settings)
        assert got.members[0]["prob_malignant"] == pytest.approx(expected[i], abs=1e-6)
        assert got.padded == bool(dataset.padded[i])
        assert got.attention is not None and got.attention.shape == (16, 16)
        assert got.attention.min() >= 0.0 and got.attention.max() <= 1.0


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_other_formats_give_the_same_probability(tiny_runs, luna, tmp_path, suffix):
    tree, data = luna
    dataset = load_dataset(data)
    i = 2  # the flipped-direction scan
    src = _scan_path(tree, dataset.seriesuid[i])
    other = tmp_path / f"scan{suffix}"
    sitk.WriteImage(sitk.ReadImage(str(src)), str(other))
    members = [load_run_model(tiny_runs["asoftmax"])]
    settings, _ = resolve_settings(members)
    world = tuple(dataset.world_center[i])
    a = predict_nodules(src, [("n", world)], members, settings)[0]
    b = predict_nodules(other, [("n", world)], members, settings)[0]
    assert b.members[0]["prob_malignant"] == pytest.approx(a.members[0]["prob_malignant"], abs=1e-6)


def test_ensemble_votes_and_cli(tiny_runs, luna, tmp_path):
    from naslung.cli.app import app

    tree, data = luna
    dataset = load_dataset(data)
    ens = tmp_path / "ensemble.json"
    ens.write_text(json.dumps({"runs": [str(tiny_runs["asoftmax"]), str(tiny_runs["softmax"])]}))
    assert find_members(ens) == [tiny_runs["asoftmax"], tiny_runs["softmax"]]
    assert len(find_members(tiny_runs["data"].parent)) == 2  # a folder of runs
    coords_csv = tmp_path / "coords.csv"
    world = dataset.world_center
    coords_csv.write_text("id,coordX,coordY,coordZ\n" + "".join(
        f"n{i},{world[i][0]},{world[i][1]},{world[i][2]}\n" for i in (0, 1)))
    scan = _scan_path(tree, dataset.seriesuid[0])
    overlay = tmp_path / "ov.png"
    result = CliRunner().invoke(app, ["predict", "--model", str(ens), "--image", str(scan),
                                      "--coords-file", str(coords_csv), "--json", "--overlay", str(overlay)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert [n["id"] for n in out["nodules"]] == ["n0", "n1"]
    for n in out["nodules"]:
        probs = [m["prob_malignant"] for m in n["members"]]
        assert len(probs) == 2 and n["mean_prob"] == pytest.approx(np.mean(probs))
        votes = sum(p >= 0.5 for p in probs)
        assert n["majority"] == int(votes > 1)  # > floor(2/2): a tie is benign
        assert n["agreement"] == pytest.approx(max(votes, 2 - votes) / 2 if votes != 1 else 0.5)
        assert (tmp_path / f"ov_{n['id']}.png").is_file()
    before = torch.get_num_threads()
    try:
        args = ["--coords", ",".join(map(str, world[0])), "--threads", "1"]
        text = CliRunner().invoke(app, ["predict", "--model", str(tiny_runs["asoftmax"]), "--image",
                                        str(scan), *args])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert text.exit_code == 0 and "majority of 1" in text.output
    zero = CliRunner().invoke(app, ["predict", "--model", str(tiny_runs["asoftmax"]), "--image", str(scan),
                                    "--coords", "0,0,0", "--threads", "0"])
    assert zero.exit_code == 2 and "--threads" in zero.output


def test_bad_inputs_fail_clearly(tiny_runs, luna, tmp_path):
    from naslung.cli.app import app

    tree, data = luna
    scan = _scan_path(tree, tree.scans[0].uid)
    members = load_members(tiny_runs["asoftmax"])
    settings, _ = resolve_settings(members)
    with pytest.raises(DataError, match=r"coordinate \[500\.0, 0\.0, 0\.0\].*outside the scan"):
        predict_nodules(scan, [("x", (500.0, 0.0, 0.0))], members, settings)
    garbage = tmp_path / "broken.mhd"
    garbage.write_text("this is not a header\n")
    with pytest.raises(DataError, match="broken.mhd"):
        predict_nodules(garbage, [("x", (0.0, 0.0, 0.0))], members, settings)
    with pytest.raises(DataError, match="expected three"):
        parse_coords("1,2")
    bad_csv = tmp_path / "c.csv"
    bad_csv.write_text("coordX,coordY\n1,2\n")
    with pytest.raises(DataError, match="c.csv.*coordZ"):
        read_coords_file(bad_csv)
    with pytest.raises(ValueError, match="spacing=1.0, not --spacing 0.7"):
        resolve_settings(members, spacing=0.7)
    with pytest.raises(ValueError, match=r"window=\(-1000.0, 400.0\)"):
        resolve_settings(members, window=(-1200.0, 600.0))
    # An ensemble whose members were trained on other crops.
    other = load_run_model(tiny_runs["softmax"])
    object.__setattr__(other.crop, "size", 32)
    with pytest.raises(ValueError, match="run_softmax: trained on crops with size=32"):
        resolve_settings([members[0], other])
    # Through the CLI: one line, exit status != 0, the file named, no traceback.
    r = CliRunner().invoke(app, ["predict", "--model", str(tiny_runs["asoftmax"]), "--image", str(garbage),
                                 "--coords", "0,0,0"])
    assert r.exit_code != 0 and "broken.mhd" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["predict", "--model", str(tmp_path / "none"), "--image", str(scan),
                                 "--coords", "0,0,0"])
    assert r.exit_code != 0 and "none" in r.output
