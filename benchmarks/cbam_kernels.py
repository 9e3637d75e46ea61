"""naslung's fused CBAM kernels, one at a time, and whole CBAM blocks against torch's ops.

    python benchmarks/cbam_kernels.py [--threads 2] [--rounds 9] [--isa native|avx2|both]

For the channels-last maps of Model-1 (4 channels at 32^3), the 3-D default (8 at 32^3, 16 at 16^3) and
the mid model (32 at 16^3), batch 32, interleaved, medians in ms:

* each kernel of ``cbam_cpu.cpp``: the three forward passes (``spatial_pool``, ``gate_descriptor``,
  ``gate_apply``) and the three backward ones, beside a ``clone`` of the map (one read and one write of it,
  a yardstick of memory speed);
* a whole CBAM block (eq. 1-3, FFT spatial gate), forward + backward, fused kernels against torch's ops
  (:func:`~naslung.models.kernels.switch.set_fused_kernels` off), and its serving forward the same way;
* the spatial gate's frequency-domain mix (``spectrum_mix``) for the 32^3 gate against the same sum in
  torch's ops.

Prints milliseconds and ratios; never a test (``tests/models/test_fused_kernels.py`` and
``tests/models/test_fft_conv.py`` check the numbers).
"""

from __future__ import annotations

import argparse

import torch
from _isa import kernel_benchmark_main
from _timing import interleave

from naslung.allocator import keep_freed_memory
from naslung.models.blocks.cbam import CBAM
from naslung.models.kernels import cbam_ops
from naslung.models.kernels.switch import set_fused_kernels
from naslung.models.machine import dispatch_isa

CL = torch.channels_last_3d
#: (channels, side): Model-1's 32^3 block, the 3-D default's 32^3 and 16^3 ones, the mid model's 16^3.
SHAPES = [(4, 32), (8, 32), (16, 16), (32, 16)]
BATCH = 32


def kernel_steps(ops, channels: int, side: int) -> dict:
    """Each kernel on one map, with the inputs the forward hands the backward."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, channels, side, side, side, generator=gen).contiguous(memory_format=CL)
    a = torch.rand(BATCH, channels, generator=gen)
    s = torch.rand(BATCH, 1, side, side, side, generator=gen)
    g = torch.randn(x.shape, generator=gen).contiguous(memory_format=CL)
    avg, peak, argmax = ops.spatial_pool(x)
    desc = ops.gate_descriptor(x, a)
    ddesc = torch.randn(desc.shape, generator=gen)
    _, tie_inv = ops.grad_spatial(g, x, a)
    return {"clone": lambda: x.clone(), "spatial_pool": lambda: ops.spatial_pool(x),
            "gate_descriptor": lambda: ops.gate_descriptor(x, a),
            "gate_apply": lambda: ops.gate_apply(x, a, s),
            "grad_spatial": lambda: ops.grad_spatial(g, x, a),
            "grad_channel": lambda: ops.grad_channel(g, x, a, s, ddesc, desc, tie_inv),
            "grad_input": lambda: ops.grad_input(g, x, a, s, ddesc, desc, tie_inv, avg, peak, argmax)}


def block_steps(channels: int, side: int) -> dict:
    """A CBAM block's training step (forward + backward) and serving forward, fused and on torch's ops."""
    x = torch.rand(BATCH, channels, side, side, side).contiguous(memory_format=CL)
    steps = {}
    for name, fused in (("fused", True), ("torch", False)):
        torch.manual_seed(0)
        block = CBAM(channels)
        set_fused_kernels(block, fused)
        leaf = x.clone().requires_grad_()

        def train(block=block, leaf=leaf) -> None:
            block(leaf).sum().backward()

        def serve(block=block) -> None:
            with torch.no_grad():
                block.eval()(x)
            block.train()

        steps[f"train {name}"], steps[f"serve {name}"] = train, serve
    return steps


def mix_steps() -> dict:
    from naslung.models.blocks.fft_conv import fft_length

    full = [fft_length(32, 7)] * 3
    spectra = torch.fft.rfftn(torch.rand(BATCH, 2, 32, 32, 32), s=full, dim=(2, 3, 4))
    filters = torch.fft.rfftn(torch.rand(1, 2, 7, 7, 7), s=full, dim=(2, 3, 4))
    ops = cbam_ops()
    return {"fused": lambda: ops.spectrum_mix(spectra, filters, False),
            "torch": lambda: spectra[:, :1] * filters[:, 0] + spectra[:, 1:2] * filters[:, 1]}


def measure(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    ops = cbam_ops()
    if ops is None:
        raise SystemExit("the fused CBAM kernels are unavailable (NASLUNG_FUSED=0, or they did not build)")
    print(f"dispatch {dispatch_isa()}, {args.threads} threads, batch {BATCH}, {args.rounds} rounds, ms")
    for channels, side in SHAPES:
        ms = {k: 1000 * v for k, v in interleave(kernel_steps(ops, channels, side), args.rounds).items()}
        cells = "  ".join(f"{k} {v:.2f}" for k, v in ms.items())
        print(f"{channels:3d} ch {side}^3 kernels: {cells}", flush=True)
        ms = {k: 1000 * v for k, v in interleave(block_steps(channels, side), args.rounds).items()}
        print(f"{channels:3d} ch {side}^3 CBAM: train {ms['train fused']:.1f} vs {ms['train torch']:.1f} "
              f"({ms['train torch'] / ms['train fused']:.2f}x), serve {ms['serve fused']:.2f} vs "
              f"{ms['serve torch']:.2f} ({ms['serve torch'] / ms['serve fused']:.2f}x)", flush=True)
    with torch.no_grad():
        ms = {k: 1000 * v for k, v in interleave(mix_steps(), args.rounds).items()}
    ratio = ms["torch"] / ms["fused"]
    print(f"spectrum mix, 32^3 gate: {ms['fused']:.2f} vs {ms['torch']:.2f} ({ratio:.2f}x)")


def main() -> None:
    kernel_benchmark_main(__doc__, measure, threads=2, rounds=9)


if __name__ == "__main__":
    main()
