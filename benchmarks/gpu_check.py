"""GPU check of naslung's fast paths: what they buy, and how far their numbers move from eager fp32.

For Model-1 ``[4,4,[4,4],[4,8],[8,8]]`` and ``[4,4,[16,32],[32,64],[64,128]]`` (A-Softmax head, 7^3 CBAM):

* **training**: samples/s of one full training step (forward_features, A-Softmax in float32, backward,
  AdamW) at batch 32 on 32^3 inputs already on the device (no augmentation), for ``eager`` fp32,
  ``cl`` (``channels_last_3d``), ``amp`` (bf16 autocast around the forward, as ``TrainConfig.amp`` does on
  CUDA; on CPU it is inactive, as in training) and ``amp+cl``. The variants are interleaved step by step in
  a rotating order in one process; the figure is the median over the timed steps, and the ratio is to the
  eager median.
* **deviation**: from the same weights and batch, the max abs difference of the features, the loss and every
  gradient of each fast variant from eager fp32 ("eager fp32" is what torch runs by default: on a GPU its
  convolutions may use TF32, printed in the header).
* **inference**: batch-1 latency (median ms) and batched nodules/s of the eager eval model and of the
  serving path ``naslung.models.fast.eval_model`` (BN folded, ``channels_last_3d``), and the max abs
  difference of its logits from the eager eval model's.

It prints figures only (no assertions about speed). It needs torch and numpy and naslung's source
(``PYTHONPATH=src``), nothing else of naslung's dependencies. ``--device cpu --quick`` runs a small version
anywhere (a test does so).

Run: ``PYTHONPATH=src python3 benchmarks/gpu_check.py [--device cuda] [--rounds 20] [--quick]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

ARCHS = ("[4,4,[4,4],[4,8],[8,8]]", "[4,4,[16,32],[32,64],[64,128]]")
VARIANTS = ("eager", "cl", "amp", "amp+cl")


@dataclass(frozen=True)
class Settings:
    """What one check runs: the device, the shapes and how many steps are timed."""

    device: torch.device
    batch: int = 32
    size: int = 32
    eval_batch: int = 128
    rounds: int = 20
    warmup: int = 3
    latency_repeats: int = 50


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def header(s: Settings) -> str:
    """Lines naming the device, torch and the settings that change the numbers."""
    from naslung.models.fast import bf16_supported
    from naslung.train.epoch import amp_applies

    if s.device.type == "cuda":
        name = torch.cuda.get_device_name(s.device)
        cap = ".".join(map(str, torch.cuda.get_device_capability(s.device)))
        extra = (f"compute capability {cap}, CUDA {torch.version.cuda}, "
                 f"cuDNN {torch.backends.cudnn.version()}, "
                 f"cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, "
                 f"matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}, "
                 f"cudnn.benchmark={torch.backends.cudnn.benchmark}")
    else:
        from naslung.models.machine import cpu_isa, device_name

        name, extra = device_name("cpu"), f"ISA {cpu_isa() or '?'}, {torch.get_num_threads()} threads"
    return (f"device: {name} ({s.device.type}); torch {torch.__version__}; {extra}\n"
            f"amp (bf16 autocast) active: {amp_applies(True, s.device) and bf16_supported(s.device)}; "
            f"batch {s.batch}, {s.size}^3 inputs, "
            f"{s.rounds} timed steps per variant after {s.warmup} warm-up steps")


class Variant:
    """One training variant: its own copy of the model (same initial weights), criterion and optimiser."""

    def __init__(self, arch: str, name: str, s: Settings) -> None:
        from naslung.losses import build_criterion
        from naslung.models import build_model
        from naslung.models.fast import to_channels_last
        from naslung.train.epoch import amp_applies

        tokens = set() if name == "eager" else set(name.split("+"))
        self.name, self.device, self.cl = name, s.device, "cl" in tokens
        self.amp = amp_applies("amp" in tokens, s.device)  # what TrainConfig.amp does: CUDA only
        torch.manual_seed(0)
        model = build_model(arch).to(s.device)
        self.model: nn.Module = to_channels_last(model, 3) if self.cl else model  # type: ignore[assignment]
        self.criterion = build_criterion("asoftmax", self.model).to(s.device)
        self.model.train()
        self.criterion.train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3, betas=(0.5, 0.999), weight_decay=0.01)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        from naslung.models.fast import to_channels_last

        return to_channels_last(x, 3) if self.cl else x.contiguous()  # type: ignore[return-value]

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features (B, F) float32, loss)`` of one forward, autocast around the forward only."""
        from naslung.models.fast import autocast

        with autocast(self.device, enabled=self.amp):
            features = self.model.forward_features(self.inputs(x))
        features = features.float()
        return features, self.criterion(features, y)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One timed training step; seconds."""
        sync(self.device)
        t0 = time.perf_counter()
        _, loss = self.loss(x, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        sync(self.device)
        return time.perf_counter() - t0


def batch_of(s: Settings, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, s.size, s.size, s.size, generator=gen)
    y = torch.randint(0, 2, (n,), generator=gen)
    return x.to(s.device), y.to(s.device)


def deviations(arch: str, s: Settings) -> dict[str, dict[str, float]]:
    """Max abs difference of features, loss and gradients of each fast variant from eager fp32."""
    x, y = batch_of(s, s.batch, seed=1)
    grads: dict[str, list[torch.Tensor]] = {}
    outs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name in VARIANTS:
        v = Variant(arch, name, s)
        features, loss = v.loss(x, y)
        loss.backward()
        outs[name] = (features.detach(), loss.detach())
        grads[name] = [p.grad.detach().float().contiguous() for p in v.model.parameters()]
    ref_f, ref_l = outs["eager"]
    result = {}
    for name in VARIANTS[1:]:
        f, loss = outs[name]
        result[name] = {
            "features": float((f - ref_f).abs().max()),
            "loss": float((loss - ref_l).abs()),
            "grads": max(float((a - b).abs().max())
                         for a, b in zip(grads[name], grads["eager"], strict=True)),
            "grad_scale": max(float(b.abs().max()) for b in grads["eager"]),
        }
    return result


def train_rates(arch: str, s: Settings) -> list[tuple[str, float, float]]:
    """``[(variant, samples/s, ratio to eager)]``, the variants interleaved step by step."""
    x, y = batch_of(s, s.batch, seed=2)
    variants = {name: Variant(arch, name, s) for name in VARIANTS}
    for v in variants.values():
        for _ in range(s.warmup):
            v.step(x, y)
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(s.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate the order round by round
            times[name].append(variants[name].step(x, y))
    rate = {name: s.batch / statistics.median(ts) for name, ts in times.items()}
    return [(name, rate[name], rate[name] / rate["eager"]) for name in names]


def inference(arch: str, s: Settings) -> dict[str, Any]:
    """Batch-1 latency and batched nodules/s of the eager eval model and of ``eval_model``; their logits'
    max abs difference."""
    from naslung.models import build_model
    from naslung.models.fast import eval_model, to_channels_last
    from naslung.models.latency import time_forward

    torch.manual_seed(0)
    model = build_model(arch).to(s.device)
    with torch.no_grad():  # non-trivial batch-norm statistics, so that folding is exercised
        for _ in range(3):
            model.train()(batch_of(s, 8, seed=3)[0])
    model.eval()
    served = eval_model(model, channels_last=True)
    paths: dict[str, tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]] = {
        "eager eval": (model, lambda t: t.contiguous()),
        "eval_model": (served, lambda t: to_channels_last(t, 3)),  # type: ignore[dict-item]
    }
    out: dict[str, Any] = {}
    x1, xb = batch_of(s, 1, seed=4)[0], batch_of(s, s.eval_batch, seed=5)[0]
    for name, (net, fmt) in paths.items():
        one = time_forward(net, fmt(x1), warmup=10, repeats=s.latency_repeats)
        many = time_forward(net, fmt(xb), warmup=3, repeats=max(5, s.latency_repeats // 5))
        out[name] = {"batch1_ms": one["median_ms"],
                     "nodules_per_s": 1000.0 * s.eval_batch / many["median_ms"]}
    with torch.inference_mode():
        diff = served(to_channels_last(xb, 3)) - model(xb)
    out["eval_model_max_abs_logit_diff"] = float(diff.abs().max())
    return out


def run(archs: tuple[str, ...], s: Settings) -> dict[str, Any]:
    """Every figure for every architecture, printed as it comes; returns them as a dict."""
    print(header(s), flush=True)
    report: dict[str, Any] = {}
    for arch in archs:
        t0 = time.perf_counter()
        rates = train_rates(arch, s)
        devs = deviations(arch, s)
        inf = inference(arch, s)
        report[arch] = {"train": {n: {"samples_per_s": r, "vs_eager": q} for n, r, q in rates},
                        "deviation": devs, "inference": inf}
        print(f"\n{arch}  (checked in {time.perf_counter() - t0:.1f} s)")
        print(f"  {'training':10s} {'samples/s':>10s} {'vs eager':>9s}   max |diff| vs eager fp32: "
              f"{'features':>9s} {'loss':>9s} {'grads':>9s} (grad scale)")
        for name, rate, ratio in rates:
            d = devs.get(name)
            diff = (f"{d['features']:9.2e} {d['loss']:9.2e} {d['grads']:9.2e} ({d['grad_scale']:.1e})" if d
                    else f"{'-':>9s} {'-':>9s} {'-':>9s}")
            print(f"  {name:10s} {rate:10.1f} {ratio:8.2f}x   {' ' * 25}{diff}")
        print(f"  {'inference':10s} {'batch-1 ms':>10s} {f'nodules/s @{s.eval_batch}':>18s}")
        for name in ("eager eval", "eval_model"):
            print(f"  {name:10s} {inf[name]['batch1_ms']:10.3f} {inf[name]['nodules_per_s']:18.1f}")
        print(f"  eval_model max |logit diff| vs eager eval: {inf['eval_model_max_abs_logit_diff']:.2e}",
              flush=True)
    return report


def main(argv: list[str] | None = None) -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--rounds", type=int, default=20, help="timed training steps per variant")
    parser.add_argument("--archs", nargs="+", default=list(ARCHS))
    parser.add_argument("--quick", action="store_true",
                        help="a small check (batch 4, 16^3, 2 rounds, few timings), e.g. on CPU in a test")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's; 1 with --quick on CPU, where a loaded "
                        "machine stalls oversubscribed threads)")
    parser.add_argument("--no-tf32", action="store_true",
                        help="strict fp32 convs and matmuls on CUDA (by default cuDNN may use TF32)")
    parser.add_argument("--json", action="store_true", help="also print every figure as one JSON line")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    threads = args.threads
    if threads is None and args.quick and device.type == "cpu":
        threads = 1
    if threads is not None:
        torch.set_num_threads(threads)
    if args.no_tf32:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    if args.quick:
        s = Settings(device, batch=4, size=16, eval_batch=8, rounds=2, warmup=1, latency_repeats=5)
    else:
        s = Settings(device, rounds=args.rounds)
    t0 = time.perf_counter()
    report = run(tuple(args.archs), s)
    print(f"\ntotal {time.perf_counter() - t0:.1f} s")
    if args.json:
        print(json.dumps({"device": str(device), "torch": torch.__version__, "report": report}))


if __name__ == "__main__":
    main()
