"""CPU inference engines side by side: naslung's torch serving path, ONNX Runtime and OpenVINO.

    python benchmarks/engines.py [--threads 2] [--rounds 20] [--isa native|avx2|both]

For Model-1, the mid model ``[4,4,[16,32],[32,64],[64,128]]`` and a 9-member Model-1 ensemble (probabilities
averaged), at batch 1 (ms) and batch 32 (ms per nodule), 32^3 inputs, BN statistics from a few training
batches (so that folding is realistic), the same ONNX file (``naslung.models.onnx.export_onnx``) for both
ONNX engines, rounds interleaved in a rotating order, medians. Each engine's output is checked against the
torch path first (max absolute difference of the logits printed).

OpenVINO (PyPI ``openvino``, run by :class:`naslung.models.onnx.OpenVinoRunner`) is optional: without it its
column reads ``-``. Its CPU plugin carries its own oneDNN and returns empty outputs under
``ONEDNN_MAX_CPU_ISA``, so under ``--isa avx2`` the runner refuses and the column reads ``-`` too.
Prints figures only; never a test.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _isa import add_isa_argument, run_isa
from _timing import interleave

from naslung.allocator import keep_freed_memory
from naslung.models import MODEL_1, build_model
from naslung.models.fast import eval_model, serving_channels_last
from naslung.models.machine import device_name, dispatch_isa
from naslung.models.onnx import OnnxRunner, OpenVinoRunner, export_onnx
from naslung.train.inference import format_input

MID = "[4,4,[16,32],[32,64],[64,128]]"


def _trained_like(arch: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(arch)
    with torch.no_grad():
        model.train()(torch.randn(8, 1, 32, 32, 32))
    return model.eval()


def _openvino(path: Path, threads: int) -> OpenVinoRunner | None:
    """naslung's OpenVINO runner, or None where openvino is missing or refuses (``ONEDNN_MAX_CPU_ISA``)."""
    try:
        return OpenVinoRunner(path, threads=threads)
    except (ImportError, RuntimeError) as exc:
        print(f"openvino: not measured ({exc})")
        return None


def _engines(models: list[torch.nn.Module], folder: Path, threads: int) -> dict[str, Callable]:
    """``{engine: f(x numpy) -> mean probability (B,)}`` for the members ``models``."""
    channels_last = serving_channels_last(True, 3)  # the serving path of a 3-D run
    served = [eval_model(m, channels_last=channels_last) for m in models]
    files = [export_onnx(m, folder / f"m{i}.onnx") for i, m in enumerate(models)]
    ort = [OnnxRunner(f, threads=threads) for f in files]
    first = _openvino(files[0], threads)  # says once why OpenVINO is not measured
    ovs = [first, *(_openvino(f, threads) for f in files[1:])] if first is not None else []

    def torch_path(x: np.ndarray) -> np.ndarray:
        t = format_input(torch.from_numpy(x), channels_last)
        with torch.inference_mode():
            return np.mean([torch.softmax(m(t), dim=1)[:, 1].numpy() for m in served], axis=0)

    engines: dict[str, Callable] = {
        "torch": torch_path, "onnxruntime": lambda x: np.mean([r.predict_proba(x) for r in ort], axis=0)}
    if ovs and all(ovs):
        engines["openvino"] = lambda x: np.mean([r.predict_proba(x) for r in ovs], axis=0)
    return engines


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=20)
    add_isa_argument(parser)
    args = parser.parse_args()
    run_isa(args.isa, lambda: measure(args))


def measure(args: argparse.Namespace) -> None:
    """The benchmark itself, in this process (:func:`_isa.run_isa` calls it)."""
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    print(f"{device_name('cpu')}, dispatch {dispatch_isa()}, torch {torch.__version__}, "
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
                ms = interleave({k: (lambda f=f, x=x: f(x)) for k, f in engines.items()}, rounds, warmup=3)
                scale = 1000 / (1 if batch == "1" else 32)
                cells = [f"{scale * ms[e]:12.2f}" if e in ms else f"{'-':>12s}"
                         for e in ("torch", "onnxruntime", "openvino")]
                print(f"{name:12s} {batch:>5s} " + " ".join(cells)
                      + ("   " + ", ".join(f"{k} {v:.1e}" for k, v in diff.items() if k != "torch")
                         if batch == "1" else ""), flush=True)


if __name__ == "__main__":
    main()
