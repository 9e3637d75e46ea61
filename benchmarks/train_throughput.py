"""Training throughput (samples/s) on CPU, batch 32, 32^3 crops of 36^3 stored cubes (DESIGN.md section 5).

Every variant runs a full training step (batched crop+flip, forward_features, A-Softmax, backward, Adam) of
the same architecture in the same process, and is compared with plain eager fp32 (7^3 CBAM kernel run as
a conv module, contiguous memory) of that architecture. Variants are interleaved step by step (each round
times one step of every variant, in a rotating order), so load from other processes hits all of them alike;
the figure is the median over the timed steps, and the ratio is taken against the eager median.

A variant is ``eager`` or ``+``-joined tokens:

* ``fft``: CBAM's spatial-gate conv through the FFT (:mod:`naslung.models.blocks.fft_conv`; the same
  model and numbers; naslung's default on CPU). Without it the gate runs as a conv module;
* ``k3``: CBAM spatial kernel 3^3 instead of 7^3 (changes the model: fewer parameters and MACs);
* ``cl``: ``channels_last_3d`` model and input (batch norms below 8 channels then train through
  :mod:`naslung.models.blocks.batchnorm`, as in naslung's training);
* ``bf16``: ``torch.autocast("cpu", torch.bfloat16)`` around the forward (needs AVX512-BF16 or AMX to pay);
* ``compile``: ``torch.compile(forward_features, dynamic=False)`` (inductor; needs a C++ compiler);
* ``fused``: CBAM, and batch norm + ReLU below 8 channels in ``cl``, on naslung's fused C++ kernels
  (:mod:`naslung.models.kernels`; compiled on first use). Without it they run on torch's ops, so ``eager``
  and every variant without ``fused`` are torch's path.

``--isa avx2`` (or ``both``) reruns the whole benchmark in a child process with ``ONEDNN_MAX_CPU_ISA=AVX2
ATEN_CPU_CAPABILITY=avx2``, so that torch, oneDNN and the fused kernels dispatch as on an AVX2-only CPU.

The thread count is set once per section (default 1 thread; ``--threads 2 1``: a section on 2 threads, then
one on 1 thread, each with its own interleaved eager baseline). Switching the thread count between steps is
avoided, and on a loaded 2-core machine a 2-thread section with bf16 stalled (oversubscribed OpenMP
threads). The 1-thread section also prints its eager rate relative to the previous
section's eager rate (not interleaved): two 1-thread jobs side by side beat one 2-thread job when that ratio
exceeds 0.5.

Run: ``python benchmarks/train_throughput.py [--rounds 6] [--archs ...] [--variants eager k3 k3+cl ...]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch
from _isa import add_isa_argument, run_isa

from naslung.allocator import keep_freed_memory
from naslung.losses import build_criterion
from naslung.models import build_model
from naslung.models.blocks.cbam import set_spatial_fft
from naslung.models.kernels.switch import set_fused_kernels
from naslung.models.machine import cpu_isa, device_name, dispatch_isa
from naslung.train.augment import random_crop_flip

ARCHS = ("[4,4,[4,4],[4,8],[8,8]]", "[4,4,[16,32],[32,64],[64,128]]")
TOKENS = ("fft", "k3", "cl", "bf16", "compile", "fused")
#: ``fft+cl+fused`` is naslung's default training path on CPU (TrainConfig defaults).
DEFAULT_VARIANTS = ("eager", "fft+cl", "fft+cl+fused", "k3+cl", "fft+cl+bf16")


def parse_variant(name: str) -> set[str]:
    """``"k3+cl"`` -> ``{"k3", "cl"}``; ``"eager"`` -> ``set()``. Unknown tokens raise ``ValueError``."""
    tokens = set() if name == "eager" else set(name.split("+"))
    unknown = tokens - set(TOKENS)
    if unknown:
        valid = ", ".join(TOKENS)
        raise ValueError(f"unknown variant tokens {sorted(unknown)} in {name!r}; valid: eager, {valid}")
    return tokens


def machine_line(allocator_kept: bool) -> str:
    """One line naming the machine, its instruction set, load, torch, threads and allocator setting.

    Like training and serving, the benchmarks keep freed memory in the process (:mod:`naslung.allocator`;
    every variant, eager included, runs with it). ``NASLUNG_MALLOC=default`` measures glibc's defaults.
    """
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{device_name('cpu')} ({platform.machine()}, {os.cpu_count()} CPUs, ISA {cpu_isa() or '?'}), "
            f"load {load:.2f}, torch {torch.__version__}, {torch.get_num_threads()} threads by default, "
            f"allocator {'keeps freed memory' if allocator_kept else 'default'}")


def make_step(arch: str, variant: str, batch: int = 32, size: int = 32,
              margin: int = 2) -> Callable[[], float]:
    """A closure running one training step of ``variant``; returns its wall time in seconds."""
    tokens = parse_variant(variant)
    torch.manual_seed(0)
    model = build_model(arch, cbam_kernel=3 if "k3" in tokens else 7)
    set_spatial_fft(model, "fft" in tokens)
    set_fused_kernels(model, "fused" in tokens)
    criterion = build_criterion("asoftmax", model)
    model.train()
    criterion.train()
    fmt = torch.channels_last_3d if "cl" in tokens else torch.contiguous_format
    model = model.to(memory_format=fmt)
    features = model.forward_features
    if "compile" in tokens:
        features = torch.compile(features, dynamic=False)
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if "bf16" in tokens else nullcontext
    opt = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(0)
    data = torch.rand(256, *([size + 2 * margin] * 3), generator=gen)
    labels = torch.randint(0, 2, (256,), generator=gen)

    def step() -> float:
        idx = torch.randint(0, 256, (batch,), generator=gen)
        t0 = time.perf_counter()
        x = random_crop_flip(data[idx], size, gen, max_shift=margin).contiguous(memory_format=fmt)
        with autocast():
            feats = features(x)
        loss = criterion(feats.float(), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    return step


def augment_ms(batch: int = 32, size: int = 32, margin: int = 2, repeats: int = 50) -> float:
    """Milliseconds per batched crop+flip of ``batch`` cubes (to check it is not the bottleneck)."""
    gen = torch.Generator().manual_seed(0)
    data = torch.rand(batch, *([size + 2 * margin] * 3))
    t0 = time.perf_counter()
    for _ in range(repeats):
        random_crop_flip(data, size, gen)
    return 1000 * (time.perf_counter() - t0) / repeats


def run_arch(arch: str, variants: list[str], rounds: int, warmup: int = 2) -> list[tuple[str, float, float]]:
    """``[(variant, samples/s, ratio to eager)]`` for one architecture, interleaved."""
    steps: dict[str, Callable[[], float]] = {}
    for v in ["eager", *[v for v in variants if v != "eager"]]:
        try:
            steps[v] = make_step(arch, v)
            for _ in range(warmup):  # warm-up (and compilation)
                steps[v]()
        except Exception as exc:  # e.g. no C++ compiler for torch.compile
            print(f"{arch:32s} {v:14s} failed: {type(exc).__name__}: {str(exc)[:80]}", flush=True)
            steps.pop(v, None)
    times: dict[str, list[float]] = {v: [] for v in steps}
    names = list(steps)
    for r in range(rounds):
        for v in names[r % len(names):] + names[:r % len(names)]:  # rotate the order round by round
            times[v].append(steps[v]())
    base = 32 / statistics.median(times["eager"])
    return [(v, 32 / statistics.median(ts), 32 / statistics.median(ts) / base) for v, ts in times.items()]


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--rounds", type=int, default=8, help="timed steps per variant")
    parser.add_argument("--archs", nargs="+", default=list(ARCHS))
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS))
    parser.add_argument("--threads", nargs="+", type=int, default=[1],
                        help="one section per thread count, e.g. --threads 2 1 (default 1: on a shared "
                        "2-core machine the 2-thread section can stall)")
    add_isa_argument(parser)
    args = parser.parse_args()
    for v in args.variants:
        parse_variant(v)
    run_isa(args.isa, lambda: measure(args))


def measure(args: argparse.Namespace) -> None:
    """The benchmark itself, in this process (:func:`_isa.run_isa` calls it)."""
    print(machine_line(keep_freed_memory()), f"dispatch {dispatch_isa()}")  # as training does
    print(f"training step, batch 32, 32^3 crops of 36^3, A-Softmax + Adam; batched crop+flip of 32 cubes: "
          f"{augment_ms():.2f} ms")
    print(f"{'architecture':32s} {'threads':>7s} {'variant':14s} {'samples/s':>10s} {'vs eager':>9s}")
    for arch in args.archs:
        first_eager = None
        for threads in args.threads:
            torch.set_num_threads(threads)
            for v, rate, ratio in run_arch(arch, args.variants, args.rounds):
                note = ""
                if v == "eager":
                    if first_eager is None:
                        first_eager = (threads, rate)
                    elif threads != first_eager[0]:
                        rel = rate / first_eager[1]
                        note = f"  ({rel:.2f}x eager on {first_eager[0]} threads, not interleaved)"
                print(f"{arch:32s} {threads:7d} {v:14s} {rate:10.1f} {ratio:8.2f}x{note}", flush=True)


if __name__ == "__main__":
    main()
