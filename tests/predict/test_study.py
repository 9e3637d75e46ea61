"""`naslung predict --scans --candidates --out`: a whole phantom LUNA16 tree, a kill and a resume, errors."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from naslung.serving.predict import load_members, resolve_settings
from naslung.serving.study import errors_path, partial_path, predict_study, read_errors

BAD_UID = "1.2.826.0.1.3680043.2.9999.1"
MISSING_UID = "1.2.826.0.1.3680043.2.9999.2"


@pytest.fixture()
def study(luna, tmp_path):
    """A copy of the tree plus an unreadable scan, and a candidate table with every kind of bad row."""
    tree, _ = luna
    root = tmp_path / "tree"
    shutil.copytree(tree.root, root)
    (root / "subset4").mkdir()
    (root / "subset4" / f"{BAD_UID}.mhd").write_text("ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\n"
                                                      "ElementType = MET_SHORT\nElementDataFile = gone.raw\n")
    lines = ["seriesuid,coordX,coordY,coordZ,class"]
    for scan in tree.scans[:3]:
        for sphere in scan.spheres:
            lines.append(f"{scan.uid},{sphere.center[0]},{sphere.center[1]},{sphere.center[2]},1")
    lines.append(f"{tree.scans[0].uid},900.0,900.0,900.0,0")  # outside its scan
    lines.append(f"{MISSING_UID},0.0,0.0,0.0,0")  # no such scan
    lines.append(f"{BAD_UID},0.0,0.0,0.0,0")  # unreadable scan
    csv = tmp_path / "candidates.csv"
    csv.write_text("\n".join(lines) + "\n")
    return root, csv, tree


def _members(runs, ensemble):
    members = load_members(runs["asoftmax"]) + (load_members(runs["softmax"]) if ensemble else [])
    return members, resolve_settings(members)[0]


@pytest.mark.parametrize("ensemble", [False, True])
def test_kill_then_resume_equals_an_uninterrupted_run(tiny_runs, study, tmp_path, ensemble):
    root, csv, tree = study
    members, settings = _members(tiny_runs, ensemble)
    whole = tmp_path / "whole.csv"
    report = predict_study(root, csv, members, settings, whole, batch=2)
    header = whole.read_text().splitlines()[0].split(",")
    assert header[:5] == ["seriesuid", "coordX", "coordY", "coordZ", "probability"]
    assert (header[-1] == "vote" and len(header) == 8) if ensemble else len(header) == 5
    assert report.rows == 6 and len(whole.read_text().splitlines()) == 7
    took = report.seconds
    assert set(took) == {"read", "crop", "model", "total"} and min(took.values()) > 0
    assert took["read"] + took["crop"] + took["model"] <= took["total"]

    killed = tmp_path / "killed.csv"
    seen = []

    def kill(uid: str) -> None:
        seen.append(uid)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        predict_study(root, csv, members, settings, killed, batch=2, on_scan_done=kill)
    assert not killed.exists() and partial_path(killed).is_file()
    with open(partial_path(killed), "a") as fh:  # a row torn by the kill
        fh.write(f"{tree.scans[2].uid},1.0,2")
    again = predict_study(root, csv, members, settings, killed, batch=2)
    assert again.skipped_scans == 2
    assert killed.read_bytes() == whole.read_bytes()
    errors = errors_path(killed).read_text().replace("killed.csv", "whole.csv")
    assert errors == errors_path(whole).read_text()


def test_each_bad_input_gets_its_error_line(tiny_runs, study, tmp_path):
    root, csv, tree = study
    members, settings = _members(tiny_runs, False)
    out = tmp_path / "preds.csv"
    predict_study(root, csv, members, settings, out)
    errors = {e["seriesuid"]: e for e in read_errors(out) if e["seriesuid"] != tree.scans[0].uid}
    outside = [e for e in read_errors(out) if e["seriesuid"] == tree.scans[0].uid]
    assert len(outside) == 1 and "outside the scan" in outside[0]["error"] and outside[0]["rows"] == [7]
    assert errors[MISSING_UID]["scan"] is None and "no scan" in errors[MISSING_UID]["error"]
    assert BAD_UID in errors[BAD_UID]["scan"] and errors[BAD_UID]["rows"] == [9]
    assert len(read_errors(out)) == 3


def test_cli_study_and_output_policy(tiny_runs, study, tmp_path):
    from naslung.cli.app import app

    root, csv, _ = study
    out = tmp_path / "preds.csv"
    args = ["predict", "--model", str(tiny_runs["asoftmax"]), "--scans", str(root), "--candidates", str(csv),
            "--out", str(out), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output[result.output.index("{"):])["errors"] == 3
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and "--overwrite" in refused.output
    assert CliRunner().invoke(app, [*args, "--overwrite"]).exit_code == 0
    mixed = CliRunner().invoke(app, [*args, "--coords", "1,2,3"])
    assert mixed.exit_code == 2 and "--image only" in mixed.output
