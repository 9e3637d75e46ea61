"""naslung.train.ablation: variant configs, Tables 2-3 from the cv folders, resume, validation, report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

import naslung.train.engine as engine
from naslung.data.errors import DataError
from naslung.data.source import PHANTOM_NOTE
from naslung.train.ablation import (
    TABLE2,
    TABLE3,
    VARIANTS,
    arch_slug,
    cv_dir,
    parse_archs,
    plan,
    read_ablation,
    run_ablation,
    table_rows,
)
from naslung.train.config import TrainConfig
from naslung.train.cv import SUMMARY_METRICS

from .conftest import write_synthetic

ARCH = "[4,4,[4],[4],[8]]"
FOLDS = [0, 2]
DATA_KW = {"n": 80, "folds": 4, "seed": 4}


def _mark_phantom(path: Path) -> Path:
    """Record phantom provenance the way ``naslung data prepare`` does (a non-empty manifest)."""
    with h5py.File(path, "r+") as h5:
        h5.attrs["provenance"] = json.dumps({"source": "test", "phantom": {"seed": 0, "version": 1}})
    return path


@pytest.fixture(scope="module")
def ablation(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("ablation")
    data = _mark_phantom(write_synthetic(root / "data.h5", **DATA_KW))
    out = root / "exp" / "ablate"
    result = run_ablation(data, [ARCH], FOLDS, out, epochs=1, threads=1)
    return data, out, result


def test_variants_differ_from_the_default_only_in_attention_and_loss() -> None:
    configs = plan([ARCH, "[4,4,[4,4],[4,8],[8,8]]"], epochs=1, threads=1)
    assert len(configs) == 2 * len(VARIANTS)
    expected = {"base": ("none", "softmax", "linear"), "cbam": ("cbam", "softmax", "linear"),
                "asoftmax": ("none", "asoftmax", "angular"), "cbam-asoftmax": ("cbam", "asoftmax", "angular"),
                "spatial-first": ("cbam-spatial-first", "asoftmax", "angular")}
    for (name, arch), config in configs.items():
        assert (config.attention, config.loss, config.head) == expected[name]
        default = TrainConfig(arch=arch, epochs=1, num_threads=1)
        assert config == default.replace(attention=config.attention, loss=config.loss)
    assert [n for n, _ in TABLE2] == ["base", "cbam", "asoftmax", "cbam-asoftmax"]
    assert [n for n, _ in TABLE3] == ["cbam-asoftmax", "spatial-first"]
    assert {configs[(n, ARCH)].loss for n, _ in TABLE3} == {"asoftmax"}


def test_arch_names_are_canonical_and_one_to_one() -> None:
    assert parse_archs(["[4, 4, [4], [4], [8]]"]) == [ARCH]
    assert arch_slug("[4,4,[4,4],[4],[8]]") != arch_slug("[4,4,[4],[4,4],[8]]")
    with pytest.raises(ValueError, match="--archs"):
        parse_archs(["[4,4,[4]"])
    with pytest.raises(ValueError, match="given twice"):
        parse_archs([ARCH, "[4, 4, [4], [4], [8]]"])
    with pytest.raises(ValueError, match="--archs"):
        parse_archs([])


def test_tables_are_mean_and_std_of_the_fold_runs(ablation) -> None:
    _, out, result = ablation
    assert read_ablation(out) == json.loads(json.dumps(result))  # what was returned is what was written
    assert result["folds"] == FOLDS and result["archs"] == [ARCH] and result["phantom"] is True
    assert len(result["per_fold"]) == len(VARIANTS) * len(FOLDS)
    for summary in result["summary"]:
        name = summary["variant"]
        runs = [cv_dir(out, name, ARCH).run(f) for f in FOLDS]
        metrics = [r.read_result()["test_metrics"] for r in runs]
        configs = [r.read_result()["config"] for r in runs]
        assert {(c["attention"], c["loss"]) for c in configs} == {
            (v.attention, v.loss) for v in VARIANTS if v.name == name}
        for m in SUMMARY_METRICS:
            values = np.array([x[m] for x in metrics], dtype=float)
            assert summary[f"{m}_mean"] == pytest.approx(values.mean(), nan_ok=True)
            assert summary[f"{m}_std"] == pytest.approx(values.std(ddof=1), nan_ok=True)
        assert summary["folds"] == len(FOLDS) and summary["params"] > 0
    table2, table3 = table_rows(result, "table2"), table_rows(result, "table3")
    assert [r[0] for r in table2] == [label for _, label in TABLE2] + ["diameter baseline (same splits)"]
    assert [r[0] for r in table3] == ["channel-first", "spatial-first"]
    assert all(len(r) == len(table2[0]) for r in table2 + table3)
    base = next(s for s in result["summary"] if s["variant"] == "base")
    assert table2[0][1] == f"{100 * base['accuracy_mean']:.2f} ± {100 * base['accuracy_std']:.2f}"
    text = (out / "ablation.md").read_text(encoding="utf-8")
    assert PHANTOM_NOTE in text and "Table 2 analogue" in text and "Table 3 analogue" in text
    assert text.count("| channel-first |") == 1


def test_resume_reads_finished_folds_back(ablation, monkeypatch) -> None:
    data, out, result = ablation
    calls = []
    real = engine.train_epoch

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "train_epoch", counting)
    again = run_ablation(data, [ARCH], FOLDS, out, epochs=1, threads=1)
    assert calls == []
    assert json.dumps(again["summary"]) == json.dumps(result["summary"])
    # A killed ablate: one fold of one variant never finished; only that one trains again.
    shutil.rmtree(cv_dir(out, "cbam", ARCH).run(2).path)
    again = run_ablation(data, [ARCH], FOLDS, out, epochs=1, threads=1)
    assert len(calls) == 1  # one epoch of one fold
    assert _metrics(again["per_fold"]) == _metrics(result["per_fold"])  # deterministic on 1 thread


def _metrics(rows: list[dict]) -> str:
    return json.dumps([{k: v for k, v in r.items() if k != "seconds"} for r in rows])


def test_validation_happens_before_any_training(tmp_path, monkeypatch) -> None:
    def boom(*args, **kwargs):
        raise AssertionError("trained before validating")

    monkeypatch.setattr(engine, "train_epoch", boom)
    data = write_synthetic(tmp_path / "data.h5", **DATA_KW)
    with pytest.raises(ValueError, match="--folds: folds \\[7\\]"):
        run_ablation(data, [ARCH], [0, 7], tmp_path / "out", epochs=1)
    with pytest.raises(ValueError, match="--archs"):
        run_ablation(data, ["[4,4,[4],[4]"], [0], tmp_path / "out", epochs=1)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="--out"):
        run_ablation(data, [ARCH], [0], tmp_path / "file", epochs=1)
    with pytest.raises(DataError, match="--data"):
        run_ablation(tmp_path / "missing.h5", [ARCH], [0], tmp_path / "out", epochs=1)
    with pytest.raises(ValueError, match="--jobs"):
        run_ablation(data, [ARCH], [0], tmp_path / "out", jobs=0)
    one_class = tmp_path / "one.h5"
    write_synthetic(one_class, **DATA_KW)
    with h5py.File(one_class, "r+") as h5:
        labels, fold = h5["labels"][()], h5["fold"][()]
        labels[fold == 0] = 1
        h5["labels"][...] = labels
    with pytest.raises(ValueError, match="test fold 0 holds only class"):
        run_ablation(one_class, [ARCH], [0], tmp_path / "out", epochs=1)
    assert not (tmp_path / "out").exists()


def test_report_renders_the_ablation_tables(ablation, tmp_path) -> None:
    from naslung.report.build import build_report

    data, out, result = ablation
    summary = build_report(out.parent, tmp_path / "report.html", data, n_boot=100)
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert summary["phantom"] is True
    assert 'id=ablate' in html
    for key in ("table2", "table3"):
        assert f"id=table-ablation-{key}-0" in html
    assert "NAS+CBAM+A-Softmax" in html and "spatial-first" in html


def test_a_training_budget_reaches_every_variant() -> None:
    from naslung.train.ablation import plan
    from naslung.train.config import BUDGETS

    paper = plan(["[4,4,[4],[4],[8]]"], budget="paper")
    assert all(c.epochs == BUDGETS["paper"]["epochs"] and c.patience == BUDGETS["paper"]["patience"]
               for c in paper.values())
    shorter = plan(["[4,4,[4],[4],[8]]"], budget="paper", epochs=3)  # explicit epochs win, early stop stays
    assert all(c.epochs == 3 and c.patience == BUDGETS["paper"]["patience"] for c in shorter.values())
    assert all(c.patience is None for c in plan(["[4,4,[4],[4],[8]]"]).values())
