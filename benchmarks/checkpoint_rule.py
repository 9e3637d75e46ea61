"""Checkpoint rule on the DEVELOPMENT folds: the epoch picked by inner validation against the last epoch.

A finished run keeps two sets of weights: ``best.pt`` (the epoch ``select_metric`` picked on the inner
validation split) and ``last.pt`` (the state after the last epoch, its EMA shadow when the recipe averages
weights). This script predicts each run's test fold with both, as training evaluates it (centre crop, the
run's TTA setting), so one cv folder compares the two rules without training anything again. With
``--views`` it also compares test-time views for the picked weights: none, the default 8 (3-D) / 4 (2-D)
axis flips, and those flips times the 4 axial rotations that training's ``rot90`` augmentation draws from.

    python benchmarks/checkpoint_rule.py --runs runs/dev3d [--runs runs/dev2d] [--views]

Prints per fold the picked epoch and both rules' accuracy / F1 / AUC, then mean +- sample std over folds.
Folds 1-5 are refused: the rule must be frozen before those are looked at.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn

    from naslung.train.rundir import RunDir

PAPER_TEST_FOLDS = {1, 2, 3, 4, 5}
METRICS = ("accuracy", "f1", "auc")


def _last_weights(run: RunDir) -> tuple[nn.Module, int]:
    """The evaluated network after the last epoch: the EMA shadow when there is one, else the raw weights."""
    from naslung.models.factory import model_from_config
    from naslung.train.checkpoint import load_checkpoint

    state = load_checkpoint(run.last)
    model = model_from_config(state["model_config"])
    ema = state.get("ema")
    model.load_state_dict(ema["shadow"] if ema else state["model"])
    return model.eval(), int(state["epoch"])


def _rotation_probabilities(model: nn.Module, images: torch.Tensor, size: int,
                            channels_last: bool) -> np.ndarray:
    """Mean malignancy probability ``(N,)`` over the axis flips times the 4 axial rotations of the centre
    crops of ``images`` ``(N, *S)``.

    Rotating the stored crop before :func:`predict_proba` takes its centre window rotates that window, as
    long as the in-plane margin ``S - size`` is even (it is checked), so each rotation is one serving-path
    prediction with its flips.
    """
    import torch

    from naslung.train.inference import predict_proba

    margins = {s - size for s in images.shape[-2:]}
    if len(margins) != 1 or margins.pop() % 2:
        raise SystemExit(f"in-plane crop {tuple(images.shape[-2:])} around {size}: the rotated centre "
                         "window would move; the rotation views need square crops with even margins")
    probs = [predict_proba(model, torch.rot90(images, k, dims=(-2, -1)), size, 128, channels_last, True)
             for k in range(4)]
    return np.mean(probs, axis=0)


def compare(run_folder: Path, views: bool = False) -> list[dict[str, Any]]:
    """One row per finished fold run of ``run_folder``: picked epoch, last epoch, both rules' metrics."""
    import torch

    from naslung.fingerprint import load_dataset
    from naslung.metrics import binary_metrics
    from naslung.train.checkpoint import load_model
    from naslung.train.inference import predict_proba
    from naslung.train.rundir import finished_runs

    rows = []
    datasets: dict[Path, Any] = {}
    for run in finished_runs(run_folder):
        config = run.read_config()
        result = run.read_result()
        fold = int(config["test_fold"])
        if fold in PAPER_TEST_FOLDS:
            raise SystemExit(f"{run.path}: test fold {fold} is one of the paper's test folds 1-5; "
                             "choose the checkpoint rule on development folds only")
        options = config["config"]
        channels_last, tta = bool(options.get("channels_last")), bool(options.get("tta"))
        source = Path(config["dataset"]["source"])
        dataset = datasets.get(source) or datasets.setdefault(source, load_dataset(source))
        test = np.flatnonzero(np.asarray(dataset.fold) == fold)
        images = torch.from_numpy(np.ascontiguousarray(dataset.images[test], dtype=np.float32))
        labels = np.asarray(dataset.labels, dtype=np.int64)[test]

        row: dict[str, Any] = {"run": str(run.path), "fold": fold, "picked_epoch": int(result["epoch"])}
        picked, (last, row["last_epoch"]) = load_model(run.path), _last_weights(run)
        probs = {"picked": predict_proba(picked, images, dataset.size, 128, channels_last, tta),
                 "last": predict_proba(last, images, dataset.size, 128, channels_last, tta)}
        if views:  # the picked rule's prediction is already one of the views: the run's own TTA setting
            probs["no TTA"] = (predict_proba(picked, images, dataset.size, 128, channels_last, False)
                               if tta else probs["picked"])
            probs["flips"] = (probs["picked"] if tta else
                              predict_proba(picked, images, dataset.size, 128, channels_last, True))
            probs["flips x rot90"] = _rotation_probabilities(picked, images, dataset.size, channels_last)
        row.update({name: binary_metrics(labels, (prob >= 0.5).astype(np.int64), prob)
                    for name, prob in probs.items()})
        rows.append(row)
    return rows


def _mean_std(values: list[float]) -> str:
    a = 100.0 * np.asarray(values, dtype=np.float64)
    return f"{a.mean():.2f} ± {a.std(ddof=1):.2f}" if a.size > 1 else f"{a.mean():.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, action="append", required=True,
                        help="a cv folder (or a run) trained on development folds; repeatable")
    parser.add_argument("--views", action="store_true", help="also compare test-time views (picked weights)")
    args = parser.parse_args()
    for folder in args.runs:
        rows = compare(folder, args.views)
        print(f"\n{folder}: {len(rows)} runs")
        print(f"{'fold':>4} {'picked':>6} {'last':>4}  " + "  ".join(
            f"{r}:{m}" for r in ("picked", "last") for m in METRICS))
        for row in rows:
            cells = "  ".join(f"{100 * row[r][m]:.2f}" for r in ("picked", "last") for m in METRICS)
            print(f"{row['fold']:>4} {row['picked_epoch']:>6} {row['last_epoch']:>4}  {cells}")
        for rule in ("picked", "last"):
            print(f"{rule:>8}: " + ", ".join(f"{m} {_mean_std([r[rule][m] for r in rows])}" for m in METRICS))
        if args.views:
            print("test-time views, picked weights, mean +- std over folds:")
            for name in ("no TTA", "flips", "flips x rot90"):
                print(f"{name:>14}: " + ", ".join(f"{m} {_mean_std([r[name][m] for r in rows])}"
                                                  for m in METRICS))


if __name__ == "__main__":
    main()
