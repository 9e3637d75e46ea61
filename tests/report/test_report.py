"""`naslung report`: one self-contained HTML page, checked by rendering it in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from naslung.data.source import PHANTOM_NOTE
from naslung.report.analysis import analyse
from naslung.report.build import build_report
from naslung.report.discover import discover


def test_analysis_pools_folds_and_refits_the_diameter_baseline(experiment):
    exp = discover(experiment)
    assert len(exp.runs) == 3 and len(exp.cv_dirs) == 1
    assert [f.path.name for f in exp.figures] == ["montage.png", "tsne.png"]  # not nodules/*.png
    entries, notes = analyse(exp, n_boot=100)
    assert notes == []
    names = [e.name for e in entries]
    assert names == ["members/run_asoftmax", "members/run_softmax", "cv_a", "majority vote, members (fold 0)",
                     "soft vote, members (fold 0)"]
    # The refitted baseline reproduces the baseline numbers naslung cv wrote.
    cv = next(e for e in entries if e.name == "cv_a")
    baselines = experiment / "cv_a" / "fold_0" / "baselines.json"
    saved = json.loads(baselines.read_text(encoding="utf-8"))["diameter"]
    assert cv.ref_stats["ci"]["accuracy"]["value"] == saved["test_metrics"]["accuracy"]
    soft = entries[-1]
    assert np.allclose(soft.p, (entries[0].p + entries[1].p) / 2)  # both members test the same nodules
    for e in entries:
        assert "vs_reference" in e.stats and e.stats["n"] == e.y.size


@pytest.mark.slow
def test_report_renders_in_chromium(experiment, render, tmp_path):
    from naslung.cli.app import app

    out = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["report", str(experiment), "--out", str(out), "--bootstrap", "200"])
    assert result.exit_code == 0, result.output
    text = out.read_text(encoding="utf-8")
    assert "src=\"http" not in text and "<link" not in text  # self-contained
    assert PHANTOM_NOTE not in text  # the test data is not the phantom
    dom = render(tmp_path, out.as_uri(), "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    for table_id in ("table-models", "table-paired", "table-cv-1", "table-dbi", "table-calibration",
                     "table-protocol", "table-provenance"):
        assert f'id="{table_id}"' in html, table_id
    images = re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]{200,}"', html)
    assert len(images) == 3  # reliability diagram, montage, t-SNE
    assert "diameter baseline, same nodules" in html
    shot = tmp_path / "report.png"
    r = render(tmp_path, out.as_uri(), f"--screenshot={shot}", "--window-size=1280,2000")
    assert r.returncode == 0 and shot.stat().st_size > 20_000


def test_phantom_runs_are_labelled(experiment, tmp_path):
    exp = tmp_path / "exp"
    shutil.copytree(experiment, exp)
    config = exp / "members" / "run_softmax" / "config.json"
    data = json.loads(config.read_text(encoding="utf-8"))
    # A run trained on phantom crops: the dataset's typed source kind, copied into config.json by training.
    data["dataset"]["source_kind"] = "phantom"
    data["dataset"]["provenance"] = {"phantom": {"seed": 0, "disclaimer": "synthetic CT"}}
    config.write_text(json.dumps(data))
    out = tmp_path / "phantom.html"
    summary = build_report(exp, out, n_boot=100)
    assert summary["phantom"] is True
    text = out.read_text(encoding="utf-8")
    assert text.count(PHANTOM_NOTE) == 2 and 'id=phantom-banner' in text


def test_report_errors(tmp_path):
    from naslung.cli.app import app

    empty = tmp_path / "empty"
    empty.mkdir()
    r = CliRunner().invoke(app, ["report", str(empty), "--out", str(tmp_path / "r.html")])
    assert r.exit_code != 0 and "no finished training run" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "r.html").exists()
