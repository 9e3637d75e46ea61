"""End-to-end local searches on the synthetic objective: records, resume, budgets, failures, selection."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from naslung.models.spec import ArchSpec
from naslung.search import records as rec
from naslung.search.config import LatencyConfig, SearchConfig, SpaceConfig
from naslung.search.driver import trial_seed
from naslung.search.objective import SyntheticEvaluator
from naslung.search.pop import pareto_front, prune_mask
from naslung.search.runner import run_search
from naslung.search.select import select_from_dir, select_members

from .conftest import SMALL


def config(out: Path, **kw: Any) -> SearchConfig:
    return SearchConfig(out=str(out), space=SpaceConfig(**SMALL), latency=LatencyConfig(samples=12), **kw)


def test_local_search_writes_every_output(tmp_path: Path) -> None:
    res = run_search(config(tmp_path, budget_trials=8), SyntheticEvaluator(noise=0.01))
    assert res.new_trials == 8 and res.stop_reason == "trial budget"
    for name in (rec.TRIALS, rec.CONFIG, rec.LATENCY_MODEL, rec.PARETO, rec.PLOT):
        assert (tmp_path / name).stat().st_size > 0
    records = rec.read_trials(tmp_path)
    assert [r["trial"] for r in records] == list(range(8))
    for r in records:
        assert tuple(r) == rec.TRIAL_KEYS and r["status"] == "ok" and r["executor"] == "local"
        assert r["seed"] == trial_seed(0, r["index"]) and r["latency_pred_ms"] > 0 and r["macs"] > 0
        assert ArchSpec.parse(r["spec"]) == res.state.space[r["index"]]
    pareto = json.loads((tmp_path / rec.PARETO).read_text())
    front = pareto_front({r["index"]: (r["score"], r["latency_ms"]) for r in records})
    assert [f["index"] for f in pareto["front"]] == front
    assert pareto["summary"]["trained"] == 8 and pareto["summary"]["space"] == 1049
    saved = rec.read_config(tmp_path)
    assert saved["config"]["exclude_folds"] == [1, 2, 3, 4, 5] and saved["space"]["size"] == 1049
    assert "mape" in saved["latency_model"]["metrics"]


def test_kill_then_resume_trains_only_the_missing_trials(tmp_path: Path) -> None:
    ev = SyntheticEvaluator(noise=0.02)
    run_search(config(tmp_path / "a", budget_trials=3), ev)
    # a kill during the 4th append leaves a torn line behind
    with open(tmp_path / "a" / rec.TRIALS, "a") as fh:
        fh.write('{"schema": "naslung-search-trial", "tri')
    res = run_search(config(tmp_path / "a", budget_trials=5), ev, resume=True)
    assert res.new_trials == 2 and len(rec.read_trials(tmp_path / "a")) == 5
    state = res.state
    scratch = prune_mask(state.keys, state.latency, state.scores(), state.done_mask())
    assert (state.pruned == scratch).all()
    # identical to an uninterrupted search with the same seed
    whole = run_search(config(tmp_path / "b", budget_trials=5), ev)
    assert [r["index"] for r in res.records] == [r["index"] for r in whole.records]
    assert (whole.state.pruned == state.pruned).all()
    # resuming a finished search trains nothing
    again = run_search(config(tmp_path / "a", budget_trials=5), ev, resume=True)
    assert again.new_trials == 0


def test_resume_guards(tmp_path: Path) -> None:
    ev = SyntheticEvaluator()
    run_search(config(tmp_path, budget_trials=2), ev)
    with pytest.raises(FileExistsError, match="--resume"):
        run_search(config(tmp_path, budget_trials=2), ev)
    with pytest.raises(ValueError, match="changed settings.*metric"):
        run_search(config(tmp_path, budget_trials=4, metric="f1"), ev, resume=True)


@dataclass
class Flaky(SyntheticEvaluator):
    fail_depth: int = 3
    fail_all: bool = False

    def __call__(self, spec: ArchSpec, seed: int) -> dict[str, Any]:
        if self.fail_all or spec.depth == self.fail_depth:
            raise RuntimeError(f"boom {spec}")
        return super().__call__(spec, seed)


def test_a_failing_trial_is_recorded_and_the_search_goes_on(tmp_path: Path) -> None:
    res = run_search(config(tmp_path, budget_trials=30), Flaky(fail_depth=5))
    failed = [r for r in res.records if r["status"] == "error"]
    assert failed and all("boom" in r["error"] and r["score"] is None for r in failed)
    # failed trials do not consume the trial budget
    assert len(res.state.trained) == 30 and len(res.records) == 30 + len(failed)


def test_a_broken_setup_stops_after_three_failures(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="first 3 trials all failed"):
        run_search(config(tmp_path, budget_trials=10), Flaky(fail_all=True))
    assert len(rec.read_trials(tmp_path)) == 3


def test_patience_time_and_latency_budgets(tmp_path: Path) -> None:
    res = run_search(config(tmp_path / "p", budget_trials=None, patience=3), SyntheticEvaluator(noise=0.01))
    assert res.stop_reason == "front unchanged for 3 trials"
    assert [r["front_changed"] for r in res.records][-3:] == [False, False, False]
    res = run_search(
        config(tmp_path / "t", budget_trials=None, budget_minutes=0.5 / 60), SyntheticEvaluator(sleep_s=0.2)
    )
    assert res.stop_reason == "time budget" and 1 <= res.new_trials <= 4
    first = run_search(config(tmp_path / "l0", budget_trials=1), SyntheticEvaluator())
    budget = float(np.quantile(first.state.latency, 0.1))
    res = run_search(config(tmp_path / "l", budget_trials=6, latency_budget_ms=budget), SyntheticEvaluator())
    assert all(r["latency_pred_ms"] <= budget for r in res.records)


def test_exhausting_a_tiny_space_recovers_its_true_front(tmp_path: Path) -> None:
    ev = SyntheticEvaluator()
    cfg = SearchConfig(out=str(tmp_path), space=SpaceConfig(channels=(4, 8, 16), depth_range=(3, 5)),
                       budget_trials=None, latency=LatencyConfig(samples=12))
    res = run_search(cfg, ev)
    assert res.stop_reason == "search space exhausted"
    space = res.state.space
    truth = pareto_front({i: (ev.accuracy(s), ev.latency_ms(s)) for i, s in enumerate(space)})
    assert res.state.front == truth and len(res.state.trained) < len(space)


def test_selection_rule(tmp_path: Path) -> None:
    run_search(config(tmp_path, budget_trials=15), SyntheticEvaluator(noise=0.02))
    records = rec.read_trials(tmp_path)
    chosen = select_from_dir(tmp_path, top=6)
    front = pareto_front({r["index"]: (r["score"], r["latency_ms"]) for r in records})
    n_front = min(len(front), 6)
    assert [c["on_front"] for c in chosen] == [True] * n_front + [False] * (len(chosen) - n_front)
    scores = [c["score"] for c in chosen[:n_front]]
    assert scores == sorted(scores, reverse=True)
    rest = [c["tradeoff"] for c in chosen[n_front:]]
    assert rest == sorted(rest, reverse=True)
    assert len(select_members(records, top=100)) == len(records)
    with pytest.raises(ValueError, match="--top"):
        select_members(records, top=0)
    with pytest.raises(FileNotFoundError):
        select_from_dir(tmp_path / "nothing", top=3)
