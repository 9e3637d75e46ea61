"""SearchConfig: frozen, validated, nested; reads the old flat form; the CLI restates no default."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from naslung.cli.app import app
from naslung.search import records as rec
from naslung.search.config import ExecutorConfig, LatencyConfig, SearchConfig, SpaceConfig
from naslung.search.members import read_members, write_members
from naslung.search.objective import SyntheticEvaluator
from naslung.search.resume import saved_config
from naslung.search.runner import default_evaluator, run_search
from naslung.search.select import select_from_dir
from naslung.train.config import PAPER_RECIPE, TrainConfig
from naslung.train.splits import parse_folds

from .conftest import SMALL

#: The ``config`` of a search_config.json as naslung wrote it before the nested form (a real file; the
#: folder and dataset paths made relative).
OLD_FLAT = {
    "out": "runs/search", "data": "datasets/v2-seed0-3d-s32-m8.h5", "budget_trials": 8,
    "budget_minutes": None, "patience": None, "epochs": 10, "metric": "accuracy", "latency_budget_ms": None,
    "attention": "cbam", "loss": "asoftmax", "seed": 0, "exclude_folds": [1, 2, 3, 4, 5], "executor": "local",
    "concurrency": 1, "cpus_per_trial": 1.0, "gpus_per_trial": 0.0, "ray_address": None,
    "channels": [4, 8, 16], "depth_range": [3, 5], "batch_size": 32, "device": "cpu", "num_threads": 2,
    "latency_samples": 12, "latency_warmup": 3, "latency_repeats": 10, "latency_threads": 1,
    "latency_device": "cpu", "latency_kind": "linear",
}


def small(out: Path, **kw: Any) -> SearchConfig:
    return SearchConfig(out=str(out), space=SpaceConfig(**SMALL), latency=LatencyConfig(samples=6), **kw)


def test_configs_are_frozen() -> None:
    config = SearchConfig(out="s")
    for target, name in ((config, "budget_trials"), (config.space, "channels"), (config.latency, "samples"),
                         (config.executor, "name"), (config.train, "epochs")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(target, name, None)


def test_defaults_and_derived_training_fields() -> None:
    config = SearchConfig(out="s", seed=7, metric="f1")
    # The recipe is TrainConfig's, with the paper's 10 epochs per candidate.
    # Candidates keep their epoch by TrainConfig's select_metric (AUC), not by the objective metric, among
    # the epochs that reach search select's balanced-accuracy floor.
    assert config.train == TrainConfig(epochs=10, split_seed=7, select_min_balanced_accuracy=0.6)
    assert config.train.select_metric == "auc"
    assert config.exclude_folds == (1, 2, 3, 4, 5) and config.executor.concurrency == 1
    assert ExecutorConfig(name="ray").concurrency == 2
    member = config.candidate("[4,4,[8],[8],[16]]", 11)
    assert member == config.train.replace(arch="[4,4,[8],[8],[16]]", seed=11)
    assert member.split_seed == 7 and member.select_metric == "auc"


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        (lambda: SearchConfig(out="s", metric="recall"),
         "unknown metric 'recall'; valid: f1, accuracy, balanced_accuracy, auc"),
        (lambda: SearchConfig(out="s", exclude_folds=(3, 11)), r"exclude_folds \[11\] are outside"),
        (lambda: SearchConfig(out="s", budget_trials=0), "budget_trials must be >= 1"),
        (lambda: SearchConfig(out="s", patience=0), "patience must be >= 1"),
        (lambda: SearchConfig(out="s", budget_minutes=0), "budget_minutes must be positive"),
        (lambda: SearchConfig(out="s", latency_budget_ms=-1.0), "latency_budget_ms must be positive"),
        (lambda: SearchConfig(out=""), "output folder"),
        (lambda: SpaceConfig(depth_range=(2, 5)), "3 <= min <= max"),
        (lambda: SpaceConfig(depth_range=(6, 5)), "3 <= min <= max"),
        (lambda: SpaceConfig(channels=()), "positive widths"),
        (lambda: LatencyConfig(samples=3), "latency_samples must be >= 5"),
        (lambda: LatencyConfig(device="tpu"), "unknown latency_device 'tpu'; valid: auto, cpu, cuda"),
        (lambda: LatencyConfig(kind="cubic"), "unknown latency_kind"),
        (lambda: LatencyConfig(repeats=0), "latency_repeats must be >= 1"),
        (lambda: ExecutorConfig(name="dask"), "unknown executor 'dask'; valid: local, ray"),
        (lambda: ExecutorConfig(concurrency=0), "concurrency must be >= 1"),
        (lambda: ExecutorConfig(cpus_per_trial=0), "cpus_per_trial must be positive"),
        (lambda: SearchConfig.resolve(out="s", attention="se"), "unknown attention 'se'"),
        (lambda: SearchConfig.resolve(out="s", num_threads=0), "num_threads"),
        (lambda: SearchConfig.resolve(out="s", recipe="fast"), "unknown recipe 'fast'"),
        (lambda: SearchConfig.resolve(out="s", epoch=3), r"unknown search options \['epoch'\]"),
    ],
)
def test_bad_settings_raise_with_the_option_name(build: Any, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        build()


def test_a_section_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(TypeError, match="SearchConfig.space must be a SpaceConfig"):
        SearchConfig(out="s", space={"channels": (4, 8)})  # type: ignore[arg-type]


def test_old_flat_form_reads_into_the_nested_form() -> None:
    config = SearchConfig.from_dict(OLD_FLAT)
    assert (config.out, config.data, config.budget_trials, config.metric) == (
        "runs/search", "datasets/v2-seed0-3d-s32-m8.h5", 8, "accuracy")
    assert config.space == SpaceConfig(channels=(4, 8, 16), depth_range=(3, 5))
    # An old search timed the eager model (it predates the latency path).
    assert config.latency == LatencyConfig(samples=12, warmup=3, repeats=10, threads=1, device="cpu",
                                           path="eager")
    assert config.executor == ExecutorConfig(name="local", concurrency=1)
    # What the old search trained every candidate with: the TrainConfig defaults and these fields.
    assert config.train == TrainConfig(epochs=10, batch_size=32, device="cpu", num_threads=2,
                                       select_metric="accuracy", split_seed=0)
    # A flat form that says nothing of a setting keeps its default; None keeps meaning "no such stop".
    partial = SearchConfig.from_dict({"out": "s", "budget_trials": None, "epochs": 3})
    assert partial.budget_trials is None and partial.train.epochs == 3 and partial.space == SpaceConfig()


def test_nested_form_round_trips_through_json() -> None:
    config = SearchConfig(out="s", data="d.h5", train=TrainConfig(epochs=3, lr=5e-4, ema_decay=None),
                          space=SpaceConfig(**SMALL), latency=LatencyConfig(samples=8, kind="loglinear"),
                          executor=ExecutorConfig(name="ray", gpus_per_trial=0.5), budget_trials=None,
                          patience=4, latency_budget_ms=2.5, metric="f1", seed=3, exclude_folds=(5, 1))
    data = json.loads(json.dumps(config.to_dict()))
    assert set(data) >= {"train", "space", "latency", "executor"} and data["exclude_folds"] == [1, 5]
    assert SearchConfig.from_dict(data) == config
    old = SearchConfig.from_dict(OLD_FLAT)
    assert SearchConfig.from_dict(old.to_dict()) == old


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({**OLD_FLAT, "epoch": 3}, r"unknown search options \['epoch'\]"),
        ({"out": "s", "train": {}, "epochs": 3}, r"unknown search config keys \['epochs'\]"),
        ({"out": "s", "space": {"chanels": [4]}}, r"unknown space settings \['chanels'\]"),
        ({"out": "s", "train": {"lr2": 1}}, r"unknown TrainConfig fields \['lr2'\]"),
    ],
)
def test_from_dict_refuses_unknown_keys(data: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        SearchConfig.from_dict(data)


def test_resolve_reads_none_as_the_default() -> None:
    assert SearchConfig.resolve(out="s", epochs=None, metric=None, channels=None) == SearchConfig(out="s")
    config = SearchConfig.resolve(out="s", max_depth=5, recipe="paper", epochs=2, executor="ray")
    assert config.space.depth_range == (SpaceConfig().depth_range[0], 5)
    assert config.train == TrainConfig(**{**PAPER_RECIPE, "epochs": 2, "select_min_balanced_accuracy": 0.6})
    assert config.executor.name == "ray" and config.executor.concurrency == 2


def test_run_search_does_not_change_its_config(tmp_path: Path, tiny_dataset: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "d.h5").write_bytes(tiny_dataset.read_bytes())
    monkeypatch.chdir(tmp_path)
    config = small(Path("s"), data="d.h5", budget_trials=2)
    before = copy.deepcopy(config)
    result = run_search(config, SyntheticEvaluator())
    assert config == before and config.data == "d.h5"
    # The folder and the result record the resolved dataset path.
    assert result.config == config.replace(data=str(tmp_path / "d.h5"))
    assert rec.read_config(tmp_path / "s")["config"]["data"] == str(tmp_path / "d.h5")
    assert saved_config(tmp_path / "s") == result.config


def test_candidates_train_with_the_search_recipe(tiny_dataset: Path) -> None:
    config = SearchConfig(out="s", data=str(tiny_dataset), train=TrainConfig(epochs=2, lr=3e-4), seed=4)
    evaluator = default_evaluator(config)
    assert evaluator.train == config.train and evaluator.exclude_folds == config.exclude_folds
    # Candidates are timed on the serving path (BN folded) unless the config says otherwise.
    assert evaluator.latency == {"device": "cpu", "threads": 1, "warmup": 3, "repeats": 10, "path": "folded"}


def _to_old_flat(out: Path) -> None:
    """Rewrite a search folder's config in the flat form older naslung wrote."""
    saved = rec.read_config(out)
    nested = saved["config"]
    flat = {**{k: v for k, v in nested.items() if k not in ("train", "space", "latency", "executor")},
            **{k: nested["train"][k] for k in ("epochs", "attention", "loss", "batch_size", "device",
                                               "num_threads")},
            **nested["space"], **{f"latency_{k}": v for k, v in nested["latency"].items() if k != "path"},
            "executor": nested["executor"]["name"],
            **{k: v for k, v in nested["executor"].items() if k != "name"}}
    assert set(flat) == set(OLD_FLAT)
    rec.write_config(out, {**{k: v for k, v in saved.items() if k not in ("schema", "schema_version")},
                           "config": flat})


def test_resume_of_an_old_flat_folder_and_the_identity_rule(tmp_path: Path) -> None:
    out = tmp_path / "s"
    run_search(small(out, budget_trials=2), SyntheticEvaluator())
    _to_old_flat(out)
    # Budgets, the executor's resources, the device and threads may change on resume.
    # The old flat search kept each candidate's epoch by its objective (accuracy); resuming it needs that.
    old = {"select_metric": "accuracy"}
    resumed = small(out, budget_trials=3, train=TrainConfig(epochs=10, device="cpu", num_threads=1, **old),
                    executor=ExecutorConfig(cpus_per_trial=2.0))
    assert run_search(resumed, SyntheticEvaluator(), resume=True).new_trials == 1
    # The recipe may not: any TrainConfig field that changes the numbers is named.
    for train, named in ((TrainConfig(epochs=10, lr=1e-4, **old), "train.lr: 0.001 -> 0.0001"),
                         (TrainConfig(epochs=9, **old), "train.epochs: 10 -> 9"),
                         (TrainConfig(epochs=10), "train.select_metric: 'accuracy' -> 'auc'")):
        with pytest.raises(ValueError, match=f"changed settings \\({named}\\)"):
            run_search(small(out, budget_trials=4, train=train), SyntheticEvaluator(), resume=True)
    with pytest.raises(ValueError, match=r"space.channels"):
        narrower = SpaceConfig(channels=(4, 8), depth_range=(3, 6))
        run_search(small(out, budget_trials=4).replace(space=narrower), SyntheticEvaluator(), resume=True)


def test_members_of_an_old_flat_search(tmp_path: Path) -> None:
    out = tmp_path / "s"
    run_search(small(out, budget_trials=3, seed=2, train=TrainConfig(epochs=10, batch_size=16)),
               SyntheticEvaluator())
    _to_old_flat(out)
    members = read_members(write_members(out, select_from_dir(out, 2), top=2, weight=0.02))
    seeds = {r["spec"]: r["seed"] for r in rec.read_trials(out)}
    assert members.exclude_folds == (1, 2, 3, 4, 5)
    for member in members.members:
        spec = member.record["spec"]
        assert member.config == TrainConfig(arch=spec, seed=seeds[spec], epochs=10, batch_size=16,
                                            split_seed=2, select_metric="accuracy")


@pytest.mark.parametrize(
    ("text", "folds"),
    [("1-5", [1, 2, 3, 4, 5]), ("0,3", [0, 3]), ("1-3, 7", [1, 2, 3, 7]), ("9,0,0", [0, 9]), ("4-4", [4])],
)
def test_parse_folds(text: str, folds: list[int]) -> None:
    assert parse_folds(text) == folds == parse_folds(text, allow_empty=True)


@pytest.mark.parametrize("text", ["", "none", None, "a", "5-1", "1-", "1,,2", "10", "0-10", "-1"])
def test_parse_folds_refuses(text: str | None) -> None:
    with pytest.raises(ValueError, match="bad fold list"):
        parse_folds(text)


def test_parse_folds_empty_when_allowed() -> None:
    assert parse_folds("none", allow_empty=True) == parse_folds("", allow_empty=True) == []
    with pytest.raises(ValueError, match="outside the LUNA16 subsets"):
        parse_folds("3,12", allow_empty=True)


def test_cli_options_restate_no_default() -> None:
    from naslung.cli.search import search

    flags = {"ctx", "out", "resume", "as_json"}
    for name, param in inspect.signature(search).parameters.items():
        if name not in flags:
            assert param.default.default is None, f"--{name} restates a default"


def _cli_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *args: str) -> tuple[Any, SearchConfig]:
    import naslung.search.runner as runner

    seen: list[SearchConfig] = []

    def fake(config: SearchConfig, **_kw: Any) -> None:
        seen.append(config)
        raise ValueError("stopped by the test")

    monkeypatch.setattr(runner, "run_search", fake)
    out = str(tmp_path / "s")
    res = CliRunner().invoke(app, ["search", "--data", "d.h5", "--out", out, *args])
    return res, (seen[0] if seen else None)


def test_cli_unset_options_keep_the_dataclass_defaults(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    res, config = _cli_config(monkeypatch, tmp_path)
    assert res.exit_code == 2 and "stopped by the test" in res.output
    assert config == SearchConfig(out=str(tmp_path / "s"), data="d.h5")
    res, config = _cli_config(monkeypatch, tmp_path, "--epochs", "2", "--min-depth", "4", "--exclude-folds",
                              "none", "--threads", "1", "--executor", "ray", "--recipe", "paper")
    assert config == SearchConfig(out=str(tmp_path / "s"), data="d.h5", exclude_folds=(),
                                  train=TrainConfig(**{**PAPER_RECIPE, "epochs": 2, "num_threads": 1,
                                                                    "select_min_balanced_accuracy": 0.6}),
                                  space=SpaceConfig(depth_range=(4, SpaceConfig().depth_range[1])),
                                  executor=ExecutorConfig(name="ray"))


def test_cli_help_shows_the_dataclass_defaults() -> None:
    res = CliRunner().invoke(app, ["search", "--help"], env={**os.environ, "COLUMNS": "200"})
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    for fragment in (f"(default {SearchConfig(out='s').train.epochs})", "(default 1,2,3,4,5)",
                     f"(default {LatencyConfig().samples})", "(default 50)"):
        assert fragment in text, fragment


def test_cli_bad_option_names_the_valid_values(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    res, config = _cli_config(monkeypatch, tmp_path, "--attention", "se")
    assert res.exit_code == 2 and config is None
    assert "unknown attention 'se'; valid: cbam, cbam-spatial-first, none" in " ".join(res.output.split())
    res, config = _cli_config(monkeypatch, tmp_path, "--exclude-folds", "2-12")
    assert res.exit_code == 2 and "outside the LUNA16 subsets" in res.output


def test_search_config_schema_versions(tmp_path: Path) -> None:
    import json

    import naslung.search.records as rec

    written = rec.write_config(tmp_path, {"config": {}})
    assert json.loads(written.read_text())["schema_version"] == rec.CONFIG_SCHEMA_VERSION == 2
    for version in (1, 2):  # the flat form of older folders and the nested form both read
        written.write_text(json.dumps({"schema": rec.CONFIG_SCHEMA, "schema_version": version, "config": {}}))
        assert rec.read_config(tmp_path)["schema_version"] == version
    written.write_text(json.dumps({"schema": rec.CONFIG_SCHEMA, "schema_version": 3, "config": {}}))
    with pytest.raises(ValueError, match="newer than this naslung reads"):
        rec.read_config(tmp_path)
