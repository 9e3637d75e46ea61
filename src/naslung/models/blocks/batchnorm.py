"""Batch norm for channels-last training on CPU: the same layer, about 3x faster and more accurate there.

naslung trains 3-D networks in ``channels_last_3d`` on CPU (the convs are 2-3x faster in it). torch's CPU
batch-norm kernel is poor in that layout when the channels are few: memory then holds ``(N*D*H*W, C)`` rows of
only 4-8 values, and its per-channel loops neither vectorise nor sum accurately. Forward + backward of
``BatchNorm3d(4)`` + ReLU on a ``(32, 4, 32, 32, 32)`` batch took 36 ms in ``channels_last_3d`` against 12 ms
contiguous (one thread, this project's 2-core CPU VM), and its outputs and gradients were off by about 2e-4
relative (a float32 running sum over a million values; contiguous: 1e-7).

:class:`BatchNorm2d` / :class:`BatchNorm3d` are ``nn.BatchNorm{2,3}d`` (same parameters, buffers, state
dict, eval behaviour and BN folding) whose training forward, for a float32 CPU input of fewer than 8
channels in a channels-last layout, runs :class:`_ChannelsLastBatchNorm` instead. The input's memory is read
as a ``(R, k*C)`` matrix (``k`` neighbouring positions per row, so rows are about 64 floats wide);
per-channel sums are column sums (torch's reductions sum pairwise) folded ``k`` times; every elementwise
pass broadcasts a ``k*C`` vector along rows, which vectorises. It computes what
``F.batch_norm(training=True)`` computes (batch mean; biased variance to normalise, unbiased for the running
variance; Ioffe & Szegedy 2015), with a hand-written backward. Tests: outputs, input/weight/bias gradients
and running statistics against float64 (``tests/models/test_batchnorm.py``). Every other case (contiguous
input, eval, 8 or more channels, other dtypes or devices) is ``nn.BatchNorm``'s own forward.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

#: Target row width, in floats, of the matrix view (one AVX-512 register holds 16).
ROW_WIDTH = 64
#: The path runs below 8 channels. Forward + backward + ReLU, batch 32, one thread, against torch's kernel in
#: ``channels_last_3d``: 2 channels at 32^3 4.96x, 4 at 32^3 / 16^3 / 8^3 3.06x / 2.95x / 1.70x, 6 at 16^3
#: 2.00x; 8 channels 0.72-1.07x, 16-128 channels 0.54-0.59x (torch's kernel vectorises over channels there).
MAX_CHANNELS = 7


def _fold(count: int, channels: int) -> int:
    """Positions per row: the largest power of two ``k <= ROW_WIDTH / C`` that divides ``count`` (or 1)."""
    k = 1
    while 2 * k * channels <= ROW_WIDTH and count % (2 * k) == 0:
        k *= 2
    return k


def _matrix(x: Tensor, k: int) -> Tensor:
    """``(N, C, *S)`` channels-last memory as its ``(N*prod(S) / k, k*C)`` matrix (a view, no copy)."""
    return x.movedim(1, -1).reshape(-1, k * x.shape[1])


def _channel_sum(m: Tensor, channels: int) -> Tensor:
    """Column sums of ``(R, k*C)``, folded to ``(C,)``."""
    return m.sum(dim=0).view(-1, channels).sum(dim=0)


class _ChannelsLastBatchNorm(torch.autograd.Function):
    """Training-mode batch norm on a channels-last input; returns ``(y, mean, biased var)``."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, eps: float, k: int):  # type: ignore[override]
        channels = x.shape[1]
        count = x.numel() // channels
        m = _matrix(x, k)
        mean = _channel_sum(m, channels) / count
        centred = m - mean.repeat(k)
        var = _channel_sum(centred * centred, channels) / count
        rstd = torch.rsqrt(var + eps)
        y = torch.empty_like(x)  # same layout as x; written through its matrix view
        y_matrix = _matrix(y, k)
        torch.mul(centred, (weight * rstd).repeat(k), out=y_matrix)
        y_matrix += bias.repeat(k)
        ctx.save_for_backward(centred, rstd, weight)
        ctx.k = k
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx, grad_y: Tensor, _grad_mean: Tensor, _grad_var: Tensor):  # type: ignore[override]
        centred, rstd, weight = ctx.saved_tensors
        k = ctx.k
        channels = weight.numel()
        count = centred.numel() // channels
        grad_y = grad_y.contiguous(memory_format=channels_last_format(grad_y.dim()))
        g = _matrix(grad_y, k)
        grad_bias = _channel_sum(g, channels)  # sum g
        g_centred = _channel_sum(g * centred, channels)  # sum g * (x - mean)
        grad_weight = g_centred * rstd
        # dx = w * rstd * (g - mean(g) - xhat * mean(g * xhat)), xhat = (x - mean) * rstd
        grad_x = torch.empty_like(grad_y)
        grad_matrix = _matrix(grad_x, k)
        torch.sub(g, (grad_bias / count).repeat(k), out=grad_matrix)
        grad_matrix -= centred * (g_centred * rstd * rstd / count).repeat(k)
        grad_matrix *= (weight * rstd).repeat(k)
        return grad_x, grad_weight, grad_bias, None, None


def channels_last_format(dim: int) -> torch.memory_format:
    return torch.channels_last_3d if dim == 5 else torch.channels_last


def fast_path_applies(bn: nn.modules.batchnorm._BatchNorm, x: Tensor,
                      max_channels: int = MAX_CHANNELS) -> bool:
    """Whether :class:`_ChannelsLastBatchNorm` runs: training, affine, tracked stats, at most
    ``max_channels`` channels, a float32 CPU input in a channels-last layout (and not also contiguous), more
    than one value per channel. The fused batch norm + ReLU (:mod:`naslung.models.kernels.bn_relu`) asks
    with its own limit."""
    return (bn.training and bn.affine and bn.track_running_stats and x.dim() in (4, 5)
            and x.shape[1] <= max_channels and x.device.type == "cpu" and x.dtype == torch.float32
            and x.is_contiguous(memory_format=channels_last_format(x.dim())) and not x.is_contiguous()
            and x.numel() > x.shape[1])


def update_running_stats(bn: nn.modules.batchnorm._BatchNorm, mean: Tensor, var: Tensor, count: int) -> None:
    """``nn.BatchNorm``'s running-statistics update from a batch's mean and biased variance over ``count``
    values per channel (the unbiased variance goes into ``running_var``)."""
    bn.num_batches_tracked.add_(1)
    momentum = bn.momentum
    if momentum is None:  # cumulative moving average, as nn.BatchNorm
        momentum = 1.0 / float(bn.num_batches_tracked)
    with torch.no_grad():
        bn.running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
        unbiased = var * (count / max(count - 1, 1))
        bn.running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)


class _FastTrainBatchNorm(nn.modules.batchnorm._BatchNorm):
    """``nn.BatchNorm``'s forward, with the channels-last training path (module docstring).

    ``fused`` (not state): with a ReLU after it, :func:`naslung.models.kernels.bn_relu.bn_relu` may run the
    pair on the fused C++ kernels instead.
    """

    fused = True

    def forward(self, x: Tensor) -> Tensor:
        if not fast_path_applies(self, x):
            return super().forward(x)
        self._check_input_dim(x)
        count = x.numel() // x.shape[1]
        k = _fold(count, x.shape[1])
        y, mean, var = _ChannelsLastBatchNorm.apply(x, self.weight, self.bias, self.eps, k)
        update_running_stats(self, mean, var, count)
        return y


class BatchNorm2d(_FastTrainBatchNorm, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with the channels-last CPU training path."""


class BatchNorm3d(_FastTrainBatchNorm, nn.BatchNorm3d):
    """``nn.BatchNorm3d`` with the channels-last CPU training path."""


