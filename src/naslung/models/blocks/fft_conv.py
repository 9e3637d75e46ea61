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
returns the input dtype. Its backward is written out (:class:`_FFTConv`, real transforms only): the gate's
forward + backward at batch 32 and 32^3 took 32.5 ms against 40.8 ms with autograd's backward of the
transforms (one thread). Outputs agree with the direct conv to about 1e-6 and gradients to about 1e-5
relative (``tests/models/test_fft_conv.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

import torch
from torch import Tensor

from naslung.models.kernels import cbam_ops


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


def plane_spectrum(weight: Tensor, full: Sequence[int]) -> Tensor:
    """The kernel's per-plane spectra, flipped in the last two axes only: ``(O, C, K0, K1, K2) -> (O, C, K0,
    F1, F2)`` complex64 at the plane lengths ``full`` (two).

    The serving CBAM's gate (``serve`` in ``kernels/cbam_cpu.cpp``) transforms each depth plane in 2-D and
    sums the ``K0`` depth taps in the frequency domain: with ``K0`` taps of a correlation the depth axis needs
    no flip, ``out[d] = sum_i plane[d - K0 // 2 + i] * spectrum[i]``."""
    dims = (weight.dim() - 2, weight.dim() - 1)
    return torch.fft.rfftn(torch.flip(weight.float(), dims=dims), s=list(full), dim=dims)


def fft_conv(x: Tensor, weight: Tensor, bias: Tensor | None = None, filters: Tensor | None = None,
             fused: bool = True) -> Tensor:
    """``conv(x, weight, bias, padding=k // 2)`` through the FFT.

    Args:
        x: ``(B, C, *S)`` with 2 or 3 spatial axes.
        weight: ``(O, C, *K)``, odd ``K`` (same padding).
        bias: ``(O,)`` or None.
        filters: ``weight_spectrum(weight, [fft_length(s, k) ...])`` if the caller has it (then no gradient
            reaches ``weight``); computed otherwise.
        fused: let the fused kernels run where they can: a 3-D float32 CPU map without ``filters`` through
            per-plane 2-D FFTs and frequency-domain depth taps (:class:`_PlaneFFTConv`; a Model-1 training
            step 2-5 % faster than the 3-D FFT, AVX2 dispatch alike), else the 3-D FFT's mix
            (:func:`_mix`); False keeps torch's ops and the 3-D FFT
            (:func:`~naslung.models.kernels.switch.set_fused_kernels`).

    Returns:
        ``(B, O, *S)`` in ``x``'s dtype.
    """
    kernel = tuple(weight.shape[2:])
    if any(k % 2 == 0 for k in kernel):
        raise ValueError(f"fft_conv needs odd kernel sides, got {kernel}")
    full = tuple(fft_length(s, k) for s, k in zip(x.shape[2:], kernel, strict=True))
    if filters is None and fused and _plane_kernels(x, weight) is not None:
        out = _PlaneFFTConv.apply(x, weight, full[1:])
    elif filters is None:
        out = _FFTConv.apply(x, weight, full, fused)
    else:
        out, _ = _correlate(x, filters, full, kernel, fused)
    if bias is not None:
        out = out + bias.float().view(1, -1, *([1] * (x.dim() - 2)))
    return out.to(x.dtype)


def _mix_kernels(spectra: Tensor, filters: Tensor) -> Any | None:
    """The fused kernels if ``_mix`` may run on them, else None."""
    if torch.is_grad_enabled() and (spectra.requires_grad or filters.requires_grad):
        return None
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return None
    complex_cpu = all(t.device.type == "cpu" and t.dtype == torch.complex64 for t in (spectra, filters))
    if not complex_cpu or not (spectra[0][0].is_contiguous() and filters[0][0].is_contiguous()):
        return None
    return cbam_ops()


def _mix(spectra: Tensor, filters: Tensor, conjugate: bool = False, fused: bool = True) -> Tensor:
    """``out[b, o] = sum_c spectra[b, c] * filters[o, c]`` (``(B, C, *F)``, ``(O, C, *F)`` -> ``(B, O, *F)``).

    One input channel at a time: broadcasting ``(B, 1, C, *F) * (1, O, C, *F)`` and summing over ``C`` wrote
    a ``(B, O, C, *F)`` temporary; the gate's forward at batch 32 and 32^3 is 6 % faster this way (8.1 -> 7.7
    ms, 2 threads). ``conjugate`` uses ``conj(filters)``.

    Where it can, it runs as one pass of the fused CBAM kernels' ``spectrum_mix`` (complex64 CPU tensors,
    the spectral axes contiguous, no gradient to track): 0.63 against 4.5 ms for the 32^3 gate at batch 32
    (2 threads, this VM); outputs equal to float rounding (``tests/models/test_fft_conv.py``).
    """
    ops = _mix_kernels(spectra, filters) if fused else None
    if ops is not None:
        return ops.spectrum_mix(spectra, filters, conjugate)
    if conjugate:
        filters = filters.conj()
    out = spectra[:, :1] * filters[:, 0]
    for c in range(1, spectra.shape[1]):
        out = out + spectra[:, c : c + 1] * filters[:, c]
    return out


def _correlate(x: Tensor, filters: Tensor, full: Sequence[int], kernel: Sequence[int],
               fused: bool = True) -> tuple[Tensor, Tensor]:
    """The forward: ``(B, C, *S)`` and the spectrum -> float32 ``(B, O, *S)``, and ``x``'s spectrum."""
    dims = tuple(range(2, x.dim()))
    spectrum = torch.fft.rfftn(x.float(), s=list(full), dim=dims)  # (B, C, *F)
    out = torch.fft.irfftn(_mix(spectrum, filters, fused=fused), s=list(full), dim=dims)
    window = tuple(slice(k // 2, k // 2 + s) for s, k in zip(x.shape[2:], kernel, strict=True))
    return out[(slice(None), slice(None), *window)], spectrum


class _FFTConv(torch.autograd.Function):
    """:func:`fft_conv` without bias, with its adjoint written out.

    With ``h`` the flipped kernel zero-padded to ``L`` and ``g`` the output gradient placed at offset ``k//2``
    in a zero array of length ``L`` (the adjoint of keeping that window), the forward is the circular
    convolution ``h * x``, so ``dx`` is the circular correlation of ``g`` with ``h`` (spectrum ``G conj(H)``,
    first ``S`` values) and ``dh`` is that of ``g`` with ``x`` (``sum_b G conj(X)``, first ``k`` values,
    flipped back into ``dw``). These are exact adjoints of the forward, which equals the zero-padded conv, so
    they are that conv's gradients. Autograd's own backward of ``rfftn`` / ``irfftn`` went through
    complex-to-complex transforms: this one uses real transforms only, and keeps ``x``'s spectrum from the
    forward.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, full: tuple[int, ...],  # type: ignore[override]
                fused: bool = True) -> Tensor:
        kernel = tuple(weight.shape[2:])
        filters = weight_spectrum(weight, full)
        out, spectrum = _correlate(x, filters, full, kernel, fused)
        ctx.full, ctx.kernel, ctx.sides, ctx.fused = full, kernel, tuple(x.shape[2:]), fused
        ctx.dtypes = (x.dtype, weight.dtype)
        ctx.save_for_backward(spectrum if ctx.needs_input_grad[1] else None,
                              filters if ctx.needs_input_grad[0] else None)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        spectrum, filters = ctx.saved_tensors
        full, kernel, sides = ctx.full, ctx.kernel, ctx.sides
        dims = tuple(range(2, grad.dim()))
        pad: list[int] = []
        for s, k, n in reversed(list(zip(sides, kernel, full, strict=True))):
            pad += [k // 2, n - s - k // 2]
        placed = torch.fft.rfftn(torch.nn.functional.pad(grad.float(), pad), dim=dims)  # (B, O, *F)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            # sum_o G[b, o] conj(H[o, c]): the (C, O) transpose of the filters, conjugated
            mixed = _mix(placed, filters.transpose(0, 1), conjugate=True, fused=ctx.fused)
            full_x = torch.fft.irfftn(mixed, s=list(full), dim=dims)
            grad_x = full_x[(slice(None), slice(None), *(slice(0, s) for s in sides))].to(ctx.dtypes[0])
        if ctx.needs_input_grad[1]:
            # sum_b G[b, o] conj(X[b, c]) -> (O, C, *F)
            cross = _mix(placed.transpose(0, 1), spectrum.transpose(0, 1), conjugate=True, fused=ctx.fused)
            full_h = torch.fft.irfftn(cross, s=list(full), dim=dims)
            grad_h = full_h[(slice(None), slice(None), *(slice(0, k) for k in kernel))]
            grad_w = torch.flip(grad_h, dims=dims).to(ctx.dtypes[1])
        return grad_x, grad_w, None, None


def _plane_kernels(x: Tensor, weight: Tensor) -> Any | None:
    """The fused kernels if :class:`_PlaneFFTConv` may run: a 3-D float32 CPU conv, not while tracing or
    compiling, the kernels built and on."""
    if x.dim() != 5 or x.device.type != "cpu" or weight.device.type != "cpu":
        return None
    if x.dtype != torch.float32 or weight.dtype != torch.float32:
        return None
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return None
    return cbam_ops()


def _plane_spectra(ops: Any, t: Tensor, full: Sequence[int], pad: Sequence[int] = (0, 0, 0, 0)) -> Tensor:
    """Each depth plane's 2-D real FFT at the lengths ``full``: ``(B, C, D, H, W) -> (B, C, D, F)`` complex64
    with ``F = L1 * (L2 // 2 + 1)``, after an in-plane zero pad ``pad`` (``F.pad`` order) if any; the fused
    kernels' ``plane_rfft2`` (``kernels/plane_fft.h``), equal to ``torch.fft.rfftn(t, s=full, dim=(3,
    4))``."""
    if any(pad):
        t = torch.nn.functional.pad(t, list(pad))
    spectra = ops.plane_rfft2(t.float(), full[0], full[1])
    return spectra.reshape(*spectra.shape[:3], -1)


class _PlaneFFTConv(torch.autograd.Function):
    """:func:`fft_conv` of a 3-D map without bias, through per-plane 2-D FFTs: ``(B, C, D, H, W)`` and
    ``(O, C, K0, K1, K2)`` -> ``(B, O, D, H, W)`` float32.

    In the plane: :class:`_FFTConv`'s circular convolution with the in-plane-flipped kernel at the lengths
    ``full`` (two, :func:`fft_length`) and its centre window. In depth, the ``K0`` taps of the correlation
    summed in the frequency domain (``plane_taps`` in ``kernels/cbam_cpu.cpp``): ``Z[b, o, d] = sum_c sum_i
    H[o, c, i] X[b, c, d - K0 // 2 + i]`` over the planes inside the map, so the depth axis is neither padded
    nor transformed. The adjoints: ``dX[b, c, q] = sum_o sum_i conj(H[o, c, i]) G[b, o, q + K0 // 2 - i]``
    (``plane_taps`` with ``adjoint``) and ``dH[o, c, i] = sum_b sum_d G[b, o, d] conj(X[b, c, d - K0 // 2 +
    i])`` (``plane_taps_weight``), with ``G`` the output gradient placed at offset ``K1 // 2, K2 // 2`` in
    the plane, as :class:`_FFTConv` places it.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, full: tuple[int, int]) -> Tensor:  # type: ignore[override]
        ops = cbam_ops()
        kernel = tuple(weight.shape[2:])
        spectra = _plane_spectra(ops, x, full)  # (B, C, D, F)
        filters = plane_spectrum(weight, full)  # (O, C, K0, F1, F2)
        filters = filters.reshape(*filters.shape[:3], -1)
        mixed = ops.plane_taps(spectra, filters, False)  # (B, O, D, F)
        b, o, d = mixed.shape[:3]
        r1, r2 = kernel[1] // 2, kernel[2] // 2
        ctx.full, ctx.kernel, ctx.sides = full, kernel, tuple(x.shape[3:])
        ctx.save_for_backward(spectra if ctx.needs_input_grad[1] else None,
                              filters if ctx.needs_input_grad[0] else None)
        # the centre window of the planes' inverse transforms
        return ops.plane_irfft2(mixed.view(b, o, d, full[0], -1), full[0], full[1], r1, x.shape[3], r2,
                                x.shape[4])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        ops = cbam_ops()
        spectra, filters = ctx.saved_tensors
        full, kernel, (h, w) = ctx.full, ctx.kernel, ctx.sides
        r1, r2 = kernel[1] // 2, kernel[2] // 2
        placed = _plane_spectra(ops, grad, full, (r2, full[1] - w - r2, r1, full[0] - h - r1))  # (B, O, D, F)
        b, _, d = placed.shape[:3]
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            mixed = ops.plane_taps(placed, filters.transpose(0, 1), True)  # (B, C, D, F)
            grad_x = ops.plane_irfft2(mixed.view(b, -1, d, full[0], full[1] // 2 + 1), full[0], full[1], 0, h,
                                      0, w)
        if ctx.needs_input_grad[1]:
            cross = ops.plane_taps_weight(placed, spectra, kernel[0])  # (O, C, K0, F)
            o, c = cross.shape[:2]
            planes = torch.fft.irfftn(cross.view(o, c, kernel[0], full[0], -1), s=list(full), dim=(3, 4))
            grad_w = torch.flip(planes[..., : kernel[1], : kernel[2]], dims=(3, 4))
        return grad_x, grad_w, None
