"""Bundled models: the registry, a tiny bundle built from synthetic crops into a temporary models root, its
card and checksum, `naslung models list/show`, `--model NAME` prediction, and docs/models.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from naslung.cli.app import app
from naslung.train.config import DEFAULT_ARCHS
from naslung.zoo.registry import MODELS_ENV, RECIPES, is_built, model_dir, read_card, recipe

DOCS = Path(__file__).resolve().parents[2] / "docs" / "models.md"


def test_unbuilt_names_are_listed_not_loaded(tmp_path, monkeypatch):
    from naslung.serving.bundled import load_bundled

    monkeypatch.setenv(MODELS_ENV, str(tmp_path))
    result = CliRunner().invoke(app, ["models", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["name"] for r in rows] == list(RECIPES) and not any(r["built"] for r in rows)
    assert rows[0]["archs"] == [DEFAULT_ARCHS[3]]
    assert rows[1]["archs"] == ["[8,8,[8,8],[16,16],[32,32]]"]
    shown = CliRunner().invoke(app, ["models", "show", "voi2d-ensemble"])
    assert shown.exit_code == 0 and "not built" in shown.output and "--members" in shown.output
    with pytest.raises(FileNotFoundError, match="not built"):
        load_bundled("voi3d-default")
    bad = CliRunner().invoke(app, ["models", "show", "nope"])
    assert bad.exit_code == 2 and "known:" in bad.output


def test_card_checksum_and_text(bundle, monkeypatch):
    from naslung.serving.bundled import sha256_file

    root = bundle["root"]
    card = read_card("voi3d-default", root)
    assert is_built("voi3d-default", root) and card == bundle["report"].card
    (member,) = card["members"]
    assert sha256_file(model_dir("voi3d-default", root) / member["weights"]) == member["sha256"]
    assert card["data"]["n_nodules"] == 64 and card["training"]["test_fold"] is None
    assert card["metrics"]["folds"] == [1, 2] and "diameter" in card["metrics"]["summary"]
    monkeypatch.setenv(MODELS_ENV, str(root))
    text = CliRunner().invoke(app, ["models", "show", "voi3d-default"]).output
    for needle in ("trained on every fold", "CC BY 3.0", "diameter baseline", member["sha256"], " ± ",
                   "Research use only", "9 mm", "naslung models build test"):
        assert needle in text
    rows = json.loads(CliRunner().invoke(app, ["models", "list", "--json"]).output)
    assert rows[0]["built"] and rows[0]["params"] == member["params"] and rows[0]["cv"]["auc"] is not None


def test_rebuild_refused_without_overwrite_and_deterministic(bundle):
    from naslung.outputs import OutputRefusedError
    from naslung.zoo.build import build_bundle

    rec = recipe("voi3d-default")
    kw = {"command": "naslung models build test", "prepare_command": "p", "root": bundle["root"]}
    with pytest.raises(OutputRefusedError, match="--overwrite"):
        build_bundle(rec, bundle["dataset"], [(rec.name, bundle["config"])], **kw)
    again = build_bundle(rec, bundle["dataset"], [(rec.name, bundle["config"])], check=True, retrain=True,
                         **kw)
    assert again.folder is None and again.previous and again.differences() == {}
    assert again.card["sha256"] == bundle["report"].card["sha256"]


def test_cv_of_another_recipe_is_refused(bundle):
    from naslung.zoo.build import cv_metrics

    other = bundle["config"].replace(lr=1e-4)
    with pytest.raises(ValueError, match="another recipe"):
        cv_metrics(recipe("voi3d-default"), bundle["cv"], [("voi3d-default", other)], None)


def test_model_name_predicts_as_the_run_folder(bundle, luna, monkeypatch):
    from naslung.fingerprint import fingerprint_of
    from naslung.serving.predict import load_members, predict_nodules, resolve_settings
    from naslung.serving.runs import load_run_model
    from naslung.zoo.build import _work_dir

    tree, _ = luna
    monkeypatch.setenv(MODELS_ENV, str(bundle["root"]))
    bundled = load_members("voi3d-default")
    run = load_run_model(_work_dir("voi3d-default", "voi3d-default", bundle["config"],
                                   fingerprint_of(bundle["dataset"])))
    settings, notes = resolve_settings(bundled)
    assert notes == [] and settings.size == bundle["dataset"].size
    scan = tree.root / f"subset{tree.scans[0].subset}" / f"{tree.scans[0].uid}.mhd"
    world = tree.scans[0].spheres[0].center
    a = predict_nodules(scan, [("n", world)], bundled, settings, attention=False)[0]
    b = predict_nodules(scan, [("n", world)], [run], settings, attention=False)[0]
    assert a.members[0]["prob_malignant"] == b.members[0]["prob_malignant"]
    assert a.members[0]["run"] == "voi3d-default"


def test_export_by_name(bundle, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv(MODELS_ENV, str(bundle["root"]))
    result = CliRunner().invoke(app, ["export", "voi3d-default", "--onnx", str(tmp_path / "m.onnx"),
                                      "--size", "16"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.onnx").is_file()


def test_docs_page_is_the_generated_cards(monkeypatch):
    from naslung.zoo.card import render_all

    monkeypatch.delenv(MODELS_ENV, raising=False)
    assert DOCS.read_text(encoding="utf-8") == render_all(), \
        "docs/models.md is stale: naslung models docs --out docs/models.md"
