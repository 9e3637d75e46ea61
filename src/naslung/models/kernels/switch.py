"""Turn the fused kernels on or off for one model (the benchmarks, the tests); ``NASLUNG_FUSED=0`` does it for
a whole process."""

from __future__ import annotations

from torch import nn


def set_fused_kernels(model: nn.Module, on: bool) -> list[bool]:
    """Let every CBAM (its spatial gate's FFT mix too), every naslung batch norm and every 3-D conv of
    ``model`` use the fused kernels where they apply (``on``), or keep them on torch's ops; returns the
    previous settings in module order."""
    from naslung.models.blocks.batchnorm import _FastTrainBatchNorm
    from naslung.models.blocks.cbam import CBAM, SpatialAttention
    from naslung.models.blocks.conv import Conv3d

    kinds = (CBAM, SpatialAttention, _FastTrainBatchNorm, Conv3d)
    blocks = [m for m in model.modules() if isinstance(m, kinds)]
    saved = [bool(getattr(m, "fused", False)) for m in blocks]
    for m in blocks:
        m.fused = bool(on)
    return saved
