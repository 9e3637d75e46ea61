"""Building blocks of the NAS-Lung family: dims-generic layers, CBAM, residual blocks."""

from naslung.models.blocks.cbam import CBAM, ChannelAttention, SpatialAttention
from naslung.models.blocks.nd import batchnorm_nd, conv_nd
from naslung.models.blocks.residual import ConvBNReLU, ResidualBlock

__all__ = [
    "CBAM",
    "ChannelAttention",
    "ConvBNReLU",
    "ResidualBlock",
    "SpatialAttention",
    "batchnorm_nd",
    "conv_nd",
]
