"""The spatial gate's conv (CBAM eq. 3) through the FFT: the same numbers, several times faster on CPU.

CBAM's spatial gate convolves a 2-channel map (channel mean and max) into 1 channel with a ``k^d`` kernel.
With so few channels the CPU conv kernels are badly used: a training step (forward + backward, batch 32) of
the 7^3 gate on a 32^3 map took 1.55 s contiguous and 0.57 s in ``channels_last_3d``, but 0.13 s through
the FFT (one thread, this project's 2-core CPU VM; ``benchmarks/train_throughput.py``, variant ``fft``).

:func:`fft_conv` is the cross-correlation with zero padding ``k // 2`` and stride 1 that
``nn.Conv{2,3}d(C, O, k, padding=k // 2)`` computes: both inputs are zero-padded to a length ``L`` per axis,
multiplied in the frequency domain with the flipped kernel, and the centre ``S`` window of the (circular)
convolution is kept. ``L`` is the smallest 5-smooth length (factors 2, 3, 5 only) with ``L >= S + k // 2`` and
``L >= k`` (:func:`fft_length`): the kept window then receives no wrap-around (the linear convolution spans
``0 .. S + k - 2``; an alias of the window at ``n + L`` or ``n - L`` falls outside it exactly when
``L >= S + k // 2``), and a smooth length is what pocketfft transforms fastest. For the 7^3 gate at 32^3
that is 36 instead of the full ``S + k - 1 = 38 = 2 * 19``: forward + backward of the transforms 2.6x
faster (one thread, this VM). It works in float32 whatever the input dtype (torch's CPU FFT has no bf16) and
returns the input dtype. Autograd differentiates it like any other op. Outputs agree with the direct conv to
about 1e-6 and gradients to about 1e-5 relative (``tests/models/test_fft_conv.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import torch
from torch import Tensor


@cache  # a few distinct (side, kernel) pairs, asked on every gate forward
def fft_length(side: int, kernel: int) -> int:
    """The smallest 5-smooth ``L >= max(side + kernel // 2, kernel)``: an alias-free circular length."""
    n = max(side + kernel // 2, kernel)
    while True:
        m = n
        for f in (2, 3, 5):
            while m % f == 0:
                m //= f
        if m == 1:
            return n
        n += 1


def weight_spectrum(weight: Tensor, full: Sequence[int]) -> Tensor:
    """The flipped kernel's real FFT at length ``full``: ``(O, C, *K) -> (O, C, *F)`` complex64.

    Depends on the weight and the map size only, so an eval-mode gate computes it once
    (:class:`naslung.models.blocks.cbam.SpatialAttention`)."""
    dims = tuple(range(2, weight.dim()))
    return torch.fft.rfftn(torch.flip(weight.float(), dims=dims), s=list(full), dim=dims)


def fft_conv(x: Tensor, weight: Tensor, bias: Tensor | None = None, filters: Tensor | None = None) -> Tensor:
    """``conv(x, weight, bias, padding=k // 2)`` through the FFT.

    Args:
        x: ``(B, C, *S)`` with 2 or 3 spatial axes.
        weight: ``(O, C, *K)``, odd ``K`` (same padding).
        bias: ``(O,)`` or None.
        filters: ``weight_spectrum(weight, [fft_length(s, k) ...])`` if the caller has it; computed otherwise.

    Returns:
        ``(B, O, *S)`` in ``x``'s dtype.
    """
    dims = tuple(range(2, x.dim()))
    sides, kernel = x.shape[2:], weight.shape[2:]
    if any(k % 2 == 0 for k in kernel):
        raise ValueError(f"fft_conv needs odd kernel sides, got {tuple(kernel)}")
    full = [fft_length(s, k) for s, k in zip(sides, kernel, strict=True)]
    spectrum = torch.fft.rfftn(x.float(), s=full, dim=dims)  # (B, C, *F)
    if filters is None:
        filters = weight_spectrum(weight, full)  # (O, C, *F)
    # sum_c spectrum[:, c] * filters[:, c], one input channel at a time: (B, 1, *F) * (O, *F) -> (B, O, *F).
    # Broadcasting (B, 1, C, *F) * (1, O, C, *F) and summing over C wrote a (B, O, C, *F) temporary: the
    # gate's forward at batch 32 and 32^3 is 6 % faster this way (8.1 -> 7.7 ms, 2 threads); training is
    # unchanged.
    product = spectrum[:, :1] * filters[:, 0]
    for c in range(1, spectrum.shape[1]):
        product = product + spectrum[:, c : c + 1] * filters[:, c]
    out = torch.fft.irfftn(product, s=full, dim=dims)
    window = tuple(slice(k // 2, k // 2 + s) for s, k in zip(sides, kernel, strict=True))
    out = out[(slice(None), slice(None), *window)]
    if bias is not None:
        out = out + bias.float().view(1, -1, *([1] * len(dims)))
    return out.to(x.dtype)
