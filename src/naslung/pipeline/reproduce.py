"""``naslung reproduce``: the paper's whole sequence on a dataset file, at a budget, resumable stage by stage.

Stages, each one call into the library (``OUT`` is the output folder)::

    search    POP search on the development folds only (OUT/search; the test folds are excluded)
    members   the top members written to OUT/search/members.json (naslung search select)
    train     every member on every test fold, checkpoint on the inner validation split (OUT/members/<m>/
              fold_<K>; naslung cv --members)
    ensemble  majority vote per test fold beside the members and the diameter baseline (Table 5 style;
              OUT/results.json, OUT/results.md; naslung ensemble --members --cv-dir)
    ablate    Tables 2-3 over the best members' architectures (OUT/ablate; naslung ablate)
    explain   Figs. 5-6 and Table 4 of the best member, beside its Softmax and A-Softmax ablation twins
              (OUT/explain; naslung explain)
    report    the HTML page of all of it (OUT/report.html; naslung report)

``OUT/reproduce.json`` (:mod:`naslung.pipeline.status`) records every stage; a rerun skips the stages done
with the same inputs, and a stage killed midway resumes inside the library (finished trials and epochs are
read back). Before each stage the remaining time of every stage is estimated from the measured seconds of the
trials and epochs done so far (:mod:`naslung.pipeline.estimate`).

The protocol is checked before any work: every test fold must be among the folds the search excludes
(:mod:`naslung.protocol`), and an existing search folder must have excluded them too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from naslung import schemas
from naslung.options import check_folds
from naslung.pipeline import estimate as est
from naslung.pipeline import stages
from naslung.pipeline.budgets import BUDGETS, Budget
from naslung.pipeline.status import StatusFile, stage_key
from naslung.search.objective import PAPER_TEST_FOLDS
from naslung.train.rundir import CVDir

if TYPE_CHECKING:
    from naslung.progress import Progress

STAGES = ("search", "members", "train", "ensemble", "ablate", "explain", "report")
STATUS = "reproduce.json"
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
#: The ablation variants whose runs of the best member's architecture the explanations compare (Table 4).
TWINS = ("cbam", "cbam-asoftmax")


@dataclass(frozen=True)
class ReproduceConfig:
    """What ``naslung reproduce`` runs (see the module docstring).

    Attributes:
        data: the crop dataset file.
        out: the output folder.
        budget: how much work each stage does (:mod:`naslung.pipeline.budgets`).
        folds: the test folds reported (the paper's 1-5; fewer for a quick run).
        exclude_folds: the folds the search never sees; must hold every test fold.
        executor: ``local`` or ``ray`` for the search's trials.
        seed: search, members' split and bootstrap seed.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda`` for every training.
        threads: torch CPU threads for training (None: torch's default).
        jobs: ablation cv folders trained at once.
    """

    data: str
    out: str
    budget: Budget = BUDGETS["small"]
    folds: tuple[int, ...] = PAPER_TEST_FOLDS
    exclude_folds: tuple[int, ...] = PAPER_TEST_FOLDS
    executor: str = "local"
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    jobs: int = 1
    paths: dict[str, Path] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", str(self.data))
        object.__setattr__(self, "out", str(self.out))
        object.__setattr__(self, "folds", tuple(sorted({int(f) for f in self.folds})))
        object.__setattr__(self, "exclude_folds", tuple(sorted({int(f) for f in self.exclude_folds})))
        out = Path(self.out)
        object.__setattr__(self, "paths", {
            "search": out / "search", "members": out / "members", "ablate": out / "ablate",
            "explain": out / "explain", "report": out / "report.html", "status": out / STATUS,
            "results_json": out / RESULTS_JSON, "results_md": out / RESULTS_MD})
        validate(self)


def validate(config: ReproduceConfig) -> None:
    """Refuse, before any work, a run that would report a fold its search saw, or nonsense options."""
    if not config.folds:
        raise ValueError("--folds: no test fold given")
    check_folds(config.folds, "--folds: folds")
    if not isinstance(config.budget, Budget):
        raise TypeError(f"budget must be a naslung.pipeline.budgets.Budget, got {config.budget!r}")
    if config.jobs < 1:
        raise ValueError(f"--jobs: must be >= 1, got {config.jobs}")
    if config.threads is not None and config.threads < 1:
        raise ValueError(f"--threads: must be >= 1, got {config.threads}")
    stages.check_search_protocol(config.paths["search"], config.exclude_folds, config.folds,
                                 "reproduce's search")


def run_reproduce(config: ReproduceConfig, log: Callable[[str], None] = print,
                  progress: Progress | None = None) -> dict[str, Any]:
    """Run (or resume) every stage; returns the summary (also in ``reproduce.json``'s stage results)."""
    from naslung.data.source import is_phantom_kind, phantom_title
    from naslung.fingerprint import fingerprint_of, load_dataset
    from naslung.train.config import TrainConfig
    from naslung.train.cv import validate_cv

    validate(config)
    budget, paths = config.budget, config.paths
    search_cfg = stages.search_config_for(budget, config.data, paths["search"], seed=config.seed,
                                          exclude_folds=config.exclude_folds, executor=config.executor,
                                          device=config.device, threads=config.threads)
    dataset = load_dataset(config.data)
    # The members' split is the search's (split_seed = seed): every test fold must leave both classes in it.
    validate_cv(dataset, TrainConfig(split_seed=config.seed, device=config.device), config.folds)
    fingerprint = fingerprint_of(dataset)
    phantom = is_phantom_kind(dataset.source_kind)
    Path(config.out).mkdir(parents=True, exist_ok=True)
    job = {"data": str(Path(config.data).resolve()), "fingerprint": fingerprint, "phantom": phantom,
           "budget": budget.to_dict(), "folds": list(config.folds),
           "exclude_folds": list(config.exclude_folds), "executor": config.executor, "seed": config.seed,
           "device": config.device}
    status = StatusFile(paths["status"], job)
    saved = status.saved_job.get("fingerprint")
    if saved is not None and saved != fingerprint:
        raise ValueError(f"{paths['status']}: this folder was made with another dataset "
                         f"({status.saved_job.get('data')}); use another --out")
    status.save()
    runner = _Runner(config, status, log, dataset)
    note = phantom_title(phantom)

    runner.stage("search", {"fingerprint": fingerprint, "budget": _search_fields(budget), "seed": config.seed,
                            "exclude_folds": list(config.exclude_folds)},
                 lambda: stages.pop_search(search_cfg, config.folds, note=note, log=log))
    runner.stage("members", {"members": budget.members, "epochs": budget.epochs},
                 lambda: _members_result(stages.select_members_file(paths["search"], budget.members,
                                                                    budget.epochs, log=log,
                                                                    floor=budget.floor())))
    members = _read_members(paths["search"])
    runner.stage("train", {"folds": list(config.folds), "train_budget": budget.train_budget},
                 lambda: _train(dataset, members, config, progress))
    results = runner.stage("ensemble", {}, lambda: _ensemble(members, config))
    archs = ablation_archs(members, budget)
    runner.stage("ablate", {"archs": archs, "epochs": budget.ablation_epochs},
                 lambda: _ablate(config, archs, log, progress))
    runner.stage("explain", {}, lambda: _explain(members, archs, config))
    runner.stage("report", {"bootstrap": budget.bootstrap}, lambda: _report(config))
    status.set_estimates(runner.estimates())
    return {"out": config.out, "status": str(paths["status"]), "report": str(paths["report"]),
            "results": results, "phantom": phantom, "budget": budget.to_dict(),
            "stages": {name: status.stage(name).get("seconds") for name in STAGES}}


class _Runner:
    """Runs the stages in order: estimates first, then skip (done with the same inputs) or run and record."""

    def __init__(self, config: ReproduceConfig, status: StatusFile, log: Callable[[str], None],
                 dataset: Any) -> None:
        self.config, self.status, self.log, self.dataset = config, status, log, dataset
        self.key: str | None = None

    def stage(self, name: str, inputs: dict[str, Any], run: Callable[[], Any]) -> Any:
        self.key = stage_key({"stage": name, **inputs}, self.key)
        number = f"[{STAGES.index(name) + 1}/{len(STAGES)}]"
        if self.status.done(name, self.key):
            self.log(f"{number} {name}: done earlier, reused")
            return self.status.result(name)
        estimates = self.estimates()
        self.status.set_estimates(estimates)
        self.log(f"{number} {name}; estimated time left per stage: "
                 + "; ".join(f"{k} {v}" for k, v in estimates.items()))
        self.status.start(name, self.key)
        result = run()
        self.status.finish(name, self.key, result)
        return result

    def estimates(self) -> dict[str, str]:
        return estimates(self.config, self.status, self.dataset)


def estimates(config: ReproduceConfig, status: StatusFile, dataset: Any) -> dict[str, str]:
    """The remaining time of every stage not done, from the measured seconds so far (see the module doc)."""
    from naslung.train.ablation import VARIANTS, cv_dir

    budget, paths = config.budget, config.paths
    out: dict[str, str] = {}
    members = _read_members(paths["search"]) if (paths["search"] / "members.json").is_file() else None
    trial_s = est.mean(est.trial_seconds(paths["search"]))
    # A search epoch trains on the development folds, a final one on all but the test fold: scale by size.
    search_epoch_s = est.mean(est.trial_epoch_seconds(paths["search"]))
    if search_epoch_s is not None:
        search_epoch_s *= _train_size_ratio(dataset, config)
    if members is None:  # nothing trained yet: every epoch is left
        train_left, member_s = budget.members * len(config.folds) * budget.epochs, []
        ablate_left = len(VARIANTS) * budget.ablation_archs * len(config.folds) * budget.ablation_epochs
        ablate_s: list[float] = []
    else:
        member_runs = [CVDir(paths["members"] / m.name).run(f).path
                       for m in members.members for f in config.folds]
        train_left, member_s = est.epochs_left(member_runs, budget.epochs)
        ablate_runs = [cv_dir(paths["ablate"], v.name, a).run(f).path for v in VARIANTS
                       for a in ablation_archs(members, budget) for f in config.folds]
        ablate_left, ablate_s = est.epochs_left(ablate_runs, budget.ablation_epochs)
    epoch_s, epoch_src = _first(((est.mean(member_s), "member epochs"), (search_epoch_s, "search trials")))
    abl_s, abl_src = _first(((est.mean(ablate_s), "ablation epochs"), (epoch_s, epoch_src)))
    trials_done = len(est.trial_epoch_seconds(paths["search"]))  # successful trials count
    works = {
        "search": est.Work(left=(math.inf if budget.search_trials is None else
                                 max(budget.search_trials - trials_done, 0)),
                           unit="trial", unit_seconds=trial_s, source="search trials",
                           upper_bound=budget.search_patience is not None,
                           cap_seconds=None if budget.search_minutes is None else 60 * budget.search_minutes),
        "train": est.Work(left=train_left, unit="epoch", unit_seconds=epoch_s, source=epoch_src,
                          upper_bound=budget.train_budget is not None),
        "ablate": est.Work(left=ablate_left, unit="epoch", unit_seconds=abl_s, source=abl_src),
    }
    for name in STAGES:
        if status.stage(name).get("status") == "done":
            continue
        out[name] = works[name].describe() if name in works else est.measured(status.seconds(name))
    return out


def _first(options: tuple[tuple[float | None, str], ...]) -> tuple[float | None, str]:
    for value, source in options:
        if value is not None:
            return value, source
    return None, ""


def _train_size_ratio(dataset: Any, config: ReproduceConfig) -> float:
    """Mean nodules trained on per final run over nodules trained on per search trial."""
    import numpy as np

    fold = np.asarray(dataset.fold)
    dev = int(np.sum(~np.isin(fold, config.exclude_folds)))
    final = float(np.mean([np.sum(fold != f) for f in config.folds]))
    return final / dev if dev else 1.0


def _search_fields(budget: Budget) -> dict[str, Any]:
    data = budget.to_dict()
    return {k: v for k, v in data.items() if k.startswith(("search_", "latency_"))}


def _read_members(search_dir: Path) -> Any:
    from naslung.search.members import read_members

    return read_members(search_dir)


def _members_result(members: Any) -> dict[str, Any]:
    keys = ("rank", "score", "latency_ms")
    rows = [{"name": m.name, "arch": m.config.arch, **{k: m.record.get(k) for k in keys}}
            for m in members.members]
    return {"file": str(members.path), "members": rows}


def ablation_archs(members: Any, budget: Budget) -> list[str]:
    """The architectures of the best ``budget.ablation_archs`` members (section 4.3 uses the best 5)."""
    return [m.config.arch for m in members.members[:budget.ablation_archs]]


def _train(dataset: Any, members: Any, config: ReproduceConfig, progress: Progress | None) -> dict[str, Any]:
    results = stages.train_members(dataset, members, config.folds, config.paths["members"], config.budget,
                                   config.data, progress=progress)
    return stages.jsonable({name: {"summary": r.summary, "seconds": r.seconds}
                            for name, r in results.items()})


def _ensemble(members: Any, config: ReproduceConfig) -> dict[str, Any]:
    from naslung.atomic import write_json_atomic, write_text_atomic

    table = stages.ensemble_table(members, config.paths["members"], config.folds)
    write_json_atomic(config.paths["results_json"], {"schema": schemas.REPRODUCE_RESULTS,
                                                     "schema_version": 1, "budget": config.budget.to_dict(),
                                                     **table})
    write_text_atomic(config.paths["results_md"], results_markdown(table))
    return table


def _ablate(config: ReproduceConfig, archs: list[str], log: Callable[[str], None],
            progress: Progress | None) -> dict[str, Any]:
    from naslung.train.ablation import JSON_NAME, run_ablation

    result = run_ablation(config.data, archs, config.folds, config.paths["ablate"],
                          epochs=config.budget.ablation_epochs, threads=config.threads, jobs=config.jobs,
                          progress=progress, log=log, budget=config.budget.train_budget)
    return {"file": str(config.paths["ablate"] / JSON_NAME), "archs": result["archs"],
            "folds": result["folds"], "summary": stages.jsonable(result["summary"])}


def _explain(members: Any, archs: list[str], config: ReproduceConfig) -> dict[str, Any]:
    """Fig. 5 of the best member; Fig. 6 and Table 4 beside its Softmax and A-Softmax ablation twins."""
    from naslung.explain.pipeline import run_explain
    from naslung.train.ablation import cv_dir

    fold = config.folds[0]
    best = config.paths["members"] / members.members[0].name
    twins = [cv_dir(config.paths["ablate"], v, archs[0]) for v in TWINS]
    compare = [t.path for t in twins if t.run(fold).finished()]
    summary = run_explain(best, config.data, fold, config.paths["explain"], compare=compare, seed=config.seed)
    return stages.jsonable({"files": summary["files"], "dbi": summary["dbi"], "fold": fold})


def _report(config: ReproduceConfig) -> dict[str, Any]:
    from naslung.report.build import build_report

    summary = build_report(config.out, config.paths["report"], data=config.data,
                           n_boot=config.budget.bootstrap, seed=config.seed)
    return {"file": str(config.paths["report"]), "entries": summary["entries"], "notes": summary["notes"]}


def results_markdown(table: dict[str, Any]) -> str:
    """The Table 5 style summary as markdown: mean ± sample std over the test folds, percent."""
    folds = ",".join(map(str, table["folds"]))
    lines = [f"# Members, ensemble and diameter baseline on test folds {folds}", "",
             "Percent, mean ± sample std over the test folds; each member's epoch picked on the inner "
             "validation split.", "",
             "| method | architecture | accuracy | sensitivity | specificity | F1 | AUC |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for s in table["summary"]:
        cells = [_cell(s.get(f"{k}_mean"), s.get(f"{k}_std")) for k in stages.RATE_KEYS]
        lines.append(f"| {s['method']} | {s.get('arch', '')} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(mean: float | None, std: float | None) -> str:
    if mean is None or not math.isfinite(mean):
        return "-"
    spread = "-" if std is None or not math.isfinite(std) else f"{100 * std:.1f}"
    return f"{100 * mean:.1f} ± {spread}"

