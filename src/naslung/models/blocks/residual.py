"""Residual block of NAS-Lung Fig. 2, for 2-D and 3-D through one code path."""

from __future__ import annotations

from functools import cache

from torch import Tensor, nn

from naslung.models.blocks.counting import LayerCost, conv_cost, conv_side
from naslung.models.blocks.nd import batchnorm_nd, conv_nd
from naslung.models.kernels.bn_relu import bn_relu


class ConvBNReLU(nn.Sequential):
    """``k^d`` conv (no bias: BN follows) -> BN -> ReLU. ``(B, C_in, *S) -> (B, C_out, *S / stride)``."""

    def __init__(self, in_ch: int, out_ch: int, spatial_dims: int = 3, kernel_size: int = 3, stride: int = 1):
        super().__init__(
            conv_nd(spatial_dims)(
                in_ch, out_ch, kernel_size, stride=stride, padding=kernel_size // 2, bias=False
            ),
            batchnorm_nd(spatial_dims)(out_ch),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        conv, bn, _relu = self  # the ReLU runs in bn_relu (fused with the batch norm where it can be)
        return bn_relu(bn, conv(x))

    @staticmethod
    @cache  # pure, few distinct arguments: the search costs its whole space with it
    def closed_form(in_ch: int, out_ch: int, spatial_dims: int, side: int, kernel_size: int = 3,
                    stride: int = 1) -> LayerCost:
        """Cost of this block on a ``side^d`` input (see :mod:`naslung.models.blocks.counting`)."""
        return conv_cost(in_ch, out_ch, kernel_size, conv_side(side, stride), spatial_dims)


class ResidualBlock(nn.Module):
    """Two 3^d conv-BN(-ReLU) layers plus a shortcut: ``(B, C_in, *S) -> (B, C_out, *S / stride)``.

    Following the usual ResNet basic block, the second ReLU is applied after the addition
    ``relu(BN(conv(relu(BN(conv(x))))) + shortcut(x))``; the paper's "BN and ReLU after all convs"
    is read that way. When the channels or the resolution change, the shortcut is a strided 1^d
    conv + BN (Fig. 2, right); otherwise it is the identity. Convs carry no bias since BN follows.

    ``relu_out=False`` returns the sum itself, ``BN(conv(...)) + shortcut(x)``, which can be negative: the
    factory uses it for the network's last block when the embedding is ``"linear"`` (see
    :data:`naslung.models.factory.EMBEDDINGS`).
    """

    def __init__(self, in_ch: int, out_ch: int, spatial_dims: int = 3, stride: int = 1,
                 relu_out: bool = True) -> None:
        super().__init__()
        self.relu_out = relu_out
        conv, bn = conv_nd(spatial_dims), batchnorm_nd(spatial_dims)
        self.conv1 = conv(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = bn(out_ch)
        self.conv2 = conv(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = bn(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(conv(in_ch, out_ch, 1, stride=stride, bias=False), bn(out_ch))
        else:
            self.shortcut = nn.Identity()

    @staticmethod
    @cache  # pure, few distinct arguments: the search costs its whole space with it
    def closed_form(in_ch: int, out_ch: int, spatial_dims: int, side: int, stride: int = 1) -> LayerCost:
        """Cost of this block on a ``side^d`` input; its output side is ``conv_side(side, stride)``."""
        side_out = conv_side(side, stride)
        cost = conv_cost(in_ch, out_ch, 3, side_out, spatial_dims) + conv_cost(out_ch, out_ch, 3, side_out,
                                                                                spatial_dims)
        if stride != 1 or in_ch != out_ch:
            cost = cost + conv_cost(in_ch, out_ch, 1, side_out, spatial_dims)
        return cost

    def extra_repr(self) -> str:
        return "" if self.relu_out else "relu_out=False"

    def forward(self, x: Tensor) -> Tensor:
        out = bn_relu(self.bn1, self.conv1(x))
        out = self.bn2(self.conv2(out)) + self.shortcut(x)
        return self.relu(out) if self.relu_out else out
