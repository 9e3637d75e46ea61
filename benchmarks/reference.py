"""naslung against the public NAS-Lung reference code, side by side in one process, interleaved.

    python benchmarks/reference.py --ref PATH [--threads 2] [--rounds 8] [--isa native|avx2|both]

``PATH`` is a user's checkout of the public reference repository (fei-hdu/NAS-Lung, the folder holding
``models/cnn_res.py``). Its ``ConvRes`` network and ``AngleLoss`` are imported from there at run time; nothing
of it is copied here. Its ``net_sphere`` imports ``dill`` without using it for these classes; when ``dill`` is
not installed an empty stand-in module is registered so that the import succeeds.

For Model-1 ``[4,4,[4,4],[4,8],[8,8]]`` and the mid model ``[4,4,[16,32],[32,64],[64,128]]`` (the reference's
``ConvRes(config=[[4,4],[4,8],[8,8]])`` and ``[[16,32],[32,64],[64,128]]``), each round times one step of each
variant in a rotating order, so load from other processes hits them alike; figures are medians:

* training step, batch 32, 32^3 inputs, A-Softmax + Adam: the reference as its ``main.py`` trains (eager fp32,
  contiguous) against naslung's default training path (``channels_last_3d``, FFT gates, the fused kernels of
  :mod:`naslung.models.kernels`) and the same path with the fused kernels off (torch's ops only);
* inference, batch 32 (ms per nodule) and batch 1 (ms): the reference in eval mode under ``torch.no_grad``
  against naslung's serving path (:func:`naslung.models.fast.eval_model`).

The reference's CBAM uses a 3^3 spatial kernel, a softmax channel gate and ``sp_out * x + x``; naslung's is
the paper's (7^3, sigmoid, eq. 1). The two networks therefore differ slightly in work; the ratios compare what
a user of each runs. Prints ratios only; never a test.
"""

from __future__ import annotations

import argparse
import sys
import types
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from _isa import add_isa_argument, run_isa
from _timing import interleave

from naslung.allocator import keep_freed_memory
from naslung.losses import build_criterion
from naslung.models import build_model
from naslung.models.fast import eval_model, serving_channels_last
from naslung.models.kernels.switch import set_fused_kernels
from naslung.models.machine import device_name, dispatch_isa
from naslung.train.inference import format_input

MODELS = {"Model-1": ("[4,4,[4,4],[4,8],[8,8]]", [[4, 4], [4, 8], [8, 8]]),
          "mid": ("[4,4,[16,32],[32,64],[64,128]]", [[16, 32], [32, 64], [64, 128]])}


def import_reference(path: Path) -> tuple[type, type]:
    """``(ConvRes, AngleLoss)`` from a checkout of the reference repository at ``path``."""
    if not (path / "models" / "cnn_res.py").is_file():
        raise SystemExit(f"{path}: not a NAS-Lung checkout (models/cnn_res.py is missing)")
    try:
        import dill  # noqa: F401
    except ImportError:
        sys.modules["dill"] = types.ModuleType("dill")
    sys.path.insert(0, str(path))
    warnings.filterwarnings("ignore", module="models.net_sphere")  # its deprecated uint8 indexing, every step
    warnings.filterwarnings("ignore", message="indexing with dtype torch.uint8")
    from models.cnn_res import ConvRes  # type: ignore[import-not-found]
    from models.net_sphere import AngleLoss  # type: ignore[import-not-found]

    return ConvRes, AngleLoss


def reference_train_step(model: torch.nn.Module, loss_fn: torch.nn.Module, x: torch.Tensor,
                         y: torch.Tensor) -> Callable[[], None]:
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)

    def step() -> None:
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def naslung_train_step(arch: str, x: torch.Tensor, y: torch.Tensor, fused: bool) -> Callable[[], None]:
    torch.manual_seed(0)
    model = build_model(arch).to(memory_format=torch.channels_last_3d)
    set_fused_kernels(model, fused)
    criterion = build_criterion("asoftmax", model)
    model.train()
    criterion.train()
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    x = x.contiguous(memory_format=torch.channels_last_3d)

    def step() -> None:
        loss = criterion(model.forward_features(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def inference_step(model: Callable[[torch.Tensor], object], x: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        with torch.no_grad():
            model(x)

    return step


def reference_arguments(doc: str) -> argparse.ArgumentParser:
    """The command line of a side-by-side benchmark (``doc`` its help): ``--ref``, ``--threads``,
    ``--rounds`` and ``--isa``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", type=Path, required=True, help="a checkout of fei-hdu/NAS-Lung")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=8)
    add_isa_argument(parser)
    return parser


def run_against_reference(args: argparse.Namespace,
                          measure: Callable[[argparse.Namespace, type, type], None]) -> None:
    """``measure(args, ConvRes, AngleLoss)`` with the reference of ``args.ref``, as ``--isa`` asks."""
    conv_res, angle_loss = import_reference(args.ref.expanduser().resolve())
    run_isa(args.isa, lambda: measure(args, conv_res, angle_loss))


def main() -> None:
    parser = reference_arguments(__doc__)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    run_against_reference(parser.parse_args(), measure)


def measure(args: argparse.Namespace, conv_res: type, angle_loss: type) -> None:
    """The benchmark itself, in this process (:func:`_isa.run_isa` calls it)."""
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # every variant, the reference included
    print(f"{device_name('cpu')}, dispatch {dispatch_isa()}, torch {torch.__version__}, "
          f"{args.threads} threads, {args.rounds} interleaved rounds")
    gen = torch.Generator().manual_seed(0)
    x32 = torch.rand(32, 1, 32, 32, 32, generator=gen)
    y32 = torch.randint(0, 2, (32,), generator=gen)
    x1 = x32[:1].clone()
    print(f"{'model':8s} {'measure':34s} {'reference':>10s} {'naslung':>10s} {'ratio':>7s}  (torch ops only)")
    for name in args.models:
        arch, config = MODELS[name]
        torch.manual_seed(0)
        ref = conv_res(config)
        ref.train()
        train = interleave({"ref": reference_train_step(ref, angle_loss(), x32, y32),
                            "naslung": naslung_train_step(arch, x32, y32, fused=True),
                            "torch-ops": naslung_train_step(arch, x32, y32, fused=False)}, args.rounds)
        ref.eval()
        served_cl = serving_channels_last(True, 3)  # the serving path of a 3-D run
        served = eval_model(build_model(arch).eval(), channels_last=served_cl)
        inference = {}
        for batch, x in (("32", x32), ("1", x1)):
            steps = {"ref": inference_step(ref, x),
                     "naslung": inference_step(served, format_input(x, served_cl))}
            inference[batch] = interleave(steps, args.rounds * (4 if batch == "1" else 1))
        rows = [("training step, ms per sample, batch 32", {k: 1000 * v / 32 for k, v in train.items()}),
                ("inference, ms per nodule, batch 32",
                 {k: 1000 * v / 32 for k, v in inference["32"].items()}),
                ("inference, ms, batch 1", {k: 1000 * v for k, v in inference["1"].items()})]
        for label, ms in rows:
            extra = ""
            if "torch-ops" in ms:
                extra = f"  ({ms['torch-ops']:.2f} ms, {ms['ref'] / ms['torch-ops']:.2f}x)"
            print(f"{name:8s} {label:34s} {ms['ref']:10.2f} {ms['naslung']:10.2f} "
                  f"{ms['ref'] / ms['naslung']:6.2f}x{extra}", flush=True)


if __name__ == "__main__":
    main()
