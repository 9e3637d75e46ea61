"""Analytic MACs / activation bytes / parameters equal the measured ones of the built models."""

from __future__ import annotations

import pytest

from naslung.models.cost import profile
from naslung.models.factory import build_model
from naslung.search.costs import analytic_cost, space_costs
from naslung.search.space import SearchSpace, paper_space

SPECS = [
    "[4,4,[4],[4],[4]]",
    "[4,4,[4,4],[4,8],[8,8]]",
    "[4,4,[8,16,16],[16,64],[64,128,128]]",
    "[4,4,[128,128,128,128,128],[128,128],[128,128]]",
]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize(
    "attention, head, dims, size",
    [("cbam", "angular", 3, 32), ("none", "linear", 3, 16), ("cbam-spatial-first", "linear", 2, 32)],
)
def test_analytic_equals_measured(spec: str, attention: str, head: str, dims: int, size: int) -> None:
    model = build_model(spec, attention=attention, head=head, spatial_dims=dims)
    measured = profile(model, (1, 1, *([size] * dims)))
    cost = analytic_cost(spec, size=size, spatial_dims=dims, attention=attention, head=head)
    assert (cost.macs, cost.activation_bytes, cost.params) == (
        measured["macs"],
        measured["activation_bytes"],
        measured["params"],
    )


def test_random_paper_specs_match() -> None:
    space = paper_space()
    for i in (11, 4242, 30000):
        model = build_model(space[i])
        measured = profile(model, (1, 1, 32, 32, 32))
        assert analytic_cost(space[i]).macs == measured["macs"]


def test_space_costs_are_monotone_under_the_order() -> None:
    from naslung.search.order import below_mask

    space = SearchSpace(channels=(4, 8, 16, 32), depth_range=(3, 6))
    costs = space_costs(space)
    keys = space.order_keys()
    for beta in range(0, len(space), 7):
        below = below_mask(keys, beta)
        for name in ("macs", "activation_bytes", "params", "depth"):
            assert (costs[name][below] <= costs[name][beta]).all(), name
