"""Few-channel 3-D convolutions in training and serving, on the direct CPU kernels of ``conv_cpu.cpp``.

oneDNN is slow on NAS-Lung's small 3-D maps, and slowest backward: under AVX2 dispatch Model-1's 4 -> 4 3^3
conv at 32^3 took 71 ms backward against 30 ms forward per batch of 32, 44 % of a training step
(docs/performance.md). The direct kernels compute the same convolution (eq. of ``conv_cpu.cpp``: zero
padding ``K // 2``, kernel 1^3 or 3^3, stride 1 or 2, no bias) forward and backward as loops vectorised along
``W`` over a row-planar copy of the input, in one autograd node.

Where it applies (:func:`direct_conv_applies`; ``python benchmarks/conv_kernels.py --isa both``: forward +
backward, batch 32, one thread, against ``F.conv3d``'s oneDNN path, ``native`` / AVX2 dispatch): Model-1's
4 -> 4 at 32^3 2.69x / 2.32x, stride 2 2.18x / 2.83x, the 1^3 stride-2 shortcut 1.54x / 1.36x, the 1 -> 4
stem 3.04x / 3.37x, 4 -> 4 at 16^3 2.58x / 2.74x; 8 -> 8 at 16^3 1.32x / 1.25x. The 3-D default's 8-output
convs at 32^3 won natively (1.33-1.60x) and lost in that benchmark under AVX2 dispatch (0.40-0.74x), but its
whole training step was not slower with them (16.71 against 16.23 ms per sample, within noise), so they
stay. Where it lost everywhere it does not apply: maps narrower than 16 (8 -> 8 at 8^3 0.74x / 0.86x) and
16 channels or more (16 -> 16 at 16^3 0.69x / 0.90x). In serving (the BN-folded, biased forward) it applies
to the 3^3 convs: 1.0-4.5x at batch 32 and 1.0-3.7x at batch 1; oneDNN ran the 1^3 shortcut faster there.
Tests: ``tests/models/test_fused_conv.py`` (outputs and both gradients against float64, every kernel size,
stride and channel case, odd sides, channels-last weights; Model-1's training step and serving path).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from naslung.models.kernels import conv_ops, runs_eagerly

#: Channel counts the kernels take: input 1 or a multiple of 4, output a multiple of 4, at most this many.
MAX_CHANNELS = 8
#: Narrowest input side (``W``) they take in training: below it 16-wide row blocks waste most of their lanes.
MIN_SIDE = 16
#: ... and in serving, where rows of 8 or fewer outputs take 8-wide blocks (``conv_cpu.cpp``): Model-1's 8^3
#: convs, batch 32, 2 threads, against oneDNN: 4 -> 4 0.14 vs 0.39 ms, 4 -> 8 0.27 vs 0.39, 8 -> 8 0.53 vs
#: 0.60, the stride-2 8 -> 8 from 8^3 0.18 vs 0.14 (lost; at batch 1 all won, 2-4x).
MIN_SERVING_SIDE = 8
#: ... and for one sample, where torch's call costs more than the arithmetic: Model-1's 8 -> 8 at 4^3, 2
#: threads, 13.6 vs 25.3 us (4 -> 4: 6.8 vs 15.0); at batch 32 oneDNN won (118 vs 150 us), so batches keep it.
MIN_ONE_SAMPLE_SIDE = 4


class _DirectConv3d(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, stride: int) -> Tensor:  # type: ignore[override]
        y, planar = conv_ops().forward(x, weight, None, stride)
        ctx.save_for_backward(planar, weight)
        ctx.input_shape = tuple(x.shape)
        ctx.stride = stride
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor):  # type: ignore[override]
        planar, weight = ctx.saved_tensors
        n, _c, d, h, w = ctx.input_shape
        grad = grad.contiguous(memory_format=torch.channels_last_3d)
        need_input = bool(ctx.needs_input_grad[0])
        dx, dw = conv_ops().backward(grad, planar, weight, n, d, h, w, ctx.stride, need_input)
        return (dx if need_input else None), (dw if ctx.needs_input_grad[1] else None), None


def _uniform(values: tuple[int, ...]) -> int | None:
    return values[0] if len(set(values)) == 1 else None


def _wants_grad(x: Tensor, weight: Tensor, bias: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))


def direct_conv_applies(conv: nn.Module, x: Tensor, weight: Tensor, bias: Tensor | None) -> bool:
    """Whether a 3-D conv runs on the direct kernels: ``fused`` on; groups and dilation 1, a cubic 1^3 or 3^3
    kernel with zero padding ``K // 2``, stride 1 or 2 in every dimension, a float32 CPU input in
    ``channels_last_3d`` of 1 or 4-8 channels (4 or 8 out) and at least :data:`MIN_SIDE` wide
    (:data:`MIN_SERVING_SIDE` in inference, :data:`MIN_ONE_SAMPLE_SIDE` for one sample); no hooks, not
    tracing or compiling, the kernels built. In
    training (a gradient wanted) the conv has no bias; in
    inference (the BN-folded serving path, biased) the kernel is 3^3: oneDNN ran the 1^3 stride-2 shortcut
    faster there (0.40x at batch 32, 0.97x at batch 1, 4 channels from 32^3; module doc).
    """
    if not getattr(conv, "fused", False):
        return False
    training = _wants_grad(x, weight, bias)
    if (training and bias is not None) or (not training and weight.shape[-1] != 3):
        return False
    if x.dim() != 5 or x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32:
        return False
    c_out, c_in, *kernel = weight.shape
    side = _uniform(tuple(kernel))
    stride = _uniform(tuple(conv.stride))
    if side not in (1, 3) or stride not in (1, 2) or conv.groups != 1 or set(conv.dilation) != {1}:
        return False
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str) or set(conv.padding) != {side // 2}:
        return False
    if not (c_in == 1 or c_in % 4 == 0) or c_out % 4 != 0 or max(c_in, c_out) > MAX_CHANNELS:
        return False
    narrowest = MIN_SIDE if training else (MIN_ONE_SAMPLE_SIDE if x.shape[0] == 1 else MIN_SERVING_SIDE)
    if x.shape[-1] < narrowest:
        return False
    if not x.is_contiguous(memory_format=torch.channels_last_3d):
        return False
    return runs_eagerly(conv) and not torch.is_autocast_enabled("cpu") and conv_ops() is not None


def direct_conv3d(x: Tensor, weight: Tensor, stride: int, bias: Tensor | None = None) -> Tensor:
    """``F.conv3d(x, weight, bias, stride=stride, padding=K // 2)`` on the direct kernels: one autograd node
    when a gradient is wanted (no bias then), the forward kernel alone otherwise. ``(N, C, D, H, W)``
    channels-last in, ``(N, O, D', H', W')`` channels-last out."""
    if _wants_grad(x, weight, bias):
        if bias is not None:
            raise ValueError("the direct conv trains without a bias (a batch norm follows every conv)")
        return _DirectConv3d.apply(x, weight, stride)
    return conv_ops().forward(x, weight, bias, stride, False)[0]  # no planar copy kept: nothing to go back to
