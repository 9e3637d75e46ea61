"""Training throughput (samples/s) on CPU, batch 32, 32^3 crops of 36^3 stored cubes (DESIGN.md section 5).

Every variant runs the trainer's real step (batched crop+flip, forward_features, A-Softmax, backward, Adam)
in the same process. Variants are interleaved round by round (each round times a few steps of every
variant), so load from other processes hits all of them alike; the figure is the median over all timed
steps. Run: ``python benchmarks/train_throughput.py [--rounds 3] [--steps 4] [--variants ...] [--archs ...]``.
``compile`` (torch.compile, inductor) is opt-in: it needs a C++ compiler and minutes of compilation.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch

from naslung.train.augment import random_crop_flip
from naslung.train.config import TrainConfig
from naslung.train.engine import build

ARCHS = ("[4,4,[4,4],[4,8],[8,8]]", "[4,4,[16,16],[32,32],[64,64]]")
VARIANTS = ("eager", "eager-1thread", "channels_last", "channels_last-1thread", "bf16", "compile")
DEFAULT_VARIANTS = ("eager", "eager-1thread", "channels_last", "channels_last-1thread", "bf16")


def make_step(arch: str, variant: str, batch: int = 32, size: int = 32,
              margin: int = 2) -> Callable[[], float]:
    """A closure running one training step of ``variant``; returns its wall time in seconds."""
    torch.manual_seed(0)
    model, criterion = build(TrainConfig(arch=arch), spatial_dims=3)
    model.train()
    criterion.train()
    fmt = torch.channels_last_3d if variant.startswith("channels_last") else torch.contiguous_format
    model = model.to(memory_format=fmt)
    features = torch.compile(model.forward_features) if variant == "compile" else model.forward_features
    opt = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(0)
    data = torch.rand(256, *([size + 2 * margin] * 3), generator=gen)
    labels = torch.randint(0, 2, (256,), generator=gen)
    threads = 1 if variant.endswith("1thread") else torch.get_num_threads()

    def step() -> float:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            idx = torch.randint(0, 256, (batch,), generator=gen)
            t0 = time.perf_counter()
            x = random_crop_flip(data[idx], size, gen).contiguous(memory_format=fmt)
            with torch.autocast("cpu", dtype=torch.bfloat16) if variant == "bf16" else nullcontext():
                feats = features(x)
            loss = criterion(feats.float(), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return time.perf_counter() - t0
        finally:
            torch.set_num_threads(before)

    return step


def augment_ms(batch: int = 32, size: int = 32, margin: int = 2, repeats: int = 50) -> float:
    """Milliseconds per batched crop+flip of ``batch`` cubes (to check it is not the bottleneck)."""
    gen = torch.Generator().manual_seed(0)
    data = torch.rand(batch, *([size + 2 * margin] * 3))
    t0 = time.perf_counter()
    for _ in range(repeats):
        random_crop_flip(data, size, gen)
    return 1000 * (time.perf_counter() - t0) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per variant and round")
    parser.add_argument("--archs", nargs="+", default=list(ARCHS))
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=VARIANTS)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads by default, batch 32, "
          f"32^3 crops of 36^3, fp32 unless noted")
    print(f"batched crop+flip of 32 cubes: {augment_ms():.2f} ms")
    for arch in args.archs:
        steps = {}
        for v in args.variants:
            try:
                steps[v] = make_step(arch, v)
                for _ in range(2):  # warm-up (and compilation)
                    steps[v]()
            except Exception as exc:  # e.g. no C++ compiler for torch.compile
                print(f"{arch:32s} {v:22s} failed: {type(exc).__name__}: {str(exc)[:80]}")
                steps.pop(v, None)
        times: dict[str, list[float]] = {v: [] for v in steps}
        for _ in range(args.rounds):
            for v, step in steps.items():
                times[v].extend(step() for _ in range(args.steps))
        base = 32 / statistics.median(times["eager"]) if "eager" in times else None
        for v, ts in times.items():
            rate = 32 / statistics.median(ts)
            rel = f"x{rate / base:.2f}" if base else ""
            print(f"{arch:32s} {v:22s} {rate:8.1f} samples/s  {rel}", flush=True)


if __name__ == "__main__":
    main()
