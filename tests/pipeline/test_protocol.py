"""Neither demo nor reproduce lets the search see a test fold; a forced leak is refused before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from naslung.cli.app import app
from naslung.pipeline.budgets import BUDGETS, budget_for
from naslung.protocol import ProtocolError


class _StopError(Exception):
    """Raised by the stand-in search once it has seen its configuration."""


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list:
    """Replace the search with one that records its configuration and stops the pipeline."""
    import naslung.search.runner as runner

    seen: list = []

    def fake_run_search(config, *args, **kwargs):
        seen.append(config)
        raise _StopError

    monkeypatch.setattr(runner, "run_search", fake_run_search)
    return seen


@pytest.mark.parametrize("budget", list(BUDGETS))
@pytest.mark.parametrize("folds", [(1, 2, 3, 4, 5), (2,), (1, 5)])
def test_reproduce_search_excludes_every_test_fold(phantom_like, tmp_path, captured, budget, folds):
    from naslung.pipeline.reproduce import ReproduceConfig, run_reproduce

    config = ReproduceConfig(data=str(phantom_like), out=str(tmp_path / "out"), budget=budget_for(budget),
                             folds=folds, device="cpu")
    with pytest.raises(_StopError):
        run_reproduce(config, log=lambda _msg: None)
    (search,) = captured
    assert set(search.exclude_folds) >= set(folds)
    assert set(search.exclude_folds) == {1, 2, 3, 4, 5}
    assert Path(search.out) == tmp_path / "out" / "search"


@pytest.mark.parametrize("test_fold", [1, 2, 3, 4, 5])
def test_demo_search_excludes_its_test_fold(phantom_like, tmp_path, captured, monkeypatch, test_fold):
    import naslung.data.phantom as phantom
    import naslung.pipeline.demo as demo

    monkeypatch.setattr(phantom, "ensure_phantom", lambda **kwargs: tmp_path / "phantom")
    monkeypatch.setattr(demo, "ensure_dataset", lambda *args, **kwargs: phantom_like)
    config = demo.DemoConfig(out=str(tmp_path / "demo"), test_fold=test_fold)
    with pytest.raises(_StopError):
        demo.run_demo(config, log=lambda _msg: None)
    (search,) = captured
    assert test_fold in search.exclude_folds and set(search.exclude_folds) == {1, 2, 3, 4, 5}


@pytest.mark.parametrize("kwargs", [
    {"folds": (0, 1)},                                  # fold 0 is a development fold
    {"folds": (1, 2, 3), "exclude_folds": (1, 2)},       # the search would see fold 3
    {"folds": (7,), "exclude_folds": ()},                # a search over every fold
])
def test_reproduce_refuses_a_leak_before_any_work(phantom_like, tmp_path, kwargs):
    from naslung.pipeline.reproduce import ReproduceConfig

    out = tmp_path / "out"
    with pytest.raises(ProtocolError, match="leak"):
        ReproduceConfig(data=str(phantom_like), out=str(out), **kwargs)
    assert not out.exists()


def test_reproduce_refuses_an_existing_search_that_saw_a_test_fold(phantom_like, tmp_path, captured):
    from naslung.pipeline.reproduce import ReproduceConfig, run_reproduce
    from naslung.search.records import write_config

    out = tmp_path / "out"
    write_config(out / "search", {"config": {"exclude_folds": [1]}})
    with pytest.raises(ProtocolError, match="fold 2"):
        run_reproduce(ReproduceConfig(data=str(phantom_like), out=str(out), folds=(1, 2)),
                      log=lambda _m: None)
    assert not captured and not (out / "reproduce.json").exists()


def test_reproduce_cli_refuses_a_leak_with_one_line(phantom_like, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["reproduce", "--data", str(phantom_like), "--out", str(out),
                                      "--folds", "0-1"])
    assert result.exit_code == 2
    assert "leak" in result.output and "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.parametrize("kwargs", [{"test_fold": 0}, {"test_fold": 1, "search_exclude_folds": (2, 3)}])
def test_demo_refuses_a_leak_before_any_work(tmp_path, kwargs):
    from naslung.pipeline.demo import DemoConfig

    with pytest.raises(ProtocolError, match="leak"):
        DemoConfig(out=str(tmp_path / "demo"), **kwargs)
    assert not (tmp_path / "demo").exists()


def test_demo_cli_refuses_a_leak_before_the_phantom(tmp_path, monkeypatch):
    import naslung.data.phantom as phantom

    def no_phantom(**kwargs):
        raise AssertionError("the phantom was built for a refused demo")

    monkeypatch.setattr(phantom, "ensure_phantom", no_phantom)
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--test-fold", "0"])
    assert result.exit_code == 2 and "leak" in result.output
    assert not (tmp_path / "demo").exists()
