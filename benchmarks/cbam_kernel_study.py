"""Why the 3^3 CBAM kernel fails with A-Softmax in 3-D: short runs on a DEVELOPMENT fold, side by side.

Each variant is (CBAM spatial kernel, loss, channels_last, embedding). Every run trains Model-1 with
TrainConfig's defaults otherwise, single-threaded, on the inner split of the folds other than ``--fold``, and
prints the inner-validation accuracy per epoch, the test metrics of the development fold, and the mean norm
of the embedding (the input of the head) over that fold::

    python benchmarks/cbam_kernel_study.py --data PHANTOM-3D.h5 --fold 0 --epochs 6 --jobs 2

Folds 1-5 are refused: they are the paper's test folds. The cause, and the ``linear`` embedding that removes
it, are in :mod:`naslung.models.factory` and docs/explanation.md ("The recipe and the embedding").
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

VARIANTS = {"k3-asoftmax": (3, "asoftmax", True, "relu"),
            "k3-asoftmax-contiguous": (3, "asoftmax", False, "relu"),
            "k7-asoftmax": (7, "asoftmax", False, "relu"), "k3-softmax": (3, "softmax", False, "relu"),
            "k3-asoftmax-linear": (3, "asoftmax", True, "linear")}


def _run(task: tuple[str, str, int, int, str]) -> dict[str, Any]:
    name, data, fold, epochs, out = task
    import numpy as np
    import torch

    from naslung.data.dataset import load_dataset
    from naslung.train.augment import center_crop
    from naslung.train.config import TrainConfig
    from naslung.train.engine import fit
    from naslung.train.rundir import RunDir

    torch.set_num_threads(1)
    kernel, loss, channels_last, embedding = VARIANTS[name]
    ds = load_dataset(data)
    config = TrainConfig(arch="[4,4,[4,4],[4,8],[8,8]]", epochs=epochs, cbam_kernel=kernel, loss=loss,
                         channels_last=channels_last, embedding=embedding, num_threads=1, device="cpu")
    t0 = time.perf_counter()
    result = fit(ds, config, test_fold=fold, out_dir=Path(out) / name, resume=True)
    from naslung.serving.runs import load_run_model

    model = load_run_model(RunDir(Path(out) / name).path).model.eval()
    rows = np.flatnonzero(np.asarray(ds.fold) == fold)
    with torch.no_grad():
        x = center_crop(torch.as_tensor(np.asarray(ds.images[rows])), ds.size)
        norm = float(model.forward_features(x).norm(dim=1).mean())
    test = result.test_metrics or {}
    return {"variant": name, "seconds": round(time.perf_counter() - t0), "chosen_epoch": result.epoch,
            "val_accuracy": [round(100 * h["val"]["accuracy"], 1) for h in result.history],
            "test": {k: round(100 * test[k], 1) for k in ("accuracy", "sensitivity", "f1", "auc")},
            "embedding_norm": round(norm, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", default="runs/cbam-kernel-study")
    args = parser.parse_args()
    if args.fold in {1, 2, 3, 4, 5}:
        parser.error(f"--fold {args.fold} is one of the paper's test folds 1-5; use 0 or 6-9")
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; valid: {', '.join(VARIANTS)}")
    tasks = [(n, args.data, args.fold, args.epochs, args.out) for n in names]
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        for row in pool.map(_run, tasks):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
