"""CBAM (eq. 1-3, channel-first order) on the fused CPU kernels of ``cbam_cpu.cpp``.

With ``a = M_c(x)`` of shape ``(B, C)`` and ``s = M_s(x * a)`` of shape ``(B, 1, *S)``, CBAM returns
``out = x * a * s``. Forward, three passes over ``x``: the channel gate's mean and max over space, the spatial
gate's descriptor ``[mean_c(x * a); max_c(x * a)]`` without writing ``x * a``, and the product. In training
the gates themselves (the MLP on ``(B, C)``, the ``2 -> 1`` conv on ``(B, 2, *S)``) stay torch code: they are
small and autograd differentiates them. In inference the kernels' ``serve`` runs them (:func:`served_cbam`).

Backward, with ``g = dL/dout`` and ``y = x * a``:

* ``dL/ds = sum_c g * y`` (pass 1), then torch's backward of the spatial gate gives ``dL/d desc``;
* ``dL/dy = g * s + d_mean / C + d_max * [y == max_c y] / ties`` (``amax``'s rule for ties);
* ``dL/da = sum_p x * dL/dy`` (pass 2), then torch's backward of the MLP gives ``dL/d avg`` and ``dL/d max``;
* ``dL/dx = a * dL/dy + d_avg / P + d_max at the first spatial maximum`` (pass 3; ``max(dim)``'s rule).

torch's chain makes about eight passes forward and more backward. Tests: outputs and every gradient against
float64 (``tests/models/test_fused_cbam.py``), both layouts, 2-D and 3-D, with ties.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from naslung.models.blocks.batchnorm import channels_last_format
from naslung.models.blocks.fft_conv import fft_conv, fft_length
from naslung.models.kernels import cbam_ops, runs_eagerly

#: A batch goes through ``serve`` in chunks of about this many map values (1 MiB), a thread a chunk, each
#: chunk's passes and FFTs in turn, so that the product's third read of the map comes from cache. Batch 32,
#: 2 threads, against the whole batch at once (ms): 4 channels at 32^3 8.3 vs 10.1 (chunks of 2 samples),
#: 4 at 16^3 1.49 vs 1.56, 32 at 16^3 3.38 vs 3.88, 64 at 8^3 0.78 vs 0.87; Model-1's serving forward 24.7
#: vs 26.8 ms (AVX2 dispatch 25.6 vs 26.9; one thread 43.4 vs 46.4); the mid model's unchanged (77 ms).
#: Chunks of 2 MiB were as fast or slower.
SERVE_CHUNK_FLOATS = 1 << 18


def _mlp(v: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> Tensor:
    return F.linear(F.relu(F.linear(v, w1, b1)), w2, b2)


def _spatial_gate(desc: Tensor, weight: Tensor, bias: Tensor, fft: bool) -> Tensor:
    """``sigmoid(conv(desc))``, eq. 3: ``(B, 2, *S) -> (B, 1, *S)``, the FFT path or the direct conv."""
    if fft:
        return torch.sigmoid(fft_conv(desc, weight, bias))
    conv = F.conv3d if desc.dim() == 5 else F.conv2d
    return torch.sigmoid(conv(desc, weight, bias, padding=weight.shape[-1] // 2))


def fused_applies(cbam: nn.Module, x: Tensor) -> bool:
    """Whether :func:`fused_cbam` runs for this CBAM and input: training (a gradient is needed), the kernels
    are built and on, channel-first order, a float32 CPU ``(B, C, *S)`` input (contiguous or channels-last),
    no hooks on the gates (explanations capture the maps with them), and not while tracing, exporting or
    compiling.

    Inference runs :func:`served_cbam` instead (:func:`serving_applies`).
    """
    if not (_kernels_take(cbam, x) and _wants_grad(cbam, x)) or x.dim() not in (4, 5):
        return False
    if not (x.is_contiguous() or x.is_contiguous(memory_format=channels_last_format(x.dim()))):
        return False
    return runs_eagerly(cbam.channel, cbam.spatial) and cbam_ops() is not None


def _kernels_take(cbam: nn.Module, x: Tensor) -> bool:
    """``fused`` on, channel-first order, a non-empty float32 CPU input."""
    return (bool(getattr(cbam, "fused", False)) and cbam.order == "channel-first" and x.device.type == "cpu"
            and x.dtype == torch.float32 and x.numel() > 0)


def _wants_grad(cbam: nn.Module, x: Tensor) -> bool:
    params = (cbam.channel.mlp[0].weight, cbam.spatial.conv.weight)
    return torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params))


def serving_applies(cbam: nn.Module, x: Tensor) -> bool:
    """Whether :func:`served_cbam` runs: inference (no gradient wanted) of a channel-first CBAM on a float32
    CPU ``(B, C, D, H, W)`` input in ``channels_last_3d`` (the 3-D serving layout), no hooks on the gates,
    not tracing, exporting or compiling, the kernels built.

    Forward only, ``channels_last_3d``, one thread, against torch's ops (``eval`` CBAM, FFT gate): 4
    channels at 32^3 1.28x at batch 32 and 1.21x at batch 1; 4 at 16^3 1.25x / 1.32x; 8 at 8^3 1.29x / 1.32x;
    8 at 32^3 1.36x / 1.62x. (Contiguous maps keep torch's ops: there it was 0.84-1.20x at batch 1.) The
    one-call ``serve`` against the passes with torch's gates between them, batch 1: 4 channels at 32^3 0.65
    vs 0.82 ms, 16^3 0.16 vs 0.31, 4^3 0.05 vs 0.20; 8 at 8^3 0.07 vs 0.22; batch 32 at 32^3 22.1 vs 22.8.
    """
    if not _kernels_take(cbam, x) or _wants_grad(cbam, x) or x.dim() != 5:
        return False
    if x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last_3d):
        return False
    return runs_eagerly(cbam, cbam.channel, cbam.spatial) and cbam_ops() is not None


def served_cbam(cbam: nn.Module, x: Tensor) -> Tensor:
    """``cbam(x)`` in inference on the fused forward kernels, in three passes over ``x`` (module doc).

    With the FFT gate and its fused mix on (the defaults), the whole block is one call of the kernels'
    ``serve``: the pooling, the MLP, the descriptor, the FFT gate (the spectrum cached by
    :meth:`SpatialAttention._spectrum`) and the product, where torch's chain made about 20 calls, most of a
    small map's time at batch 1; a batch goes through in chunks of :data:`SERVE_CHUNK_FLOATS`. Otherwise the
    gates are the modules' own (:meth:`ChannelAttention.gate`, :meth:`SpatialAttention.gate`) between the
    passes.
    """
    ops = cbam_ops()
    spatial = cbam.spatial
    if spatial.fft and getattr(spatial, "fused", True):
        sides = x.shape[2:]
        conv = spatial.conv
        planes = [fft_length(s, k) for s, k in zip(sides[1:], conv.weight.shape[3:], strict=True)]
        mlp = cbam.channel.mlp
        return ops.serve(x, mlp[0].weight, mlp[0].bias, mlp[2].weight, mlp[2].bias, conv.weight, conv.bias,
                         spatial._spectrum(sides, planes=True), planes, SERVE_CHUNK_FLOATS)
    avg, peak, _argmax = ops.spatial_pool(x)
    a = cbam.channel.gate(avg, peak)
    desc = ops.gate_descriptor(x, a).view(x.shape[0], 2, *x.shape[2:])
    return ops.gate_apply(x, a, spatial.gate(desc))


def fused_cbam(cbam: nn.Module, x: Tensor) -> Tensor:
    """``cbam(x)`` on the fused kernels: ``(B, C, *S) -> (B, C, *S)`` in ``x``'s layout (module doc)."""
    mlp = cbam.channel.mlp
    params = (mlp[0].weight, mlp[0].bias, mlp[2].weight, mlp[2].bias, cbam.spatial.conv.weight,
              cbam.spatial.conv.bias)
    return _FusedCBAM.apply(x, cbam, *params)


class _FusedCBAM(torch.autograd.Function):
    """Training CBAM: the big passes in C++, the small gates as torch sub-graphs differentiated backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, cbam: nn.Module, *params: Tensor) -> Tensor:  # type: ignore[override]
        ops = cbam_ops()
        with torch.no_grad():
            avg, mx, argmax = ops.spatial_pool(x)
        with torch.enable_grad():
            leaves = [p.detach().requires_grad_(p.requires_grad) for p in params]
            avg_in = avg.requires_grad_()
            mx_in = mx.clone().requires_grad_()
            a = torch.sigmoid(_mlp(avg_in, *leaves[:4]) + _mlp(mx_in, *leaves[:4]))
        desc = ops.gate_descriptor(x, a.detach()).view(x.shape[0], 2, *x.shape[2:])
        with torch.enable_grad():
            desc_in = desc.requires_grad_()
            s = _spatial_gate(desc_in, leaves[4], leaves[5], cbam.spatial.fft)
        ctx.save_for_backward(x, argmax)
        ctx.graph = (a, avg_in, mx_in, s, desc_in, leaves)
        return ops.gate_apply(x, a.detach(), s.detach())

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        ops = cbam_ops()
        x, argmax = ctx.saved_tensors
        a, avg_in, mx_in, s, desc_in, leaves = ctx.graph
        ctx.graph = None
        layout = torch.contiguous_format if x.is_contiguous() else channels_last_format(x.dim())
        g = grad.contiguous(memory_format=layout)
        a_value, s_value = a.detach(), s.detach()
        desc = desc_in.detach()
        ds, tie_inv = ops.grad_spatial(g, x, a_value)
        ds = ds.view_as(s)
        wanted = [desc_in] + [p for p in leaves[4:] if p.requires_grad]
        found = iter(torch.autograd.grad(s, wanted, ds))
        ddesc = next(found)
        conv_grads = [next(found) if p.requires_grad else None for p in leaves[4:]]
        da = ops.grad_channel(g, x, a_value, s_value, ddesc, desc, tie_inv)
        wanted = [avg_in, mx_in] + [p for p in leaves[:4] if p.requires_grad]
        found = iter(torch.autograd.grad(a, wanted, da))
        davg, dmax = next(found), next(found)
        mlp_grads = [next(found) if p.requires_grad else None for p in leaves[:4]]
        dx = (ops.grad_input(g, x, a_value, s_value, ddesc, desc, tie_inv, davg, dmax, argmax)
              if ctx.needs_input_grad[0] else None)
        return (dx, None, *mlp_grads, *conv_grads)
