"""``relu(batch_norm(x))`` in training, on the fused CPU kernels of ``bn_relu_cpu.cpp``.

For the batch norms that train in a channels-last layout on CPU (3-D training) and are followed by a ReLU
(every conv-BN-ReLU of the network: the stems and each residual block's first conv), the pair runs as one
autograd node: two passes
forward (sums, then the normalised and rectified output) and two backward, where the batch norm and the ReLU
took seven or more one-op passes. It computes what ``F.batch_norm(training=True)`` then ``relu`` compute
(batch mean; biased variance to normalise, unbiased for the running variance), with sums in double. Tests:
``tests/models/test_fused_bn_relu.py`` (outputs, input/weight/bias gradients, running statistics against
float64).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from naslung.models.kernels import bn_relu_ops, runs_eagerly


class _BatchNormReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor, eps: float):  # type: ignore[override]
        y, mean, var, rstd = bn_relu_ops().forward(x, weight, bias, eps)
        ctx.save_for_backward(x, y, mean, rstd, weight)
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor, _grad_mean: Tensor, _grad_var: Tensor):  # type: ignore[override]
        from naslung.models.blocks.batchnorm import channels_last_format

        x, y, mean, rstd, weight = ctx.saved_tensors
        grad = grad.contiguous(memory_format=channels_last_format(x.dim()))
        dx, dw, db = bn_relu_ops().backward(grad, x, y, mean, rstd, weight)
        return dx, dw, db, None


#: Channel counts the kernel takes: its vectors are max(32, C) floats wide, a multiple of C.
CHANNELS = (1, 2, 4, 8, 16, 32, 64, 128)


def fused_applies(bn: nn.Module, x: Tensor) -> bool:
    """Whether :func:`bn_relu` runs the fused kernels: naslung's batch norm with ``fused`` on, training with
    a gradient, affine with tracked statistics, a float32 CPU input in a channels-last layout (and not also
    contiguous) with a channel count of :data:`CHANNELS` and a multiple of ``max(32, C)`` values; no hooks,
    not tracing or compiling; the kernels built.

    Unlike the Python channels-last path of :mod:`naslung.models.blocks.batchnorm` (below 8 channels only),
    the fused pair beats torch's kernel at 8-32 channels too: forward + backward of BN + ReLU, batch 32, one
    thread, ``channels_last_3d``: 8 channels at 16^3 2.64x, at 32^3 2.13x; 16 at 16^3 2.23x; 32 at 8^3 / 16^3
    1.41x / 1.85x; 4 channels at 32^3 4.25x against naslung's Python path.
    """
    from naslung.models.blocks.batchnorm import fast_path_applies

    return (bool(getattr(bn, "fused", False)) and torch.is_grad_enabled()
            and fast_path_applies(bn, x, max_channels=CHANNELS[-1]) and x.shape[1] in CHANNELS
            and x.numel() % max(32, x.shape[1]) == 0 and runs_eagerly(bn) and bn_relu_ops() is not None)


def bn_relu(bn: nn.Module, x: Tensor) -> Tensor:
    """``relu(bn(x))``: one fused autograd node when :func:`fused_applies`, else the batch norm's own forward
    then an in-place ReLU. ``(N, C, *S)`` in, the same shape and layout out."""
    if fused_applies(bn, x):
        from naslung.models.blocks.batchnorm import update_running_stats

        y, mean, var = _BatchNormReLU.apply(x, bn.weight, bn.bias, bn.eps)
        update_running_stats(bn, mean, var, x.numel() // x.shape[1])
        return y
    return F.relu(bn(x), inplace=True)
