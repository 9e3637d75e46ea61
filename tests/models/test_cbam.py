"""CBAM (eq. 1-3) against a hand-written reference, both orders, 2-D and 3-D."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from naslung.models import capture_attention
from naslung.models.blocks import CBAM
from naslung.models.blocks.cbam import spatial_max


def _reference(block: CBAM, x: torch.Tensor, order: str) -> torch.Tensor:
    """Eq. 1-3 spelled out with explicit pooling layers and weight matrices."""
    lin1, lin2 = block.channel.mlp[0], block.channel.mlp[2]
    conv = block.spatial.conv
    dims = x.dim() - 2
    pool_avg = F.adaptive_avg_pool3d if dims == 3 else F.adaptive_avg_pool2d
    pool_max = F.adaptive_max_pool3d if dims == 3 else F.adaptive_max_pool2d
    conv_fn = F.conv3d if dims == 3 else F.conv2d

    def mlp(v: torch.Tensor) -> torch.Tensor:
        h = torch.relu(v @ lin1.weight.t() + lin1.bias)
        return h @ lin2.weight.t() + lin2.bias

    def m_c(f: torch.Tensor) -> torch.Tensor:  # eq. 2
        avg = pool_avg(f, 1).flatten(1)
        mx = pool_max(f, 1).flatten(1)
        return torch.sigmoid(mlp(avg) + mlp(mx)).view(*f.shape[:2], *([1] * dims))

    def m_s(f: torch.Tensor) -> torch.Tensor:  # eq. 3
        desc = torch.stack([f.mean(1), f.max(1).values], dim=1)
        return torch.sigmoid(conv_fn(desc, conv.weight, conv.bias, padding=conv.padding))

    if order == "channel-first":  # eq. 1
        f1 = m_c(x) * x
        return m_s(f1) * f1
    f1 = m_s(x) * x
    return m_c(f1) * f1


@pytest.mark.parametrize("order", ["channel-first", "spatial-first"])
@pytest.mark.parametrize("dims", [2, 3])
def test_cbam_matches_reference(order: str, dims: int):
    torch.manual_seed(0)
    block = CBAM(8, spatial_dims=dims, order=order)
    x = torch.randn(2, 8, *([6] * dims))
    with capture_attention(block) as captured:
        out = block(x)
    assert out.shape == x.shape
    assert torch.allclose(out, _reference(block, x, order), atol=1e-6)
    (maps,) = captured.values()
    assert maps["channel"].shape == (2, 8)
    assert maps["spatial"].shape == (2, 1, *([6] * dims))
    assert ((maps["spatial"] > 0) & (maps["spatial"] < 1)).all()
    # the gates' outputs are the maps; CBAM itself keeps nothing between forwards
    assert torch.equal(maps["channel"], block.channel(x)) or order == "spatial-first"
    assert not block._forward_hooks and not block.channel._forward_hooks and not block.spatial._forward_hooks
    assert set(vars(block)) == set(vars(CBAM(8, spatial_dims=dims, order=order)))


@pytest.mark.parametrize("kernel", [3, 7])
@pytest.mark.parametrize("dims", [2, 3])
def test_spatial_kernel_option(kernel: int, dims: int):
    torch.manual_seed(0)
    block = CBAM(4, spatial_dims=dims, spatial_kernel=kernel)
    assert block.spatial.conv.kernel_size == (kernel,) * dims
    x = torch.randn(2, 4, *([8] * dims))
    assert torch.allclose(block(x), _reference(block, x, "channel-first"), atol=1e-6)


def test_orders_differ_and_hidden_width_floor():
    torch.manual_seed(1)
    a = CBAM(4, order="channel-first")
    b = CBAM(4, order="spatial-first")
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 4, 5, 5, 5)
    assert not torch.allclose(a(x), b(x))
    assert a.channel.mlp[0].out_features == 1  # 4 // 4
    assert CBAM(2).channel.mlp[0].out_features == 1  # floor of one hidden unit
    assert CBAM(64).channel.mlp[0].out_features == 16


def test_cbam_bad_arguments():
    with pytest.raises(ValueError, match="channel-first, spatial-first"):
        CBAM(4, order="both")
    with pytest.raises(ValueError, match="spatial_dims"):
        CBAM(4, spatial_dims=1)
    with pytest.raises(ValueError, match="odd"):
        CBAM(4, spatial_kernel=4)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("channels_last", [False, True])
def test_spatial_max_is_the_channel_maps_maximum_with_max_pooling_gradients(dims: int, channels_last: bool):
    torch.manual_seed(dims)
    x = torch.randn(3, 5, *([6] * dims), dtype=torch.float64)
    x[1, 2] = 0.0  # an all-zero map: every position ties
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last if dims == 2 else torch.channels_last_3d)
    x.requires_grad_(True)
    out = spatial_max(x)
    assert torch.equal(out, x.amax(dim=tuple(range(2, x.dim()))))
    grad = torch.randn(3, 5, dtype=torch.float64)
    (got,) = torch.autograd.grad(out, x, grad)
    (want,) = torch.autograd.grad(x.amax(dim=tuple(range(2, x.dim()))), x, grad)
    untied = torch.ones(3, 5, dtype=torch.bool)
    untied[1, 2] = False
    assert torch.equal(got[untied], want[untied])  # one maximum per map: the same gradient
    tied = got[1, 2].flatten()  # max pooling sends it to one position; amax would share it
    assert int((tied != 0).sum()) == 1 and float(tied.sum()) == pytest.approx(float(grad[1, 2]))
