"""The main job on the embedded default: LIDC phantom -> crops -> POP search -> members -> ensemble.

Every stage is resumable and cached: the phantom and its crop dataset live in the user cache directory,
and the search, member runs and ensemble live under ``out``. Rerunning after a kill continues where it
stopped. The protocol is leak-free: the search never sees folds 1-5 (the paper's test folds), members pick
their checkpoint on an inner validation split of their training folds, and the test fold is predicted once.
The search, the members' training and the ensemble table are the steps ``naslung reproduce`` runs too
(:mod:`naslung.pipeline.stages`), at a budget of :mod:`naslung.pipeline.budgets`.

All numbers it prints are PHANTOM numbers: synthetic CT rendered from LIDC annotations, not LIDC accuracy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from naslung.data.source import PHANTOM_NOTE, PHANTOM_TITLE
from naslung.options import FOLDS
from naslung.pipeline.budgets import BUDGETS, Budget
from naslung.progress import Progress
from naslung.search.objective import PAPER_TEST_FOLDS

__all__ = ["PHANTOM_NOTE", "DemoConfig", "run_demo"]


@dataclass
class DemoConfig:
    """Knobs of the demo; the ``small`` budget aims at about 20-30 minutes on 2 CPU cores (phantom included).

    The ``small`` budget searches a laptop-sized corner of the paper's space (channels up to 32, 3-6 blocks)
    so that every candidate trains in a minute or two on a CPU; ``paper`` searches the full
    42,426-architecture space of eq. 5-6. Candidates need a few epochs to rise above the majority rate on the
    phantom (2 epochs of ~420 development nodules is ~26 Adam steps at lr 2e-4: too few).
    """

    out: str = "runs/demo"
    seed: int = 0
    limit: int | None = None  # phantom nodules (None: all ~1,010)
    budget: Budget = BUDGETS["small"]
    latency_budget_ms: float | None = None
    test_fold: int = 1
    workers: int | None = None
    #: Folds the search never sees: the paper's test folds. The demo's test fold must be one of them.
    search_exclude_folds: tuple[int, ...] = PAPER_TEST_FOLDS

    def __post_init__(self) -> None:
        self.search_exclude_folds = tuple(int(f) for f in self.search_exclude_folds)
        validate(self)


def validate(config: DemoConfig) -> None:
    """Refuse a demo that would report a fold its search trained on, or nonsense counts, before any work."""
    from naslung.options import check_fold
    from naslung.protocol import check_test_fold_unseen

    check_fold(config.test_fold, "--test-fold")
    if not isinstance(config.budget, Budget):
        raise TypeError(f"budget must be a naslung.pipeline.budgets.Budget, got {config.budget!r}")
    if config.limit is not None and config.limit < 1:
        raise ValueError(f"limit must be >= 1, got {config.limit}")
    check_test_fold_unseen(config.test_fold, config.search_exclude_folds, where="demo's search")


def dataset_path(phantom_dir: Path, dims: int = 3) -> Path:
    """Where the demo keeps the crop dataset of a phantom tree (the user cache, beside the phantom)."""
    from naslung.paths import cache_dir

    return cache_dir("datasets") / f"{phantom_dir.name}-{dims}d-s32-m8.h5"


def ensure_dataset(phantom_dir: Path, dims: int = 3, progress: Progress | None = None) -> Path:
    """Prepare the phantom's crop dataset once (cached; rebuilt only if missing)."""
    from naslung.data.prepare import PrepareConfig, prepare_dataset

    path = dataset_path(phantom_dir, dims)
    if not path.exists():
        prepare_dataset(PrepareConfig(luna_dir=phantom_dir, out=path, dims=dims,
                                      command=f"naslung demo (prepare {dims}-D)"), progress=progress)
    return path


def run_demo(config: DemoConfig, log: Callable[[str], None] = print,
             progress: Progress | None = None) -> dict[str, Any]:
    """Run (or resume) the demo; returns the summary also written to ``out/demo_summary.json``.

    ``log`` receives one line per stage; ``progress`` the phantom, prepare and training tasks.
    """
    from naslung.atomic import write_json_atomic
    from naslung.data.phantom import ensure_phantom
    from naslung.explain.pipeline import run_explain
    from naslung.fingerprint import load_dataset
    from naslung.pipeline import stages
    from naslung.report.build import build_report

    validate(config)  # before any work: the test fold is never one the search trains on
    budget = config.budget
    t0 = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    log(f"[1/7] LIDC phantom (seed {config.seed}) in the user cache")
    phantom_dir = ensure_phantom(seed=config.seed, limit=config.limit, workers=config.workers,
                                 progress=progress)
    timings["phantom_s"] = time.perf_counter() - t0

    log("[2/7] crop dataset (3-D, 32^3 inputs with an 8-voxel margin)")
    t = time.perf_counter()
    data_file = ensure_dataset(phantom_dir, dims=3, progress=progress)
    dataset = load_dataset(data_file)
    timings["prepare_s"] = time.perf_counter() - t

    search_folds = ",".join(str(f) for f in FOLDS if f not in config.search_exclude_folds)
    log(f"[3/7] POP search ({budget.name} budget): {budget.search_stop()}, {budget.search_epochs} epochs "
        f"each, on folds {search_folds} (channels {list(budget.search_channels)}, depth "
        f"{budget.search_depth[0]}-{budget.search_depth[1]})")
    t = time.perf_counter()
    search_dir = out / "search"
    search_cfg = stages.search_config_for(budget, data_file, search_dir, seed=config.seed,
                                          exclude_folds=config.search_exclude_folds,
                                          latency_budget_ms=config.latency_budget_ms)
    search = stages.pop_search(search_cfg, [config.test_fold], note=PHANTOM_TITLE, log=log)
    members = stages.select_members_file(search_dir, budget.members, budget.epochs, log=log,
                                         floor=budget.floor())
    timings["search_s"] = time.perf_counter() - t

    log(f"[4/7] training {len(members.members)} members (members.json) for {budget.epochs} epochs, "
        f"test fold {config.test_fold}")
    t = time.perf_counter()
    members_root = out / "members"
    stages.train_members(dataset, members, [config.test_fold], members_root, budget, data_file,
                         progress=progress)
    member_dirs = stages.member_dirs(members, members_root)
    timings["train_s"] = time.perf_counter() - t

    log("[5/7] ensemble (majority vote, section 3.5) and the diameter baseline on the same split")
    table = stages.ensemble_table(members, members_root, [config.test_fold])
    summary = {
        "note": PHANTOM_NOTE,
        "config": asdict(config),
        "dataset": str(data_file),
        "test_fold": config.test_fold,
        "search": search,
        "members": [m.record for m in members.members],
        "rows": table["per_fold"],
        "mean_agreement": table["mean_agreement"][str(config.test_fold)],
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
    build_report(out, report, data=data_file, n_boot=budget.bootstrap, seed=config.seed)
    timings["report_s"] = time.perf_counter() - t
    summary["explain"] = {"files": explained["files"], "dbi": explained["dbi"]}
    summary["report"] = str(report)
    summary["timings_s"] = {**timings, "total_s": time.perf_counter() - t0}
    write_json_atomic(out / "demo_summary.json", summary)
    return summary
