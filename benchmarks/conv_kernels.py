"""naslung's direct few-channel 3-D conv kernels against ``F.conv3d`` (oneDNN), one conv at a time.

    python benchmarks/conv_kernels.py [--threads 1] [--rounds 7] [--isa native|avx2|both]

For each shape of Model-1 and of the 3-D default (and a few the kernels do not take, to show why), two
measures, interleaved, medians:

* training: forward + backward (input and weight gradients; the stem's input has no gradient) at batch 32,
  :func:`naslung.models.kernels.conv.direct_conv3d` against ``F.conv3d(...).backward`` on the same
  channels-last tensors;
* serving: the biased forward alone under ``torch.no_grad`` at batch 32 and batch 1, against ``F.conv3d``
  (batch 32) and ``torch.ops.aten.mkldnn_convolution`` (batch 1, what naslung's ``Conv3d`` calls there).

Prints milliseconds and ratios; never a test (``tests/models/test_fused_conv.py`` checks the numbers).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from _isa import kernel_benchmark_main
from _timing import interleave

from naslung.allocator import keep_freed_memory
from naslung.models.kernels import conv_ops
from naslung.models.kernels.conv import direct_conv3d
from naslung.models.machine import dispatch_isa

CL = torch.channels_last_3d
#: (in, out, input side, kernel, stride): Model-1's and the 3-D default's convs, then three not taken.
SHAPES = [(1, 4, 32, 3, 1), (4, 4, 32, 3, 1), (4, 4, 32, 3, 2), (4, 4, 32, 1, 2), (4, 4, 16, 3, 1),
          (4, 8, 16, 3, 2), (1, 8, 32, 3, 1), (8, 8, 32, 3, 1), (8, 8, 32, 3, 2), (8, 8, 16, 3, 1),
          (8, 8, 8, 3, 1), (16, 16, 16, 3, 1), (8, 16, 32, 3, 2)]


def training_steps(c_in: int, c_out: int, side: int, kernel: int, stride: int, batch: int) -> dict:
    x = torch.randn(batch, c_in, side, side, side).contiguous(memory_format=CL).requires_grad_(c_in > 1)
    w = torch.randn(c_out, c_in, kernel, kernel, kernel, requires_grad=True)

    def onednn() -> None:
        F.conv3d(x, w, stride=stride, padding=kernel // 2).sum().backward()

    def direct() -> None:
        direct_conv3d(x, w, stride).sum().backward()

    return {"oneDNN": onednn, "direct": direct}


def serving_steps(c_in: int, c_out: int, side: int, kernel: int, stride: int, batch: int) -> dict:
    x = torch.randn(batch, c_in, side, side, side).contiguous(memory_format=CL)
    w, b = torch.randn(c_out, c_in, kernel, kernel, kernel), torch.randn(c_out)
    pad = kernel // 2

    def onednn() -> None:
        with torch.no_grad():
            if batch == 1:
                torch.ops.aten.mkldnn_convolution(x, w, b, [pad] * 3, [stride] * 3, [1] * 3, 1)
            else:
                F.conv3d(x, w, b, stride=stride, padding=pad)

    def direct() -> None:
        with torch.no_grad():
            direct_conv3d(x, w, stride, b)

    return {"oneDNN": onednn, "direct": direct}


def measure(args: argparse.Namespace) -> None:
    keep_freed_memory()
    torch.set_num_threads(args.threads)
    if conv_ops() is None:
        raise SystemExit("the direct conv kernels could not be built here (the warning above says why)")
    print(f"dispatch {dispatch_isa()}, {args.threads} thread(s), {args.rounds} interleaved rounds; "
          "ms, medians")
    print(f"{'conv':28s} {'train b32 oneDNN':>16s} {'direct':>8s} {'ratio':>6s}   "
          f"{'serve b32':>9s} {'ratio':>6s}   {'serve b1':>8s} {'ratio':>6s}")
    for c_in, c_out, side, kernel, stride in SHAPES:
        name = f"{c_in}->{c_out} {kernel}^3 s{stride} from {side}^3"
        row = [name.ljust(28)]
        # (steps, batch, cell format): training prints both times, serving the direct kernel's only
        for make, batch, cell in ((training_steps, 32, "{onednn:16.2f} {direct:8.2f}"),
                                  (serving_steps, 32, "{direct:9.3f}"), (serving_steps, 1, "{direct:8.3f}")):
            t = interleave(make(c_in, c_out, side, kernel, stride, batch), args.rounds)
            times = cell.format(onednn=1e3 * t["oneDNN"], direct=1e3 * t["direct"])
            row.append(f"{times} {t['oneDNN'] / t['direct']:5.2f}x")
        print("   ".join(row), flush=True)


def main() -> None:
    kernel_benchmark_main(__doc__, measure, threads=1, rounds=7)


if __name__ == "__main__":
    main()
