"""CPU inference engines side by side: naslung's torch serving path, ONNX Runtime and OpenVINO.

    python benchmarks/engines.py [--threads 2] [--rounds 20] [--isa native|avx2|both]

For Model-1, the mid model ``[4,4,[16,32],[32,64],[64,128]]`` and a 9-member Model-1 ensemble (probabilities
averaged), at batch 1 (ms) and batch 32 (ms per nodule), 32^3 inputs, BN statistics from a few training
batches (so that folding is realistic), the same ONNX file (``naslung.models.onnx.export_onnx``) for both
ONNX engines, rounds interleaved in a rotating order, medians. Each engine's output is checked against the
torch path first (max absolute difference of the logits printed).

OpenVINO (PyPI ``openvino``) is optional: without it its column reads ``-``. Its CPU plugin carries its own
oneDNN; ``--isa avx2`` caps torch, oneDNN and ONNX Runtime's MLAS through the environment, but OpenVINO may
still pick its kernels from the CPU's own flags, so an AVX2 column of OpenVINO on an AVX-512 machine is not
an AVX2 CPU's figure. Prints figures only; never a test.
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
from _isa import add_isa_argument, dispatched_isa, run_for_isa

from naslung.allocator import keep_freed_memory
from naslung.models import MODEL_1, build_model
from naslung.models.fast import eval_model
from naslung.models.machine import device_name
from naslung.models.onnx import OnnxRunner, export_onnx

MID = "[4,4,[16,32],[32,64],[64,128]]"


def _trained_like(arch: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(arch)
    with torch.no_grad():
        model.train()(torch.randn(8, 1, 32, 32, 32))
    return model.eval()


def _openvino(path: Path, threads: int) -> Callable[[np.ndarray], np.ndarray] | None:
    try:
        import openvino as ov
    except ImportError:
        return None
    core = ov.Core()
    compiled = core.compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                     "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()

    def run(x: np.ndarray) -> np.ndarray:
        return next(iter(request.infer({0: x}).values()))

    return run


def _engines(models: list[torch.nn.Module], folder: Path, threads: int) -> dict[str, Callable]:
    """``{engine: f(x numpy) -> mean probability (B,)}`` for the members ``models``."""
    served = [eval_model(m) for m in models]
    files = [export_onnx(m, folder / f"m{i}.onnx") for i, m in enumerate(models)]
    ort = [OnnxRunner(f, threads=threads) for f in files]
    ovs = [_openvino(f, threads) for f in files]

    def softmax1(logits: np.ndarray) -> np.ndarray:
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e[:, 1] / e.sum(axis=1)

    def torch_path(x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(x)
        with torch.inference_mode():
            return np.mean([torch.softmax(m(t), dim=1)[:, 1].numpy() for m in served], axis=0)

    engines: dict[str, Callable] = {"torch": torch_path,
                                    "onnxruntime": lambda x: np.mean([softmax1(r(x)) for r in ort], axis=0)}
    if all(ovs):
        engines["openvino"] = lambda x: np.mean([softmax1(r(x)) for r in ovs], axis=0)
    return engines


def _interleave(steps: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    for step in steps.values():
        for _ in range(3):
            step()
    times: dict[str, list[float]] = {k: [] for k in steps}
    names = list(steps)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=20)
    add_isa_argument(parser)
    args = parser.parse_args()
    if not run_for_isa(args.isa):
        return
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    print(f"{device_name('cpu')}, dispatch {dispatched_isa()}, torch {torch.__version__}, "
          f"{args.threads} threads")
    cases = {"Model-1": [_trained_like(MODEL_1, 0)], "mid": [_trained_like(MID, 0)],
             "9 x Model-1": [_trained_like(MODEL_1, s) for s in range(9)]}
    gen = np.random.default_rng(0)
    x32 = gen.random((32, 1, 32, 32, 32), dtype=np.float32)
    x1 = x32[:1].copy()
    header = " ".join(f"{e:>12s}" for e in ("torch", "onnxruntime", "openvino"))
    print(f"{'models':12s} {'batch':>5s} {header}   (ms; per nodule at batch 32; max |p - p_torch|)")
    with tempfile.TemporaryDirectory() as tmp:
        for name, models in cases.items():
            folder = Path(tmp) / name.replace(" ", "")
            folder.mkdir()
            engines = _engines(models, folder, args.threads)
            reference = engines["torch"](x32)
            diff = {}
            for k, f in engines.items():
                diff[k] = float(np.abs(f(x32) - reference).max())
            for batch, x in (("1", x1), ("32", x32)):
                rounds = args.rounds if batch == "1" else max(3, args.rounds // 4)
                ms = _interleave({k: (lambda f=f, x=x: f(x)) for k, f in engines.items()}, rounds)
                scale = 1000 / (1 if batch == "1" else 32)
                cells = [f"{scale * ms[e]:12.2f}" if e in ms else f"{'-':>12s}"
                         for e in ("torch", "onnxruntime", "openvino")]
                print(f"{name:12s} {batch:>5s} " + " ".join(cells)
                      + ("   " + ", ".join(f"{k} {v:.1e}" for k, v in diff.items() if k != "torch")
                         if batch == "1" else ""), flush=True)
    if args.isa == "both":
        run_for_isa("avx2")


if __name__ == "__main__":
    main()
