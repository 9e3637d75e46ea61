"""Inference fast path: batch norm folded into the preceding convolutions.

In eval mode a batch norm is an affine map per channel, ``y = (x - mu) * g / sqrt(var + eps) + b``, so
``BN(conv(x))`` equals one convolution with scaled weights and a bias::

    W' = W * s,   b' = (b_conv - mu) * s + beta,   s = gamma / sqrt(var + eps)   (per output channel)

:func:`fold_batchnorm` returns a copy of a model in which every conv directly followed by a batch norm (in
:class:`ConvBNReLU`, in :class:`ResidualBlock` and in its projection shortcut) is replaced by that folded
conv, and the batch norm by ``nn.Identity``. The copy computes the same function as the eval-mode original
(up to float rounding) with a third fewer layers to run; it is for inference only (no batch statistics).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from naslung.models.blocks.conv import Conv3d
from naslung.models.blocks.residual import ResidualBlock

_BN = (nn.BatchNorm2d, nn.BatchNorm3d)
_CONV = (nn.Conv2d, nn.Conv3d)


@torch.no_grad()
def fold_conv_bn(conv: nn.Module, bn: nn.Module) -> nn.Module:
    """One conv equal to ``bn(conv(x))`` with ``bn`` in eval mode (its running statistics).

    Args:
        conv: ``nn.Conv2d``/``nn.Conv3d`` with weight ``(C_out, C_in / groups, *k)``, any bias.
        bn: ``nn.BatchNorm2d``/``3d`` over ``C_out`` channels with running statistics.

    Returns:
        A new conv of the same geometry, with a bias ``(C_out,)``, on the same device and dtype.
    """
    if not isinstance(conv, _CONV) or not isinstance(bn, _BN):
        raise TypeError(f"need a conv and a batch norm, got {type(conv).__name__}, {type(bn).__name__}")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("batch norm without running statistics cannot be folded")
    w = conv.weight
    gamma = bn.weight if bn.affine else torch.ones_like(bn.running_var)
    scale = gamma * torch.rsqrt(bn.running_var + bn.eps)
    shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused = type(conv)(
        conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
        dilation=conv.dilation, groups=conv.groups, bias=True, padding_mode=conv.padding_mode,
    ).to(device=w.device, dtype=w.dtype)
    if isinstance(conv, Conv3d):
        fused.onednn_at_batch1 = conv.onednn_at_batch1
    fused.weight.copy_(w * scale.view(-1, *([1] * (w.dim() - 1))))
    fused.bias.copy_((bias - bn.running_mean) * scale + shift)
    return fused


def _fold_sequential(seq: nn.Sequential) -> None:
    names = list(seq._modules)
    for a, b in zip(names, names[1:], strict=False):
        conv, bn = seq._modules[a], seq._modules[b]
        if isinstance(conv, _CONV) and isinstance(bn, _BN):
            seq._modules[a] = fold_conv_bn(conv, bn)
            seq._modules[b] = nn.Identity()


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every conv -> batch-norm pair folded into one conv.

    ``model`` itself is left untouched. Pairs are found in ``nn.Sequential`` containers (consecutive
    children) and in :class:`ResidualBlock` (``conv1/bn1``, ``conv2/bn2``). A batch norm that follows no
    conv stays. Returns the copy; input and output shapes are those of ``model``.
    """
    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        if isinstance(module, nn.Sequential):
            _fold_sequential(module)
        elif isinstance(module, ResidualBlock):
            for conv_name, bn_name in (("conv1", "bn1"), ("conv2", "bn2")):
                conv, bn = getattr(module, conv_name), getattr(module, bn_name)
                if isinstance(bn, _BN):
                    setattr(module, conv_name, fold_conv_bn(conv, bn))
                    setattr(module, bn_name, nn.Identity())
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded


def count_batchnorms(model: nn.Module) -> int:
    """Number of batch-norm layers left in ``model`` (0 after :func:`fold_batchnorm` of a NAS-Lung net)."""
    return sum(isinstance(m, _BN) for m in model.modules())
