"""3-D convolution that runs one-sample CPU inputs on oneDNN: the same layer, about 2x faster at batch 1.

torch picks a CPU conv kernel with a heuristic written for 2-D images: a float32 input of batch 1 whose ``N *
C * D * H`` is at most 20480, with a kernel of side 3 or less, goes to its native im2col kernel
(``aten::slow_conv3d_forward``) instead of oneDNN. For NAS-Lung's 3-D maps that is the wrong choice. Forward
of a 4 -> 4 channel 3^3 conv on one 32^3 map took 2.68 ms native against 0.33 ms through oneDNN; 1 -> 4 at
32^3 0.42 against 0.14 ms; 4 -> 4 at 16^3 0.35 against 0.08 ms (2 threads, this project's 2-core CPU VM,
``torch.ops.aten.mkldnn_convolution`` called directly). A whole folded Model-1 at batch 1 went from 5.8 to 2.5
ms. At batch 2 and more torch already picks oneDNN, so nothing changes there.

:class:`Conv3d` is ``nn.Conv3d`` (same parameters, state dict, BN folding, ONNX export) whose forward calls
oneDNN's conv for a one-sample float32 CPU input with a kernel larger than 1 and at least
:data:`MIN_ONEDNN_MACS` multiply-adds (for ``1^3`` kernels and for small maps the native kernel was as fast or
faster: 0.020 against 0.068 ms for the stride-2 shortcut at 32^3). Every other case, and any forward under
tracing, ONNX export, ``torch.compile`` or CPU autocast, is ``nn.Conv3d``'s own: the exporters then see the
usual conv, and autocast keeps its dtype policy (it casts at ``aten::conv3d``, which the direct call would
bypass). Outputs and gradients agree with ``F.conv3d`` to float rounding (``tests/models/test_conv.py``). 2-D
convs keep torch's choice: its heuristic was tuned for 2-D, and oneDNN's 2-D paths are where this torch
version crashed on AVX2-only CPUs (``naslung.train.engine``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from naslung.models.kernels.conv import direct_conv3d, direct_conv_applies


def onednn_applies(x: Tensor, weight: Tensor) -> bool:
    """Whether :class:`Conv3d` sends this ``(1, C, D, H, W)`` input to oneDNN instead of torch's choice."""
    return (
        not torch.jit.is_tracing()  # first: the exporters' tracer would warn about the shape tests below
        and not torch.jit.is_scripting()
        and not torch.onnx.is_in_onnx_export()
        and not torch.compiler.is_compiling()
        and x.dim() == 5
        and x.shape[0] == 1
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and any(k > 1 for k in weight.shape[2:])
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
        and not torch.is_autocast_enabled("cpu")
    )


#: Below this many multiply-adds a one-sample conv stays on torch's native kernel: oneDNN costs about 35-45 us
#: per call whatever the size. Measured at batch 1, 2 threads (native against oneDNN, us): 8 -> 8 on 4^3 12 vs
#: 37, 16 -> 16 on 4^3 21 vs 46 (442 k MACs), 4 -> 8 on 8^3 36 vs 41 (442 k), 4 -> 4 stride 2 from 16^3 33 vs
#: 42; 8 -> 8 on 8^3 64 vs 44 (885 k), 4 -> 4 on 16^3 236 vs 73, 64 -> 128 on 4^3 191 vs 147.
MIN_ONEDNN_MACS = 500_000


def conv_macs(x: Tensor, weight: Tensor, stride: Sequence[int], padding: Sequence[int],
              dilation: Sequence[int]) -> int:
    """Multiply-adds of a conv of ``weight`` ``(O, C / groups, *K)`` on ``x`` ``(N, C, *S)``."""
    out = 1
    for side, k, st, pad, dil in zip(x.shape[2:], weight.shape[2:], stride, padding, dilation, strict=True):
        out *= max(0, (side + 2 * pad - dil * (k - 1) - 1) // st + 1)
    return x.shape[0] * out * weight[0].numel() * weight.shape[0]


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` whose one-sample CPU float32 forward runs on oneDNN (see the module docstring).

    ``onednn_at_batch1 = False`` on an instance (:func:`set_onednn_at_batch1`) gives torch's own choice back.
    Few-channel convs on channels-last maps run on naslung's direct kernels
    (:mod:`naslung.models.kernels.conv`) while ``fused`` is on
    (:func:`~naslung.models.kernels.switch.set_fused_kernels`).
    """

    onednn_at_batch1: bool = True
    fused: bool = True

    def runs_onednn(self, x: Tensor, weight: Tensor | None = None) -> bool:
        """Whether this conv sends ``x`` to oneDNN: :func:`onednn_applies`, zero padding given as sizes,
        and at least :data:`MIN_ONEDNN_MACS` multiply-adds."""
        weight = self.weight if weight is None else weight
        return (self.onednn_at_batch1 and self.padding_mode == "zeros" and not isinstance(self.padding, str)
                and onednn_applies(x, weight)
                and conv_macs(x, weight, self.stride, self.padding, self.dilation) >= MIN_ONEDNN_MACS)

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if direct_conv_applies(self, input, weight, bias):
            return direct_conv3d(input, weight, self.stride[0], bias)
        if self.runs_onednn(input, weight):
            return torch.ops.aten.mkldnn_convolution(
                input, weight, bias, list(self.padding), list(self.stride), list(self.dilation), self.groups
            )
        return super()._conv_forward(input, weight, bias)


def set_onednn_at_batch1(model: nn.Module, on: bool) -> nn.Module:
    """Switch every :class:`Conv3d` of ``model`` to oneDNN at batch 1 (the default) or to torch's own choice
    (plain eager, the benchmarks' baseline), in place; returns ``model``."""
    for module in model.modules():
        if isinstance(module, Conv3d):
            module.onednn_at_batch1 = on
    return model
