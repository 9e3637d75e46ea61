"""POP state: pruning rule, front, sampling, stopping; exactness under the partial-order assumption."""

from __future__ import annotations

import numpy as np
import pytest

from naslung.models.spec import ArchSpec
from naslung.search.costs import space_costs
from naslung.search.objective import SyntheticEvaluator
from naslung.search.order import below_mask
from naslung.search.pop import PopState, pareto_front, prune_mask
from naslung.search.space import SearchSpace


def brute_front(points: dict[int, tuple[float, float]]) -> set[int]:
    """Non-dominated points by pairwise comparison (score up, latency down)."""
    return {
        i
        for i, (s, t) in points.items()
        if not any(s2 >= s and t2 <= t and (s2 > s or t2 < t) for j, (s2, t2) in points.items() if j != i)
    }


def synthetic_truth(space: SearchSpace, noise: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    ev = SyntheticEvaluator(noise=noise, seed=3)
    acc = np.array([ev.accuracy(s) for s in space])
    costs = space_costs(space)
    lat = 0.5 + costs["macs"] / 2e8 + 0.05 * costs["depth"]
    return acc, lat


def run_to_end(
    space: SearchSpace,
    acc: np.ndarray,
    lat: np.ndarray,
    seed: int = 0,
    check: bool = False,
    true_front: set[int] | None = None,
) -> PopState:
    state = PopState(space, lat, seed=seed)
    while (i := state.suggest()) is not None:
        state.complete(i, float(acc[i]), float(lat[i]))
        if check:
            assert true_front is not None
            assert not state.pruned[list(true_front)].any(), "a true-front candidate was pruned"
    return state


def test_pareto_front_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        pts = {i: (float(rng.random()), float(rng.random())) for i in range(30)}
        front = pareto_front(pts)
        assert set(front) == brute_front(pts)
        assert [pts[i][1] for i in front] == sorted(pts[i][1] for i in front)


def test_prune_rule_on_a_hand_example() -> None:
    space = SearchSpace(channels=(4, 8), depth_range=(3, 3))
    p = ArchSpec.parse
    beta, gamma = space.index(p("[4,4,[8],[8],[8]]")), space.index(p("[4,4,[4],[4],[4]]"))
    lat = np.array([float(sum(s.block_widths)) for s in space])  # monotone latency
    # gamma is faster and at least as accurate as beta -> every alpha <= beta not faster than gamma goes.
    pruned = prune_mask(
        space.order_keys(), lat, {beta: 0.7, gamma: 0.8}, np.isin(np.arange(len(space)), [beta, gamma])
    )
    expected = below_mask(space.order_keys(), beta) & (lat >= lat[gamma])
    expected[[beta, gamma]] = False
    assert (pruned == expected).all() and pruned.sum() == len(space) - 2
    # if beta is the most accurate, its gamma is itself: nothing strictly faster is pruned
    pruned = prune_mask(
        space.order_keys(), lat, {beta: 0.9, gamma: 0.8}, np.isin(np.arange(len(space)), [beta, gamma])
    )
    assert not (pruned & (lat < lat[beta])).any()


def test_pruning_is_order_independent_and_monotone(small_space: SearchSpace) -> None:
    acc, lat = synthetic_truth(small_space, noise=0.02)
    rng = np.random.default_rng(1)
    trained = rng.choice(len(small_space), size=25, replace=False)
    results = []
    for order in (trained, trained[::-1], rng.permutation(trained)):
        state = PopState(small_space, lat)
        previous = state.pruned.copy()
        for i in order:
            state.running.add(int(i))
            state.complete(int(i), float(acc[i]), float(lat[i]))
            settled = state.pruned | state.done_mask()  # a pruned candidate may be trained here on purpose
            assert (settled >= previous).all()
            previous = settled
        results.append(state.pruned)
    scratch = prune_mask(
        small_space.order_keys(),
        lat,
        {int(i): float(acc[i]) for i in trained},
        np.isin(np.arange(len(small_space)), trained),
    )
    for r in results:
        assert (r == scratch).all()


def test_monotone_objective_pruning_never_removes_the_true_front(small_space: SearchSpace) -> None:
    acc, lat = synthetic_truth(small_space, noise=0.0)
    true_front = set(pareto_front({i: (float(acc[i]), float(lat[i])) for i in range(len(small_space))}))
    assert 3 <= len(true_front) < len(small_space) // 4
    for seed in (0, 1):
        state = run_to_end(small_space, acc, lat, seed=seed, check=True, true_front=true_front)
        # run to exhaustion, POP recovers the exact front of the whole space while training only part of it
        assert set(state.front) == true_front
        assert len(state.trained) < 0.6 * len(small_space)
        assert state.pruned.sum() + len(state.trained) == len(small_space)


def test_noisy_objective_front_equals_brute_force_over_trained(small_space: SearchSpace) -> None:
    acc, lat = synthetic_truth(small_space, noise=0.03)
    state = PopState(small_space, lat, seed=5)
    for _ in range(60):
        i = state.suggest()
        assert i is not None
        state.complete(i, float(acc[i]), float(lat[i]))
        pts = {j: (t.score, t.latency_ms) for j, t in state.trained.items()}
        assert set(state.front) == brute_front(pts)
        scratch = prune_mask(small_space.order_keys(), lat, state.scores(), state.done_mask())
        assert (state.pruned == scratch).all()  # incremental pruning == from scratch after every trial


def test_suggest_is_seeded_uniform_and_skips_running_and_out_of_budget(small_space: SearchSpace) -> None:
    _, lat = synthetic_truth(small_space)
    a, b = PopState(small_space, lat, seed=7), PopState(small_space, lat, seed=7)
    draws = [a.suggest() for _ in range(20)]
    assert draws == [b.suggest() for _ in range(20)]
    assert len(set(draws)) == 20 and a.running == set(draws)
    budget = float(np.quantile(lat, 0.2))
    c = PopState(small_space, lat, latency_budget_ms=budget, seed=1)
    picks = [c.suggest() for _ in range(50)]
    assert all(lat[i] <= budget for i in picks if i is not None)
    assert c.summary()["out_of_budget"] == int((lat > budget).sum())
    # roughly uniform: the first draws of many seeds cover the candidates evenly
    firsts = np.array([PopState(small_space, lat, seed=s).suggest() for s in range(2000)])
    assert np.histogram(firsts, bins=4, range=(0, len(small_space)))[0].min() > 350


def test_stop_reasons(small_space: SearchSpace) -> None:
    acc, lat = synthetic_truth(small_space)
    state = PopState(small_space, lat)
    assert state.stop_reason(budget_trials=2) is None
    for _ in range(2):
        i = state.suggest()
        state.complete(i, float(acc[i]), float(lat[i]))
    assert state.stop_reason(budget_trials=2) == "trial budget"
    state.since_front_change = 4
    assert state.stop_reason(patience=4).startswith("front unchanged")
    state.pruned[:] = True
    assert state.stop_reason() == "search space exhausted"


def test_failed_trials_are_not_retried_nor_pruning_sources(small_space: SearchSpace) -> None:
    _, lat = synthetic_truth(small_space)
    state = PopState(small_space, lat)
    i = state.suggest()
    state.complete(i, None, None)
    assert i in state.failed and i not in state.candidates() and not state.trained and not state.pruned.any()


def test_bad_latency_shape(small_space: SearchSpace) -> None:
    with pytest.raises(ValueError, match="one predicted latency per candidate"):
        PopState(small_space, np.ones(3))
