"""A whole training fold: ``naslung train``'s trainer against the reference code's own training loop.

    python benchmarks/reference_fold.py --ref PATH --data FILE [--fold 0] [--epochs 10] [--threads 2]
        [--batch-size 32] [--workers 0] [--isa native|avx2|both]

``PATH`` is a user's checkout of the public reference repository (fei-hdu/NAS-Lung). From it, at run
time, come its ``ConvRes`` network, ``AngleLoss``, its ``lunanod`` dataset (which reads one ``.npy`` per
nodule) and its ``transforms`` (random crop with padding, three flips, zero-out, normalise); nothing of it is
copied here. Its ``transforms`` module calls ``torch.cuda.set_device(0)`` on import, which fails without a
GPU, so that call is a no-op while it imports.

``FILE`` is a naslung 3-D dataset (``naslung data prepare``). Both sides train Model-1 on the same nodules:
everything outside test fold ``--fold``. The reference loop is ``mainsp.py``'s (A-Softmax, Adam 2e-4 with
betas 0.5/0.999; each epoch trains on every non-test nodule, then predicts the test fold without
``no_grad``, as its ``test()`` does), fed with the central 32^3 of each naslung crop written as ``.npy``
files. Its ``main.py`` defaults to batch 1; ``--batch-size`` (default 32, naslung's) sets both sides' batch,
``--ref-batch-size`` the reference's alone. naslung runs :func:`naslung.train.engine.fit` into a temporary
run folder, as ``naslung train --data FILE --test-fold K --epochs E`` does: the inner train/validation
split, augmentation, validation and checkpoints every epoch, EMA, and the test fold predicted once with
test-time flips at the end. naslung's side therefore trains on fewer nodules per epoch (its validation share
is held out) and does more besides; the ratio is of wall time per fold, as a user of each waits for it.

The two run one after the other in one process (reference first), each once: the machine's load hits them
at different times, so rerun on a quiet machine before trusting a ratio. Prints figures only; never a test.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _isa import add_isa_argument, run_isa
from reference import import_reference

from naslung.data.dataset import NoduleDataset, load_dataset
from naslung.models.machine import device_name, dispatch_isa
from naslung.train.config import TrainConfig
from naslung.train.engine import fit

MODEL1 = ("[4,4,[4,4],[4,8],[8,8]]", [[4, 4], [4, 8], [8, 8]])


def import_reference_data(path: Path) -> tuple[type, object]:
    """``(lunanod, transforms)`` from the reference checkout at ``path`` (already on ``sys.path``)."""
    set_device = torch.cuda.set_device
    torch.cuda.set_device = lambda *_args, **_kwargs: None  # its transforms.py selects GPU 0 on import
    try:
        import transforms  # type: ignore[import-not-found]
        from dataloader import lunanod  # type: ignore[import-not-found]
    finally:
        torch.cuda.set_device = set_device
    if not Path(transforms.__file__).resolve().is_relative_to(path):
        raise SystemExit(f"{path}: 'transforms' was imported from {transforms.__file__}, not the checkout")
    return lunanod, transforms


def central_crops(ds: NoduleDataset, rows: np.ndarray) -> np.ndarray:
    """The central 32^3 of each crop in ``rows``, ``(len(rows), 32, 32, 32)`` float32."""
    m = (ds.images.shape[1] - 32) // 2
    return np.asarray(ds.images[rows, m:m + 32, m:m + 32, m:m + 32], dtype=np.float32)


def write_npy_crops(crops: np.ndarray, rows: np.ndarray, folder: Path) -> list[str]:
    """Each of ``crops`` as ``folder/<row>.npy`` (the reference's file layout); the file names."""
    names = [f"{int(row)}.npy" for row in rows]
    for crop, name in zip(crops, names, strict=True):
        np.save(folder / name, crop)
    return names


def reference_fold(ref: Path, ds: NoduleDataset, train_rows: np.ndarray, test_rows: np.ndarray, epochs: int,
                   batch_size: int, workers: int) -> tuple[float, float]:
    """Wall seconds of the reference's loop (``epochs`` x train + test) and its last test accuracy."""
    conv_res, angle_loss = import_reference(ref)
    lunanod, transforms = import_reference_data(ref)
    with tempfile.TemporaryDirectory(prefix="naslung-ref-fold-") as tmp:
        folder = Path(tmp)
        train_crops, test_crops = central_crops(ds, train_rows), central_crops(ds, test_rows)
        train_names = write_npy_crops(train_crops, train_rows, folder)
        test_names = write_npy_crops(test_crops, test_rows, folder)
        pixels = np.concatenate([train_crops, test_crops])  # mainsp.py: over every file of the folder
        mean, std = float(pixels.mean()), float(pixels.std())
        del pixels, train_crops, test_crops
        train_tf = transforms.Compose([transforms.RandomCrop(32, padding=4),
                                       transforms.RandomHorizontalFlip(), transforms.RandomYFlip(),
                                       transforms.RandomZFlip(), transforms.ZeroOut(4), transforms.ToTensor(),
                                       transforms.Normalize(mean, std)])
        test_tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
        train_set = lunanod(str(folder), train_names, [int(ds.labels[r]) for r in train_rows],
                            [0.0] * len(train_names), train=True, transform=train_tf)
        test_set = lunanod(str(folder), test_names, [int(ds.labels[r]) for r in test_rows],
                           [0.0] * len(test_names), train=False, transform=test_tf)
        train_loader = torch.utils.data.DataLoader(train_set, batch_size=batch_size, shuffle=True,
                                                   num_workers=workers)
        test_loader = torch.utils.data.DataLoader(test_set, batch_size=batch_size, shuffle=False,
                                                  num_workers=workers)
        torch.manual_seed(0)
        random.seed(0)
        net = conv_res(MODEL1[1])
        criterion = angle_loss()
        optimizer = torch.optim.Adam(net.parameters(), lr=2e-4, betas=(0.5, 0.999))
        accuracy = float("nan")
        t0 = time.perf_counter()
        for _ in range(epochs):
            net.train()
            for inputs, targets, _feat in train_loader:
                optimizer.zero_grad()
                loss = criterion(net(inputs), targets)
                loss.backward()
                optimizer.step()
            net.eval()
            correct = total = 0
            for inputs, targets, _feat in test_loader:
                outputs = net(inputs)  # as its test(): no torch.no_grad
                criterion(outputs, targets)
                correct += int((outputs[0].data.argmax(1) == targets).sum())
                total += len(targets)
            accuracy = correct / max(total, 1)
        return time.perf_counter() - t0, accuracy


def naslung_fold(ds: NoduleDataset, fold: int, epochs: int, batch_size: int,
                 threads: int) -> tuple[float, float, int]:
    """Wall seconds of ``fit`` (as ``naslung train`` runs it), its test accuracy and its training rows."""
    config = TrainConfig(arch=MODEL1[0], epochs=epochs, batch_size=batch_size, device="cpu",
                         num_threads=threads)
    with tempfile.TemporaryDirectory(prefix="naslung-fold-") as tmp:
        t0 = time.perf_counter()
        result = fit(ds, config, test_fold=fold, out_dir=Path(tmp) / "run")
        seconds = time.perf_counter() - t0
    assert result.test_metrics is not None
    return seconds, float(result.test_metrics["accuracy"]), result.split["train"]


def measure(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    ds = load_dataset(args.data)
    if ds.spatial_dims != 3:
        raise SystemExit(f"{args.data}: a 3-D dataset is needed (the reference code is 3-D), got 2-D crops")
    test_rows = np.flatnonzero(ds.fold == args.fold)
    train_rows = np.flatnonzero(ds.fold != args.fold)
    if test_rows.size == 0:
        raise SystemExit(f"{args.data}: no nodule in test fold {args.fold}")
    ref_batch = args.ref_batch_size or args.batch_size
    print(f"{device_name('cpu')}; kernels: {dispatch_isa()}; {args.threads} threads; Model-1; "
          f"{args.epochs} epochs; test fold {args.fold} ({test_rows.size} nodules)", flush=True)
    ref_s, ref_acc = reference_fold(args.ref.expanduser().resolve(), ds, train_rows, test_rows, args.epochs,
                                    ref_batch, args.workers)
    ours_s, ours_acc, ours_train = naslung_fold(ds, args.fold, args.epochs, args.batch_size, args.threads)
    ref_ms = 1000 * ref_s / (args.epochs * train_rows.size)
    ours_ms = 1000 * ours_s / (args.epochs * ours_train)
    print(f"{'':10s} {'batch':>5s} {'train rows':>10s} {'fold s':>8s} {'ms/sample-epoch':>16s} "
          f"{'test acc':>9s}")
    rows = (("reference", ref_batch, train_rows.size, ref_s, ref_ms, ref_acc),
            ("naslung", args.batch_size, ours_train, ours_s, ours_ms, ours_acc))
    for name, batch, n, seconds, ms, acc in rows:
        print(f"{name:10s} {batch:5d} {n:10d} {seconds:8.1f} {ms:16.2f} {100 * acc:8.2f}%")
    print(f"whole fold: naslung {ref_s / ours_s:.2f}x faster; per training sample-epoch "
          f"{ref_ms / ours_ms:.2f}x", flush=True)


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--ref", type=Path, required=True, help="a checkout of fei-hdu/NAS-Lung")
    parser.add_argument("--data", type=Path, required=True, help="a naslung 3-D dataset (.h5)")
    # a development fold: this prints test accuracy on every run, and folds 1-5 are reported once only
    parser.add_argument("--fold", type=int, default=0, help="test fold (default 0, a development fold)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32, help="both sides' batch (default 32)")
    parser.add_argument("--ref-batch-size", type=int, default=None,
                        help="the reference's batch alone (its main.py's default is 1)")
    parser.add_argument("--workers", type=int, default=0, help="the reference DataLoader's worker processes")
    add_isa_argument(parser)
    args = parser.parse_args()
    run_isa(args.isa, lambda: measure(args))


if __name__ == "__main__":
    main()
