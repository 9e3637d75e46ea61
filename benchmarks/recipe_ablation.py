"""Ablation of the training recipe on the DEVELOPMENT folds only (never the paper's test folds 1-5).

Each variant is a set of ``TrainConfig`` overrides; every (variant, test fold) pair trains one run under the
leak-free protocol (inner validation split picks the epoch, the development test fold is predicted once),
and the diameter-only logistic regression is fitted on the same split. All variants share ``split_seed``,
so they train and validate on the same nodules. Runs go to ``--out/<variant>/fold_<K>`` and resume.

    python benchmarks/recipe_ablation.py --data PHANTOM-3D.h5 --folds 0,6 --epochs 16 --jobs 2

Prints mean +- sample std over folds of accuracy, F1 and AUC per variant, the diameter baseline, and the
wall time. Folds 1-5 are refused: the recipe must be frozen before those are looked at. Once it is,
``--report --variants default --folds 1,2,3,4,5`` reports TrainConfig's defaults there.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

PAPER_TEST_FOLDS = {1, 2, 3, 4, 5}

RECIPE: dict[str, Any] = {
    "lr": 1e-3, "lr_schedule": "cosine", "warmup_epochs": 1.0, "weight_decay": 0.01,
    "rot90": True, "intensity": 0.03, "noise_std": 0.01, "tta": True, "ema_decay": 0.99,
    "class_balance": True,
}
NO_AUG = {"rot90": False, "intensity": 0.0, "noise_std": 0.0}

VARIANTS: dict[str, dict[str, Any]] = {
    # TrainConfig's defaults as they stand: the frozen recipe (the only variant allowed on folds 1-5).
    "default": {},
    # The paper's optimiser at a constant 2e-4, crop+flip only, SphereFace's lambda constants.
    "paper": {"lambda_schedule": "sphereface"},
    "recipe": RECIPE,
    "recipe-no-extra-aug": {**RECIPE, **NO_AUG},
    # CBAM's 3^3 spatial kernel: 2-4x faster training (benchmarks/train_throughput.py), but see
    # docs/explanation.md.
    "recipe-cbam3": {**RECIPE, "cbam_kernel": 3},
    "recipe-no-ema-tta": {**RECIPE, "ema_decay": None, "tta": False},
    "recipe-constant-lr": {**RECIPE, "lr": 2e-4, "lr_schedule": "constant", "warmup_epochs": 0.0},
    # CBAM's spatial kernel x what the pooling reads (naslung.models.factory, "The embedding"), written out
    # in full so that they mean the same whatever the defaults are.
    "k7-relu": {"cbam_kernel": 7, "embedding": "relu"},
    "k7-linear": {"cbam_kernel": 7, "embedding": "linear"},
    "k3-relu": {"cbam_kernel": 3, "embedding": "relu"},
    "k3-linear": {"cbam_kernel": 3, "embedding": "linear"},
    # Ensemble diversity ("bagging"): the k7-relu network with its own init/shuffle seed and its own inner
    # train/validation split (so its own validation-picked epoch). With k7-relu (seed 0, split 0) they make
    # five members; ``--vote k7-relu,bag1,bag2,bag3,bag4`` votes them.
    **{f"bag{i}": {"cbam_kernel": 7, "embedding": "relu", "seed": i, "split_seed": i} for i in range(1, 5)},
    # The same five seeds on one shared split: diversity from the seed alone.
    **{f"seed{i}": {"cbam_kernel": 7, "embedding": "relu", "seed": i} for i in range(1, 5)},
    # Architectures (for the default per dimensionality, TrainConfig's DEFAULT_ARCHS), on the frozen recipe.
    "model1": {"arch": "[4,4,[4,4],[4,8],[8,8]]"},
    "arch-8": {"arch": "[8,8,[8,8],[16,16],[32,32]]"},
    "arch-16": {"arch": "[16,16,[16,16],[32,32],[64,64]]"},
    "arch-mid": {"arch": "[4,4,[16,32],[32,64],[64,128]]"},
    "model1-32ep": {"arch": "[4,4,[4,4],[4,8],[8,8]]", "epochs": 32},
    "arch-8-32ep": {"arch": "[8,8,[8,8],[16,16],[32,32]]", "epochs": 32},
    "arch-16-32ep": {"arch": "[16,16,[16,16],[32,32],[64,64]]", "epochs": 32},
}


def _run(task: tuple[str, dict[str, Any], int, str, str, int | None, str]) -> dict[str, Any]:
    name, overrides, fold, data, out, epochs, arch = task  # epochs None: TrainConfig's default
    from naslung.data.dataset import load_dataset
    from naslung.train.baselines import fit_baseline
    from naslung.train.config import DEFAULT_ARCHS, TrainConfig
    from naslung.train.engine import data_split, fit

    ds = load_dataset(data)
    # --arch unset: the default of the data's dimensionality, as `naslung train` resolves it.
    base: dict[str, Any] = {"arch": arch or DEFAULT_ARCHS[ds.spatial_dims], "device": "cpu", "num_threads": 1}
    if epochs is not None:
        base["epochs"] = epochs
    config = TrainConfig(**{**base, **overrides})
    t0 = time.perf_counter()
    result = fit(ds, config, test_fold=fold, out_dir=Path(out) / name / f"fold_{fold}", resume=True)
    base = fit_baseline("diameter", ds, data_split(ds, config, fold))
    assert base.test is not None and result.test_metrics is not None
    return {"variant": name, "fold": fold, "test": result.test_metrics, "diameter": base.test.metrics(),
            "epoch": result.epoch, "epochs": len(result.history), "seconds": time.perf_counter() - t0}


def _mean_std(values: list[float]) -> str:
    arr = 100 * np.asarray(values, dtype=np.float64)
    std = arr.std(ddof=1) if arr.size > 1 else 0.0
    return f"{arr.mean():.2f} ± {std:.2f}"


def print_vote(names: list[str], folds: list[int], out: str) -> None:
    """Majority and soft vote of the ``names`` runs on each test fold, against their members.

    "Best member" is the member with the highest test F1 on each fold: a reference for the goal (ensemble >=
    best member + 1), never a selection (no member is chosen by it).
    """
    from naslung.ensemble.vote import agreement, majority_vote, soft_vote
    from naslung.metrics import binary_metrics
    from naslung.train.predictions import read_predictions

    rows = []
    for fold in folds:
        tests = [read_predictions(Path(out) / n / f"fold_{fold}", "test") for n in names]
        keys = [list(zip(t.seriesuid, t.nodule_id, strict=True)) for t in tests]
        if any(k != keys[0] for k in keys):
            raise SystemExit(f"fold {fold}: the runs {names} did not test the same nodules in the same order")
        probs = np.stack([t.prob for t in tests])
        label = tests[0].label
        member_f1 = [binary_metrics(label, t.pred, t.prob)["f1"] for t in tests]
        rows.append({"fold": fold, "majority": binary_metrics(label, majority_vote(probs))["f1"],
                     "soft": binary_metrics(label, soft_vote(probs), probs.mean(0))["f1"],
                     "best": max(member_f1), "mean": float(np.mean(member_f1)),
                     "agreement": float(agreement(probs).mean())})
        r = rows[-1]
        print(f"vote fold {fold}: majority F1 {100 * r['majority']:.2f}, soft {100 * r['soft']:.2f}, members "
              f"{', '.join(f'{100 * f:.1f}' for f in member_f1)}; agreement {100 * r['agreement']:.1f} %")
    print(f"\nensemble of {len(names)} ({', '.join(names)}), F1 over folds {folds}:")
    print("| majority | soft | best member (per fold) | member mean | agreement |")
    print("|---:|---:|---:|---:|---:|")
    print(f"| {_mean_std([r['majority'] for r in rows])} | {_mean_std([r['soft'] for r in rows])} | "
          f"{_mean_std([r['best'] for r in rows])} | {_mean_std([r['mean'] for r in rows])} | "
          f"{_mean_std([r['agreement'] for r in rows])} |\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--folds", default="0,6,7,8,9")
    parser.add_argument("--epochs", type=int, default=None, help="default: TrainConfig's")
    parser.add_argument("--arch", default=None, help="default: TrainConfig.DEFAULT_ARCHS of the data's dims")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--jobs", type=int, default=2, help="parallel single-threaded runs")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a TrainConfig field (JSON value) set on top of every variant, e.g. "
                             "--set select_metric='\"auc\"' --set epochs=32; use its own --out")
    parser.add_argument("--out", default="runs/recipe-ablation")
    parser.add_argument("--vote", default=None, help="comma-separated variants to vote as an ensemble (their "
                        "runs are read from --out; each must have every fold)")
    parser.add_argument("--report", action="store_true",
                        help="report the frozen defaults on the paper's test folds (variant 'default' only)")
    args = parser.parse_args()
    folds = [int(f) for f in args.folds.split(",")]
    names = args.variants.split(",")
    if PAPER_TEST_FOLDS & set(folds) and not (args.report and names == ["default"]):
        raise SystemExit(f"folds {sorted(PAPER_TEST_FOLDS & set(folds))} are the paper's test folds; the "
                         "recipe is tuned on development folds 0 and 6-9 only (--report --variants default "
                         "reports the frozen defaults there, once)")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; valid: {', '.join(VARIANTS)}")
    common = {}
    for item in args.set:
        key, _, raw = item.partition("=")
        try:
            common[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            common[key.strip()] = raw  # a bare word: a string field such as select_metric=auc
    tasks = [(n, {**VARIANTS[n], **common}, f, args.data, args.out, args.epochs, args.arch)
             for n in names for f in folds]
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    from naslung.data.phantom.build import die_with_parent

    # Workers end with this script (a killed ablation must not leave trainings running).
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn"),
                             initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
        for row in pool.map(_run, tasks):
            rows.append(row)
            t = row["test"]
            print(f"{row['variant']:<22} fold {row['fold']}: acc {100 * t['accuracy']:.1f} "
                  f"f1 {100 * t['f1']:.1f} auc {100 * t['auc']:.1f} "
                  f"(diameter f1 {100 * row['diameter']['f1']:.1f}); epoch "
                  f"{row['epoch']}/{row['epochs']}, {row['seconds']:.0f} s", flush=True)
    kind = "TEST folds (frozen defaults)" if args.report else "DEVELOPMENT folds"
    print(f"\n{kind} {folds}, {args.arch or 'default arch'}, {args.epochs or 'default'} epochs, "
          f"set {common or 'nothing'}, "
          f"data {Path(args.data).name}; "
          f"wall {time.perf_counter() - started:.0f} s")
    if args.vote:
        print_vote(args.vote.split(","), folds, args.out)
    print("| variant | accuracy | F1 | AUC | diameter acc (same splits) | diameter F1 |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in names:
        sel = [r for r in rows if r["variant"] == name]
        print(f"| {name} | {_mean_std([r['test']['accuracy'] for r in sel])} | "
              f"{_mean_std([r['test']['f1'] for r in sel])} | {_mean_std([r['test']['auc'] for r in sel])} | "
              f"{_mean_std([r['diameter']['accuracy'] for r in sel])} | "
              f"{_mean_std([r['diameter']['f1'] for r in sel])} |")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "ablation.json").write_text(json.dumps(rows, indent=1, default=float))


if __name__ == "__main__":
    main()
