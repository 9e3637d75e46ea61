"""One code path for 2-D and 3-D: pick the conv / batch-norm class by ``spatial_dims``."""

from __future__ import annotations

from torch import nn

from naslung.models.blocks.batchnorm import BatchNorm2d, BatchNorm3d
from naslung.models.blocks.conv import Conv3d

#: ``nn.Conv2d``, and ``nn.Conv3d`` with oneDNN for one-sample CPU inputs (:mod:`.conv`).
_CONV: dict[int, type[nn.Module]] = {2: nn.Conv2d, 3: Conv3d}
#: ``nn.BatchNorm{2,3}d`` with a faster channels-last CPU training path (:mod:`.batchnorm`).
_BN: dict[int, type[nn.Module]] = {2: BatchNorm2d, 3: BatchNorm3d}


def check_dims(spatial_dims: int) -> int:
    """Return ``spatial_dims`` if it is 2 or 3, else raise ``ValueError``."""
    if spatial_dims not in _CONV:
        raise ValueError(f"spatial_dims must be one of {sorted(_CONV)}, got {spatial_dims!r}")
    return int(spatial_dims)


def conv_nd(spatial_dims: int) -> type[nn.Module]:
    """``nn.Conv2d`` or :class:`~naslung.models.blocks.conv.Conv3d` (an ``nn.Conv3d``)."""
    return _CONV[check_dims(spatial_dims)]


def batchnorm_nd(spatial_dims: int) -> type[nn.Module]:
    """:class:`~naslung.models.blocks.batchnorm.BatchNorm2d` or ``BatchNorm3d`` (``nn.BatchNorm{2,3}d``)."""
    return _BN[check_dims(spatial_dims)]
