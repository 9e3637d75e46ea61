"""How far a ratio against the reference code can go: each network's arithmetic at this CPU's measured
multiply-add rate.

    python benchmarks/compute_floor.py --ref PATH [--threads 2] [--rounds 8] [--isa native|avx2|both]

``PATH`` is a checkout of the public reference repository (fei-hdu/NAS-Lung), imported at run time as
``benchmarks/reference.py`` does; nothing of it is copied here.

The machine's rate is the best of three measured fp32 multiply-add rates at ``--threads`` threads: a 1536^3
matrix product, and two wide convolutions through oneDNN (64 -> 64 and 32 -> 32 channels, 3^3, batch 32, at
16^3), the kinds of work that reach a core's FMA peak. Then, for Model-1 and the mid model, batch 32:

* each network's convolution and linear multiply-adds per sample (forward hooks counting what
  :func:`naslung.models.cost.count_macs` counts): the reference's all of them (its CBAM gate is a 3^3 conv),
  naslung's without CBAM's 7^3 spatial gates, which its serving path runs through FFTs (so naslung's floor
  is, generously, below what it must do);
* the reference's and naslung's inference (ms per nodule, interleaved rounds, medians) and the rate each
  reaches on its own arithmetic;
* naslung's floor: its arithmetic at the machine's rate, ignoring every memory pass (CBAM's pooling and
  products, batch norm, ReLU, the FFTs), and the largest ratio against the reference that floor allows; and
  the rate naslung would need for 3x.

A training step does about three times a forward's arithmetic (forward, input gradient, weight gradient), so
the same ceiling holds for training, with the reference's training time. Prints figures only; never a test.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from _timing import interleave
from reference import (
    MODELS,
    inference_step,
    naslung_train_step,
    reference_arguments,
    reference_train_step,
    run_against_reference,
)
from torch import nn

from naslung.allocator import keep_freed_memory
from naslung.models import build_model
from naslung.models.blocks.cbam import direct_spatial_conv
from naslung.models.cost import layer_macs
from naslung.models.fast import eval_model, serving_channels_last
from naslung.models.machine import device_name, dispatch_isa
from naslung.train.inference import format_input


def best_rate(step: Callable[[], object], macs: int, rounds: int) -> float:
    """Multiply-adds per second of ``step`` (``macs`` each call), its best of ``rounds`` after warm-up."""
    step()
    step()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - t0)
    return macs / best


def machine_rate(rounds: int) -> dict[str, float]:
    """Measured fp32 multiply-add rates (per second): a matrix product and two wide oneDNN convolutions."""
    n = 1536
    a, b = torch.rand(n, n), torch.rand(n, n)
    rates = {"matmul 1536^3": best_rate(lambda: a @ b, n ** 3, rounds)}
    for c in (64, 32):
        conv = nn.Conv3d(c, c, 3, padding=1, bias=False).eval()
        x = torch.rand(32, c, 16, 16, 16)
        with torch.no_grad():
            rates[f"conv {c}->{c} 3^3 at 16^3"] = best_rate(lambda conv=conv, x=x: conv(x),
                                                            32 * 16 ** 3 * c * c * 27, rounds)
    return rates


def forward_macs(model: nn.Module, x: torch.Tensor, skip: Callable[[str], bool] = lambda name: False) -> int:
    """Conv and linear multiply-adds of one forward of ``x`` per sample, modules named ``skip`` left out."""
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        total += layer_macs(module, inputs, output)  # what count_macs counts (the reference's own head: 0)

    handles = [m.register_forward_hook(hook) for name, m in model.named_modules() if not skip(name)]
    try:
        with torch.no_grad(), direct_spatial_conv(model):
            model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return total // x.shape[0]


def main() -> None:
    run_against_reference(reference_arguments(__doc__).parse_args(), measure)


def measure(args: argparse.Namespace, conv_res: type, angle_loss: type) -> None:
    """The benchmark itself, in this process (:func:`_isa.run_isa` calls it)."""
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    rates = machine_rate(args.rounds)
    peak = max(rates.values())
    print(f"{device_name('cpu')}, dispatch {dispatch_isa()}, torch {torch.__version__}, "
          f"{args.threads} threads")
    print("  measured rates: " + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in rates.items())
          + f" GMAC/s; the machine's rate: {peak / 1e9:.1f} GMAC/s")
    gen = torch.Generator().manual_seed(0)
    x32 = torch.rand(32, 1, 32, 32, 32, generator=gen)
    y32 = torch.randint(0, 2, (32,), generator=gen)
    for name, (arch, config) in MODELS.items():
        torch.manual_seed(0)
        ref = conv_res(config)
        net = build_model(arch)
        ref_macs = forward_macs(ref, x32[:2])
        own_macs = forward_macs(net, x32[:2], skip=lambda n: n.endswith("spatial.conv"))
        ref.train()
        train = interleave({"ref": reference_train_step(ref, angle_loss(), x32, y32),
                            "naslung": naslung_train_step(arch, x32, y32, fused=True)}, args.rounds)
        ref.eval()
        served_cl = serving_channels_last(True, 3)
        served = eval_model(net.eval(), channels_last=served_cl)
        infer = interleave({"ref": inference_step(ref, x32),
                            "naslung": inference_step(served, format_input(x32, served_cl))}, args.rounds)
        floor = own_macs / peak
        print(f"{name}: multiply-adds per sample: reference {ref_macs / 1e6:.1f} M, naslung without its 7^3 "
              f"gates {own_macs / 1e6:.1f} M; naslung's floor {1000 * floor:.3f} ms per sample")
        for label, t, passes in (("inference, batch 32", infer, 1), ("training step, batch 32", train, 3)):
            ref_s, own_s = t["ref"] / 32, t["naslung"] / 32
            need = passes * own_macs / (ref_s / 3)
            print(f"  {label}: reference {1000 * ref_s:.3f} ms per sample "
                  f"({passes * ref_macs / ref_s / 1e9:.1f} GMAC/s), naslung {1000 * own_s:.3f} ms "
                  f"({passes * own_macs / own_s / 1e9:.1f} GMAC/s); "
                  f"ratio now {ref_s / own_s:.2f}x, at most {ref_s / (passes * floor):.2f}x at the floor; "
                  f"3x needs {need / 1e9:.1f} GMAC/s ({100 * need / peak:.0f} % of the machine's rate)",
                  flush=True)


if __name__ == "__main__":
    main()
