"""The steps ``naslung demo`` and ``naslung reproduce`` share, each one call into the library.

* :func:`search_config_for`: the only place a pipeline builds a search configuration from a budget;
* :func:`pop_search`: the POP search on the development folds, refused (before any work, and again against
  what the folder recorded) when a test fold is not among the folds it excludes (:mod:`naslung.protocol`);
* :func:`select_members_file`: the top members written to ``members.json`` (``naslung search select``);
* :func:`train_members`: every member on every test fold (``naslung cv --members``), the checkpoint picked on
  the inner validation split, finished folds read back;
* :func:`ensemble_table`: majority and soft vote per test fold beside each member and the diameter baseline
  fitted on the same split (``naslung ensemble --members --cv-dir``; Table 5 style).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from naslung.pipeline.budgets import Budget

if TYPE_CHECKING:
    from naslung.data.dataset import NoduleDataset
    from naslung.progress import Progress
    from naslung.search.members import Members
    from naslung.search.runner import SearchConfig
    from naslung.train.cv import CVResult

RATE_KEYS = ("accuracy", "sensitivity", "specificity", "f1", "auc")
DIAMETER = "diameter-only logistic regression"


def search_config_for(budget: Budget, data: str | Path, out: str | Path, *, seed: int,
                      exclude_folds: Sequence[int], executor: str = "local", device: str = "auto",
                      threads: int | None = None, latency_budget_ms: float | None = None) -> SearchConfig:
    """The search configuration of a pipeline: the budget's search fields on ``data``, into ``out``.

    Latency is timed on the CPU (batch 1, one thread), as ``naslung search`` does by default; training uses
    ``device`` (``auto``: CUDA when present). With Ray, two trials run at once, sharing a GPU if there is one.
    """
    from naslung.search.runner import SearchConfig

    gpus = None
    if executor == "ray" and device != "cpu":
        import torch

        gpus = 0.5 if torch.cuda.is_available() else None  # two trials at once share the GPU
    config = SearchConfig.resolve(out=str(out), data=str(data), epochs=budget.search_epochs, seed=seed,
                                  exclude_folds=tuple(exclude_folds), executor=executor, gpus_per_trial=gpus,
                                  channels=budget.search_channels, depth_range=budget.search_depth,
                                  device=device, num_threads=threads, latency_samples=budget.latency_samples,
                                  latency_repeats=budget.latency_repeats)
    # The stops are set as given: None disables one (resolve reads None as "the default").
    return config.replace(budget_trials=budget.search_trials, budget_minutes=budget.search_minutes,
                          patience=budget.search_patience, latency_budget_ms=latency_budget_ms)


def check_search_protocol(search_dir: str | Path, exclude_folds: Sequence[int], test_folds: Sequence[int],
                          where: str) -> None:
    """Refuse, before any work, test folds the search would see or that an existing search folder saw."""
    from naslung.protocol import check_test_fold_unseen
    from naslung.search.records import CONFIG, check_search_folder

    for fold in test_folds:
        check_test_fold_unseen(fold, exclude_folds, where=where)
    if (Path(search_dir) / CONFIG).is_file():
        for fold in test_folds:
            check_search_folder(search_dir, fold)


def pop_search(config: SearchConfig, test_folds: Sequence[int], *, note: str = "",
               log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) the search of ``config``; its summary. See the module docstring for the protocol."""
    from naslung.search.records import CONFIG, TRIALS, check_search_folder
    from naslung.search.runner import run_search

    search_dir = Path(config.out)
    check_search_protocol(search_dir, config.exclude_folds, test_folds, "pipeline's search")
    resume = (search_dir / CONFIG).is_file() or (search_dir / TRIALS).is_file()
    result = run_search(config, resume=resume, plot_note=note, on_status=log,
                        on_record=lambda r: log(trial_line(r)))
    for fold in test_folds:  # what the search folder actually recorded
        check_search_folder(search_dir, fold)
    return jsonable(result.summary)


def select_members_file(search_dir: str | Path, top: int, epochs: int,
                        log: Callable[[str], None] | None = None, floor: dict[str, float] | None = None
                        ) -> Members:
    """The ``top`` members of a finished search written to ``members.json`` (final ``epochs``), read back.

    Trials under the selection floor (:mod:`naslung.search.select`) are dropped, each with a line to ``log``;
    fewer than ``top`` members are selected when fewer pass, and none passing raises ``ValueError``.
    """
    from naslung.search.members import read_members, write_members
    from naslung.search.select import DEFAULT_WEIGHT, check_selected, selection_from_dir

    selection = selection_from_dir(search_dir, top=top, **(floor or {}))
    for line in selection.messages():
        (log or print)(line)
    check_selected(selection)
    return read_members(write_members(search_dir, selection.chosen, top=top, weight=DEFAULT_WEIGHT,
                                      epochs=epochs, selection=selection.to_dict()))


def member_dirs(members: Members, root: str | Path) -> list[Path]:
    """The cv folder of each member under ``root`` (``naslung cv --members`` layout)."""
    return [Path(root) / m.name for m in members.members]


def train_members(dataset: NoduleDataset, members: Members, folds: Sequence[int], root: str | Path,
                  budget: Budget, source: str | Path,
                  progress: Progress | None = None) -> dict[str, CVResult]:
    """Train every member on every test fold at the budget's epochs (``root/<member>/fold_<K>``)."""
    from naslung.search.members import run_members_cv

    return run_members_cv(dataset, members, list(folds), root, budget=budget.train_budget,
                          epochs=budget.epochs, progress=progress, source=str(source))


def ensemble_table(members: Members, root: str | Path, folds: Sequence[int]) -> dict[str, Any]:
    """Per test fold: each member, the majority and soft vote, and the diameter baseline; then the mean and
    sample std over folds per method. Read from the members' saved predictions, nothing is retrained.

    The diameter baseline is the one ``cv --members`` fitted on the first member's inner training split;
    every member shares the search's split seed, so that is every member's split.
    """
    from naslung.atomic import read_json
    from naslung.ensemble.vote import ensemble_predict, load_members
    from naslung.train.cv import summarize
    from naslung.train.result import TrainResult
    from naslung.train.rundir import CVDir

    dirs = member_dirs(members, root)
    n = len(dirs)
    rows: list[dict[str, Any]] = []
    agreement: dict[str, float] = {}
    for fold in folds:
        for member, path in zip(members.members, dirs, strict=True):
            result = TrainResult.load(CVDir(path).run(fold).path)
            rows.append({"method": f"member {member.record.get('rank', '?')}", "member": member.name,
                         "arch": member.config.arch, "fold": int(fold), "params": result.params,
                         "epoch": result.epoch, **rates(result.test_metrics)})
        ens = ensemble_predict(load_members(dirs, fold), vote="majority")
        agreement[str(fold)] = ens.mean_agreement
        rows.append({"method": f"ensemble majority (n={n})", "fold": int(fold), **rates(ens.majority)})
        rows.append({"method": f"ensemble soft (n={n})", "fold": int(fold), **rates(ens.soft)})
        baselines = read_json(CVDir(dirs[0]).run(fold).baselines, "baselines of a cv fold")
        rows.append({"method": DIAMETER, "fold": int(fold), **rates(baselines["diameter"]["test_metrics"])})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    summary = []
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        entry = summarize([{k: _nan(v) for k, v in r.items()} for r in mine], method)
        entry.update({k: mine[0][k] for k in ("arch", "member") if k in mine[0]})
        summary.append(entry)
    return jsonable({"folds": [int(f) for f in folds], "per_fold": rows, "summary": summary,
                      "mean_agreement": agreement,
                      "std": "sample standard deviation over test folds (ddof=1); NaN folds are skipped"})


def trial_line(record: dict[str, Any]) -> str:
    """One line per finished search trial."""
    if record.get("status") != "ok":
        return f"  trial {record.get('trial')}: {record.get('spec')} {record.get('status')}"
    return (f"  trial {record['trial']}: {record['spec']} inner-val {record['metric']} "
            f"{100 * record['score']:.1f} %, {record['latency_ms']:.1f} ms")


def rates(metrics: dict[str, Any] | None) -> dict[str, Any]:
    """The table's metric columns (fractions) and ``n`` of a metrics dict."""
    return {k: (metrics or {}).get(k) for k in (*RATE_KEYS, "n")}


def _nan(value: Any) -> Any:
    return math.nan if value is None else value


def jsonable(data: Any) -> Any:
    """Plain JSON types (numpy scalars become floats/ints; NaN stays NaN, as ``json`` writes it)."""
    import json

    return json.loads(json.dumps(data, default=_plain))


def _plain(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
