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
    "attention, head, dims, size, kernel",
    [
        ("cbam", "angular", 3, 32, 7),
        ("cbam", "angular", 3, 32, 3),
        ("none", "linear", 3, 16, 7),
        ("cbam-spatial-first", "linear", 2, 32, 7),
        ("cbam-spatial-first", "linear", 2, 32, 3),
    ],
)
def test_analytic_equals_measured(
    spec: str, attention: str, head: str, dims: int, size: int, kernel: int
) -> None:
    model = build_model(spec, attention=attention, head=head, spatial_dims=dims, cbam_kernel=kernel)
    measured = profile(model, (1, 1, *([size] * dims)))
    cost = analytic_cost(
        spec, size=size, spatial_dims=dims, attention=attention, head=head, cbam_kernel=kernel
    )
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


def test_kernel_3_saves_the_spatial_conv_macs() -> None:
    # Model-1 at 32^3: the four 2->1 spatial convs run on 32^3, 16^3, 8^3 and 4^3 maps
    voxels = 32**3 + 16**3 + 8**3 + 4**3
    k7, k3 = analytic_cost("[4,4,[4,4],[4,8],[8,8]]"), analytic_cost("[4,4,[4,4],[4,8],[8,8]]", cbam_kernel=3)
    assert k7.macs - k3.macs == voxels * 2 * (7**3 - 3**3)
    assert k7.params - k3.params == 4 * 2 * (7**3 - 3**3)
    space = SearchSpace(channels=(4,), depth_range=(3, 3))
    assert space_costs(space, cbam_kernel=3)["macs"][0] == analytic_cost(space[0], cbam_kernel=3).macs


def test_space_costs_are_monotone_under_the_order() -> None:
    from naslung.search.order import below_mask

    space = SearchSpace(channels=(4, 8, 16, 32), depth_range=(3, 6))
    costs = space_costs(space)
    keys = space.order_keys()
    for beta in range(0, len(space), 7):
        below = below_mask(keys, beta)
        for name in ("macs", "activation_bytes", "params", "depth"):
            assert (costs[name][below] <= costs[name][beta]).all(), name
