"""Residual block (Fig. 2) and angular head, 2-D and 3-D."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from naslung.models.blocks import ResidualBlock
from naslung.models.heads import AngularHead


@pytest.mark.parametrize(
    ("cin", "cout", "stride", "dims", "size", "projection"),
    [
        (4, 4, 1, 3, 8, False),
        (4, 8, 1, 3, 8, True),
        (4, 4, 2, 3, 8, True),
        (8, 16, 2, 2, 16, True),
        (8, 8, 1, 2, 16, False),
    ],
)
def test_residual_block_shapes(cin: int, cout: int, stride: int, dims: int, size: int, projection: bool):
    block = ResidualBlock(cin, cout, spatial_dims=dims, stride=stride)
    out = block(torch.randn(2, cin, *([size] * dims)))
    assert out.shape == (2, cout, *([size // stride] * dims))
    assert (out >= 0).all()  # ReLU after the addition
    assert isinstance(block.shortcut, nn.Sequential) is projection
    conv_type = nn.Conv3d if dims == 3 else nn.Conv2d
    assert all(isinstance(m, conv_type) for m in block.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d)))


def test_identity_block_adds_its_input():
    block = ResidualBlock(4, 4, spatial_dims=2).eval()
    for conv in (block.conv1, block.conv2):
        nn.init.zeros_(conv.weight)
    x = torch.rand(1, 4, 8, 8)  # non-negative: relu(0 + x) == x
    assert torch.allclose(block(x), x)


def test_angular_head_gives_norm_times_cosine():
    torch.manual_seed(0)
    head = AngularHead(5, 3)
    assert [name for name, _ in head.named_parameters()] == ["weight"]  # no bias
    x = torch.randn(4, 5)
    cos = torch.nn.functional.cosine_similarity(x[:, None, :], head.weight[None, :, :], dim=2)
    assert torch.allclose(head(x), x.norm(dim=1, keepdim=True) * cos, atol=1e-6)
    assert torch.allclose(head.normalized_weight().norm(dim=1), torch.ones(3))
    # scaling a weight row does not change the logits
    with torch.no_grad():
        head.weight[1] *= 7.0
    assert torch.allclose(head(x), x.norm(dim=1, keepdim=True) * cos, atol=1e-5)
