"""Inference speed on CPU (DESIGN.md section 5): batch-1 latency and batched nodules/s, 32^3 inputs.

For Model-1 and for a 9-member ensemble (nine Model-1 weights, seeds 0-8, probabilities averaged), each path
is compared with plain eager fp32 of the same model(s), in the same process, interleaved round by round:

* ``eager``: ``model.eval()`` under ``torch.inference_mode``, CBAM's spatial gates run as conv modules and
  every conv on torch's own kernel choice (the baseline);
* ``folded``: batch norm folded into the convs (:func:`naslung.models.fuse.fold_batchnorm`);
* ``folded+cl``: the same in ``channels_last_3d``;
* ``+fft``: the spatial gates through the FFT (:mod:`naslung.models.blocks.fft_conv`);
* ``serving``: naslung's serving path on CPU, :func:`naslung.models.fast.eval_model` itself: ``folded+fft``,
  in ``channels_last_3d`` (:func:`naslung.models.fast.serving_channels_last`), one-sample 3-D convs on
  oneDNN (:mod:`naslung.models.blocks.conv`), cached gate spectra;
* the ``folded*`` rows run every conv on torch's own kernel choice, so they show what each step adds;
* ``onnxruntime``: the file of ``naslung export --onnx`` run by ONNX Runtime (:class:`OnnxRunner`),
  with as many threads as torch.

Figures are medians over rounds. Run: ``python benchmarks/inference.py [--rounds 5] [--kernel 7]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _isa import add_isa_argument, run_isa

from naslung.allocator import keep_freed_memory
from naslung.models import MODEL_1, build_model
from naslung.models.blocks.cbam import set_spatial_fft
from naslung.models.blocks.conv import set_onednn_at_batch1
from naslung.models.fast import eval_model, serving_channels_last
from naslung.models.fuse import fold_batchnorm
from naslung.models.machine import dispatch_isa

PATHS = ("eager", "folded", "folded+cl", "folded+fft", "folded+fft+cl", "serving", "onnxruntime")


def _members(n: int, kernel: int) -> list[torch.nn.Module]:
    models = []
    for seed in range(n):
        torch.manual_seed(seed)
        model = build_model(MODEL_1, cbam_kernel=kernel)
        with torch.no_grad():  # realistic BN statistics
            model.train()(torch.randn(16, 1, 32, 32, 32))
        set_spatial_fft(model, False)  # the eager baseline runs the gate as its conv module
        set_onednn_at_batch1(model, False)  # ... and every conv on torch's own kernel choice
        models.append(model.eval())
    return models


def make_predictors(models: list[torch.nn.Module], tmp: Path) -> dict[str, Callable[[torch.Tensor], object]]:
    """``{path: f(x) -> mean probability of the members}`` for each path that can run here."""

    def torch_path(ms: list[torch.nn.Module], cl: bool) -> Callable[[torch.Tensor], object]:
        def run(x: torch.Tensor) -> torch.Tensor:
            if cl:
                x = x.contiguous(memory_format=torch.channels_last_3d)
            with torch.inference_mode():
                return sum(torch.softmax(m(x), dim=1)[:, 1] for m in ms) / len(ms)

        return run

    cl = torch.channels_last_3d
    folded = [fold_batchnorm(m) for m in models]
    folded_cl = [fold_batchnorm(m).to(memory_format=cl) for m in models]
    folded_fft = [fold_batchnorm(m) for m in models]
    folded_fft_cl = [fold_batchnorm(m).to(memory_format=cl) for m in models]
    serving_cl = serving_channels_last(True, 3)  # the serving path of a 3-D run
    serving = [set_onednn_at_batch1(eval_model(m, channels_last=serving_cl), True) for m in models]
    for m in folded_fft + folded_fft_cl + serving:
        set_spatial_fft(m, True)  # the members' gates were switched off for the eager baseline
    out = {"eager": torch_path(models, False), "folded": torch_path(folded, False),
           "folded+cl": torch_path(folded_cl, True), "folded+fft": torch_path(folded_fft, False),
           "folded+fft+cl": torch_path(folded_fft_cl, True), "serving": torch_path(serving, serving_cl)}
    try:
        from naslung.models.onnx import OnnxRunner, export_onnx

        runners = [OnnxRunner(export_onnx(m, tmp / f"m{i}.onnx"), threads=torch.get_num_threads())
                   for i, m in enumerate(models)]

        def ort(x: torch.Tensor) -> np.ndarray:
            arr = x.numpy()
            return sum(r.predict_proba(arr) for r in runners) / len(runners)

        out["onnxruntime"] = ort
    except ImportError as exc:
        print(f"onnxruntime path skipped: {exc}")
    return out


def bench(predictors: dict[str, Callable[[torch.Tensor], object]], batch: int, calls: int,
          rounds: int) -> dict[str, float]:
    """Median ms per call of each predictor on a ``(batch, 1, 32, 32, 32)`` input, interleaved."""
    x = torch.randn(batch, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    ref = np.asarray(predictors["eager"](x), dtype=np.float64)
    for name, f in predictors.items():  # warm-up, and a sanity check that every path agrees
        f(x)
        diff = np.abs(np.asarray(f(x), dtype=np.float64) - ref).max()
        if diff > 1e-4:
            raise RuntimeError(f"{name} differs from eager by {diff:.2e}")
    times: dict[str, list[float]] = {name: [] for name in predictors}
    names = list(predictors)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            for _ in range(calls):
                predictors[name](x)
            times[name].append(1000 * (time.perf_counter() - t0) / calls)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--kernel", type=int, default=7, choices=(3, 7), help="CBAM spatial kernel")
    parser.add_argument("--members", type=int, default=9)
    add_isa_argument(parser)
    args = parser.parse_args()
    run_isa(args.isa, lambda: measure(args))


def measure(args: argparse.Namespace) -> None:
    """The benchmark itself, in this process (:func:`_isa.run_isa` calls it)."""
    from train_throughput import machine_line

    print(machine_line(keep_freed_memory()), f"dispatch {dispatch_isa()}")  # as serving does
    print(f"inference, Model-1 {MODEL_1} (CBAM kernel {args.kernel}), 32^3 inputs, fp32; ms are medians "
          f"of {args.rounds} interleaved rounds")
    print(f"{'models':12s} {'path':12s} {'batch-1 ms':>11s} {'vs eager':>9s} {'batch-32 nodules/s':>19s} "
          f"{'vs eager':>9s}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, args.members):
            models = _members(n, args.kernel)
            predictors = make_predictors(models, Path(tmp))
            b1 = bench(predictors, 1, max(2, 20 // n), args.rounds)
            b32 = bench(predictors, 32, 1, args.rounds)
            label = "Model-1" if n == 1 else f"{n}-ensemble"
            for name in predictors:
                rate = 32000 / b32[name]
                print(f"{label:12s} {name:12s} {b1[name]:11.2f} {b1['eager'] / b1[name]:8.2f}x "
                      f"{rate:19.1f} {b32['eager'] / b32[name]:8.2f}x", flush=True)


if __name__ == "__main__":
    main()
