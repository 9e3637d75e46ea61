"""The budget table: the paper's numbers, the demo's defaults, overrides and refusals."""

from __future__ import annotations

import pytest

from naslung.models.spec import PAPER_CHANNELS, PAPER_DEPTH
from naslung.pipeline.budgets import BUDGETS, budget_for, parse_overrides
from naslung.pipeline.stages import search_config_for
from naslung.train.config import TrainConfig


def test_paper_budget_is_section_4_1_3():
    paper = BUDGETS["paper"]
    assert (paper.search_epochs, paper.members, paper.epochs, paper.ablation_archs) == (10, 9, 700, 5)
    assert (paper.search_channels, paper.search_depth) == (PAPER_CHANNELS, PAPER_DEPTH)
    assert paper.search_minutes == 480 and paper.search_trials is None
    # The members' training as run_members_cv resolves it: 700 epochs, A-Softmax, early stopping.
    member = TrainConfig.resolve(TrainConfig().to_dict(), paper.train_budget, epochs=paper.epochs)
    assert member.epochs == 700 and member.loss == "asoftmax" and member.patience == 100


def test_small_budget_is_the_demo_as_it_ran():
    small = BUDGETS["small"]
    assert (small.search_trials, small.search_epochs, small.members, small.epochs) == (6, 8, 3, 8)
    assert (small.search_channels, small.search_depth, small.latency_samples) == ((4, 8, 16, 32), (3, 6), 20)


@pytest.mark.parametrize("name", list(BUDGETS))
def test_search_config_follows_the_budget(tmp_path, name):
    budget = BUDGETS[name]
    config = search_config_for(budget, tmp_path / "d.h5", tmp_path / "s", seed=3,
                               exclude_folds=(1, 2, 3, 4, 5))
    assert (config.budget_trials, config.budget_minutes, config.patience) == (
        budget.search_trials, budget.search_minutes, budget.search_patience)
    assert config.seed == 3 and config.exclude_folds == (1, 2, 3, 4, 5)


def test_budgets_grow_from_small_to_paper():
    small, medium, paper = (BUDGETS[k] for k in ("small", "medium", "paper"))
    for field in ("search_epochs", "members", "epochs", "ablation_archs", "ablation_epochs"):
        assert getattr(small, field) <= getattr(medium, field) <= getattr(paper, field), field


def test_overrides_apply_and_are_recorded():
    budget = budget_for("paper", parse_overrides(["members=2", "search_minutes=null", "search_trials=3"]))
    assert (budget.members, budget.search_minutes, budget.search_trials) == (2, None, 3)
    assert budget.name == "paper" and budget.overrides == ("members", "search_minutes", "search_trials")
    assert budget.to_dict()["search_channels"] == list(PAPER_CHANNELS)


@pytest.mark.parametrize(("name", "overrides", "match"), [
    ("huge", {}, "unknown budget 'huge'; valid: small, medium, paper"),
    ("small", {"membres": 2}, r"unknown budget fields \['membres'\]; valid: .*members"),
    ("small", {"epochs": 0}, "epochs must be >= 1"),
    ("small", {"search_trials": None}, "the search needs a stop"),
    ("small", {"train_budget": "gpu"}, "unknown train_budget 'gpu'"),
])
def test_bad_budgets_are_refused(name, overrides, match):
    with pytest.raises(ValueError, match=match):
        budget_for(name, overrides)


@pytest.mark.parametrize("item", ["members", "members=two", "=3"])
def test_bad_overrides_are_refused(item):
    with pytest.raises(ValueError, match="--set"):
        parse_overrides([item])
