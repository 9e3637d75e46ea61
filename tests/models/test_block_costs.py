"""Each block's closed-form cost equals what a forward pass of that block alone measures."""

from __future__ import annotations

import pytest

from naslung.models.blocks.cbam import CBAM
from naslung.models.blocks.counting import LayerCost
from naslung.models.blocks.residual import ConvBNReLU, ResidualBlock
from naslung.models.cost import analytic_cost, profile
from naslung.models.factory import build_model, layer_plan
from naslung.models.heads.angular import AngularHead


def _measured(module, shape) -> LayerCost:
    got = profile(module, shape)
    return LayerCost(got["macs"], got["activation_bytes"] // 4, got["params"])


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize(("cin", "cout", "stride"), [(4, 4, 1), (4, 8, 1), (8, 16, 2), (3, 5, 2)])
def test_residual_and_conv_blocks(dims: int, cin: int, cout: int, stride: int) -> None:
    side = 9  # odd: the stride-2 side is a ceiling
    shape = (1, cin, *([side] * dims))
    block = ResidualBlock(cin, cout, dims, stride=stride)
    assert ResidualBlock.closed_form(cin, cout, dims, side, stride) == _measured(block, shape)
    conv = ConvBNReLU(cin, cout, dims, stride=stride)
    assert ConvBNReLU.closed_form(cin, cout, dims, side, stride=stride) == _measured(conv, shape)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize(("channels", "kernel"), [(4, 7), (16, 3), (1, 7)])
def test_cbam(dims: int, channels: int, kernel: int) -> None:
    shape = (1, channels, *([8] * dims))
    block = CBAM(channels, dims, spatial_kernel=kernel)
    assert CBAM.closed_form(channels, dims, 8, spatial_kernel=kernel) == _measured(block, shape)


def test_head() -> None:
    assert AngularHead.closed_form(16, 2) == _measured(AngularHead(16, 2), (1, 16))


@pytest.mark.parametrize("attention", ["cbam", "none"])
def test_the_plan_is_what_the_factory_builds(attention: str) -> None:
    spec = "[4,4,[4,4],[4,8],[8,8]]"
    plan = layer_plan(spec, attention=attention)
    model = build_model(spec, attention=attention)
    built = [m for stage in model.stages.values() for m in stage]
    assert len(built) == len(plan)
    kinds = {"conv": ConvBNReLU, "residual": ResidualBlock, "cbam": CBAM}
    assert all(isinstance(m, kinds[layer.kind]) for m, layer in zip(built, plan, strict=True))
    cost = analytic_cost(spec, attention=attention)
    assert cost.macs == profile(model, (1, 1, 32, 32, 32))["macs"]
