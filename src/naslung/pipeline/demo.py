"""The main job on the embedded default: LIDC phantom -> crops -> POP search -> members -> ensemble.

Every stage is resumable and cached: the phantom and its crop dataset live in the user cache directory,
and the search, member runs and ensemble live under ``out``. Rerunning after a kill continues where it
stopped. The protocol is leak-free: the search never sees folds 1-5 (the paper's test folds), members pick
their checkpoint on an inner validation split of their training folds, and the test fold is predicted once.

All numbers it prints are PHANTOM numbers: synthetic CT rendered from LIDC annotations, not LIDC accuracy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PHANTOM_NOTE = "PHANTOM data (synthetic CT rendered from LIDC annotations; not LIDC accuracy)"


@dataclass
class DemoConfig:
    """Knobs of the demo; the defaults aim at about 20-30 minutes on 2 CPU cores (phantom included).

    The demo searches a laptop-sized corner of the paper's space (channels up to 32, 3-6 blocks) so that
    every candidate trains in a minute or two on a CPU; ``naslung search`` without these limits searches
    the full 42,426-architecture space of eq. 5-6. Candidates need a few epochs to rise above the majority
    rate on the phantom (2 epochs of ~420 development nodules is ~26 Adam steps at lr 2e-4: too few).
    """

    out: str = "runs/demo"
    seed: int = 0
    limit: int | None = None  # phantom nodules (None: all ~1,010)
    search_trials: int = 6
    search_epochs: int = 4
    search_channels: tuple[int, ...] = (4, 8, 16, 32)
    search_depth: tuple[int, int] = (3, 6)
    latency_budget_ms: float | None = None
    members: int = 3
    epochs: int = 8
    test_fold: int = 1
    workers: int | None = None
    #: Folds the search never sees: the paper's test folds. The demo's test fold must be one of them.
    search_exclude_folds: tuple[int, ...] = (1, 2, 3, 4, 5)

    def __post_init__(self) -> None:
        self.search_exclude_folds = tuple(int(f) for f in self.search_exclude_folds)
        validate(self)


def validate(config: DemoConfig) -> None:
    """Refuse a demo that would report a fold its search trained on, or nonsense counts, before any work."""
    from naslung.protocol import check_test_fold_unseen

    if not 0 <= int(config.test_fold) <= 9:
        raise ValueError(f"--test-fold {config.test_fold}: must be a LUNA16 subset 0-9")
    for name in ("search_trials", "search_epochs", "members", "epochs"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    if config.limit is not None and config.limit < 1:
        raise ValueError(f"limit must be >= 1, got {config.limit}")
    check_test_fold_unseen(config.test_fold, config.search_exclude_folds, where="demo's search")


def dataset_path(phantom_dir: Path, dims: int = 3) -> Path:
    """Where the demo keeps the crop dataset of a phantom tree (the user cache, beside the phantom)."""
    from naslung.paths import cache_dir

    return cache_dir("datasets") / f"{phantom_dir.name}-{dims}d-s32-m8.h5"


def ensure_dataset(phantom_dir: Path, dims: int = 3, progress: bool = True) -> Path:
    """Prepare the phantom's crop dataset once (cached; rebuilt only if missing)."""
    from naslung.data.prepare import PrepareConfig, prepare_dataset

    path = dataset_path(phantom_dir, dims)
    if not path.exists():
        prepare_dataset(PrepareConfig(luna_dir=phantom_dir, out=path, dims=dims,
                                      command=f"naslung demo (prepare {dims}-D)"), progress=progress)
    return path


def run_demo(config: DemoConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) the demo; returns the summary also written to ``out/demo_summary.json``."""
    from naslung.atomic import write_json_atomic
    from naslung.data.phantom import ensure_phantom
    from naslung.ensemble.vote import ensemble_predict, load_members
    from naslung.explain.pipeline import run_explain
    from naslung.fingerprint import load_dataset
    from naslung.protocol import check_search_folder
    from naslung.report.build import build_report
    from naslung.search.members import read_members, write_members
    from naslung.search.runner import SearchConfig, run_search
    from naslung.search.select import DEFAULT_WEIGHT, select_from_dir
    from naslung.train.baselines import fit_baseline
    from naslung.train.engine import data_split, fit

    validate(config)  # before any work: the test fold is never one the search trains on
    t0 = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    log(f"[1/7] LIDC phantom (seed {config.seed}) in the user cache")
    phantom_dir = ensure_phantom(seed=config.seed, limit=config.limit, workers=config.workers, progress=True)
    timings["phantom_s"] = time.perf_counter() - t0

    log("[2/7] crop dataset (3-D, 32^3 inputs with an 8-voxel margin)")
    t = time.perf_counter()
    data_file = ensure_dataset(phantom_dir, dims=3)
    dataset = load_dataset(data_file)
    timings["prepare_s"] = time.perf_counter() - t

    search_folds = ",".join(str(f) for f in range(10) if f not in config.search_exclude_folds)
    log(f"[3/7] POP search: {config.search_trials} trials x {config.search_epochs} epochs on folds "
        f"{search_folds} "
        f"(channels {list(config.search_channels)}, depth {config.search_depth[0]}-{config.search_depth[1]})")
    t = time.perf_counter()
    search_dir = out / "search"
    search_cfg = SearchConfig(out=str(search_dir), data=str(data_file), budget_trials=config.search_trials,
                              epochs=config.search_epochs, latency_budget_ms=config.latency_budget_ms,
                              seed=config.seed, latency_samples=20, channels=config.search_channels,
                              depth_range=config.search_depth, exclude_folds=config.search_exclude_folds)
    resume = (search_dir / "trials.jsonl").exists()
    search = run_search(search_cfg, resume=resume, plot_note="phantom data", on_status=log,
                        on_record=lambda r: log(_trial_line(r)))
    check_search_folder(search_dir, config.test_fold)  # what the search folder actually recorded
    chosen = select_from_dir(search_dir, top=config.members)
    members_file = read_members(write_members(search_dir, chosen, top=config.members, weight=DEFAULT_WEIGHT,
                                              epochs=config.epochs))
    timings["search_s"] = time.perf_counter() - t

    log(f"[4/7] training {len(chosen)} members (members.json) for {config.epochs} epochs, "
        f"test fold {config.test_fold}")
    t = time.perf_counter()
    member_dirs, member_rows = [], []
    for member in members_file.members:
        run_dir = out / "members" / member.name
        result = fit(dataset, member.config, test_fold=config.test_fold, out_dir=run_dir, resume="auto",
                     progress=True, source=str(data_file))
        member_dirs.append(run_dir)
        member_rows.append({"method": f"member {member.record['rank']}", "arch": member.config.arch,
                            "params": result.params, "epoch": result.epoch, **_rates(result.test_metrics)})
    timings["train_s"] = time.perf_counter() - t

    log("[5/7] ensemble (majority vote, section 3.5) and the diameter baseline on the same split")
    members = load_members(member_dirs, config.test_fold)
    ens = ensemble_predict(members, vote="majority")
    # Every member shares the search's split seed, so this is the members' own inner split.
    split = data_split(dataset, members_file.members[0].config, config.test_fold)
    baseline = fit_baseline("diameter", dataset, split, seed=config.seed)
    rows = [
        *member_rows,
        {"method": f"ensemble majority (n={len(member_dirs)})", **_rates(ens.majority)},
        {"method": f"ensemble soft (n={len(member_dirs)})", **_rates(ens.soft)},
        {"method": "diameter-only logistic regression", **_rates(baseline.test.metrics())},
    ]
    summary = {
        "note": PHANTOM_NOTE,
        "config": asdict(config),
        "dataset": str(data_file),
        "test_fold": config.test_fold,
        "search": search.summary if hasattr(search, "summary") else None,
        "members": chosen,
        "rows": rows,
        "mean_agreement": ens.mean_agreement,
        "timings_s": {**timings, "total_s": time.perf_counter() - t0},
    }
    write_json_atomic(out / "demo_summary.json", summary)

    log("[6/7] explanations of the best member: stage-2 attention montage (Fig. 5), t-SNE, DBI")
    t = time.perf_counter()
    explained = run_explain(member_dirs[0], data_file, config.test_fold, out / "explain")
    timings["explain_s"] = time.perf_counter() - t
    log("[7/7] HTML report of the whole run")
    t = time.perf_counter()
    report = out / "report.html"
    build_report(out, report, data=data_file, n_boot=200, seed=config.seed)
    timings["report_s"] = time.perf_counter() - t
    summary["explain"] = {"files": explained["files"], "dbi": explained["dbi"]}
    summary["report"] = str(report)
    summary["timings_s"] = {**timings, "total_s": time.perf_counter() - t0}
    write_json_atomic(out / "demo_summary.json", summary)
    return summary


def _trial_line(record: dict[str, Any]) -> str:
    if record.get("status") != "ok":
        return f"  trial {record.get('trial')}: {record.get('spec')} {record.get('status')}"
    return (f"  trial {record['trial']}: {record['spec']} inner-val {record['metric']} "
            f"{100 * record['score']:.1f} %, {record['latency_ms']:.1f} ms")


def _rates(metrics: dict[str, Any] | None) -> dict[str, Any]:
    keys = ("accuracy", "sensitivity", "specificity", "f1", "auc", "n")
    return {k: (metrics or {}).get(k) for k in keys}
