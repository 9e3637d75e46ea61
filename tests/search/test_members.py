"""The members file carries each selected architecture's exact training configuration out of a search."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from naslung.cli.app import app
from naslung.search.members import read_members, write_members
from naslung.search.records import read_trials
from naslung.search.select import select_from_dir
from naslung.train.config import TrainConfig

TINY = ["--epochs", "1", "--channels", "4,8", "--max-depth", "4", "--latency-samples", "5",
        "--threads", "1", "--device", "cpu", "--seed", "3"]


@pytest.fixture(scope="module")
def search_dir(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("search") / "s"
    res = CliRunner().invoke(app, ["search", "--data", str(tiny_dataset), "--budget-trials", "3", "--out",
                                   str(out), *TINY, "--json"])
    assert res.exit_code == 0, res.output
    return out


def test_members_hold_the_search_training_settings(search_dir: Path) -> None:
    # One epoch on 40 blobs: candidates at the class prior; the selection floor is off (the wiring is tested).
    chosen = select_from_dir(search_dir, 2, min_auc=0, min_balanced_accuracy=0)
    path = write_members(search_dir, chosen, top=2, weight=0.02)
    members = read_members(path)
    assert members.exclude_folds == (1, 2, 3, 4, 5) and len(members.members) == 2
    assert members.dataset_fingerprint
    seeds = {r["spec"]: r["seed"] for r in read_trials(search_dir)}
    for member, record in zip(members.members, chosen, strict=True):
        # The TrainConfig defaults (the recipe of train/cv) with the search's options, split seed and
        # epoch-selection floor.
        want = TrainConfig(arch=record["spec"], seed=seeds[record["spec"]], epochs=1, device="cpu",
                           num_threads=1, split_seed=3, select_min_balanced_accuracy=0.6)
        assert member.config == want
        assert member.config.split_seed == 3 and member.config.epochs == 1
        assert member.record["spec"] == record["spec"]
    # A final budget replaces only the epochs.
    longer = read_members(write_members(search_dir, chosen, top=2, weight=0.02, epochs=7))
    assert [m.config for m in longer.members] == [m.config.replace(epochs=7) for m in members.members]


def test_members_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "members.json"
    bad.write_text(json.dumps({"schema": "other"}))
    with pytest.raises(ValueError, match="members.json"):
        read_members(bad)
    member = {"name": "m", "config": {"arch": "[4,4,[4],[4],[4]]", "bogus": 1}}
    bad.write_text(json.dumps({"schema": "naslung-members", "schema_version": 1, "members": [member]}))
    with pytest.raises(ValueError, match="member 1 is malformed"):
        read_members(tmp_path)


def test_cli_select_then_cv_members_then_ensemble(search_dir: Path, tiny_dataset: Path,
                                                  tmp_path: Path) -> None:
    runner = CliRunner()
    members_cv = ["cv", "--members", str(search_dir / "members.json"), "--data", str(tiny_dataset)]
    res = runner.invoke(app, ["search", "select", "--out", str(search_dir), "--top", "2", "--epochs", "2",
                              "--min-auc", "0", "--min-balanced-accuracy", "0"])
    assert res.exit_code == 0, res.output
    members = read_members(search_dir / "members.json")
    out = tmp_path / "members_cv"
    # A test fold the search trained on is refused before any training.
    res = runner.invoke(app, [*members_cv, "--folds", "0", "--out", str(out)])
    assert res.exit_code == 2 and "test fold 0" in res.output and not out.exists()
    # Training options other than the budget are refused: the members carry the search's settings.
    res = runner.invoke(app, [*members_cv, "--folds", "1", "--lr", "0.1", "--out", str(out)])
    assert res.exit_code == 2 and "--members" in res.output
    res = runner.invoke(app, [*members_cv, "--folds", "1", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    for member in members.members:
        saved = json.loads((out / member.name / "fold_1" / "config.json").read_text())["config"]
        assert TrainConfig.from_dict(saved) == member.config  # exactly the members file's settings
        assert member.config.epochs == 2
    res = runner.invoke(app, ["ensemble", "--members", str(search_dir / "members.json"), "--cv-dir", str(out),
                              "--json"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)[0]
    assert result["fold"] == 1 and len(result["runs"]) == 2


def test_real_data_search_is_not_labelled_phantom(tmp_path: Path) -> None:
    """prepare writes "phantom": null for real LUNA16 data; only an explicit phantom entry is phantom."""
    from naslung.cli.search import _data_note

    from .conftest import write_tiny_dataset

    real = write_tiny_dataset(tmp_path / "real.h5")
    import h5py

    with h5py.File(real, "a") as h5:
        h5.attrs["provenance"] = json.dumps({"source": "LUNA16", "phantom": None, "note": "not a phantom"})
    assert _data_note(real) == ""
    with h5py.File(real, "a") as h5:
        h5.attrs["provenance"] = json.dumps({"source": "phantom", "phantom": {"seed": 0, "version": 2}})
    assert "phantom" in _data_note(real)
