"""The numbers of the report: pooled test predictions per model and ensemble, beside the diameter baseline.

* A **cv folder** is one model: its folds' test predictions pooled (each nodule is tested once, by the fold
  model that never saw it). A run outside a cv folder is a model of its own.
* **Ensembles** (section 3.5): runs of one folder (not a cv folder) tested on the same fold, and the cv
  folders side by side in one folder, fold by fold (as ``naslung ensemble --runs CV...``). Both the
  majority vote and the soft vote are reported; calibration only for the soft vote, which has probabilities.
* The **diameter baseline** (logistic regression on the diameter, :mod:`naslung.train.baselines`) is refitted
  on each run's own inner training split (the same call ``naslung cv`` makes), so it predicts exactly the
  nodules the model was tested on, and the two can be compared pairwise. That needs the run's dataset file
  (``config.json`` names it; ``data`` overrides it); without it the paired comparison is left out.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from naslung.report.discover import Experiment, RunInfo
from naslung.report.stats import summarize


@dataclass
class Entry:
    """One row group of the main table: a model or an ensemble, with its pooled test predictions."""

    name: str
    kind: str  # "cv", "run", "ensemble majority", "ensemble soft"
    description: str
    params: int | None
    y: np.ndarray
    p: np.ndarray
    groups: np.ndarray
    ref: np.ndarray | None
    folds: list[int]
    calibrated: bool = True
    stats: dict[str, Any] = field(default_factory=dict)
    ref_stats: dict[str, Any] | None = None


def _keys(seriesuid: Any, nodule_id: Any) -> list[tuple[str, str]]:
    return list(zip(np.asarray(seriesuid).astype(str).tolist(), np.asarray(nodule_id).astype(str).tolist(),
                    strict=True))


class BaselineCache:
    """Diameter-baseline test predictions per run, keyed by nodule; loads each dataset file once."""

    def __init__(self, data: str | Path | None = None) -> None:
        self.data = Path(data) if data is not None else None
        self._datasets: dict[str, Any] = {}
        self.notes: list[str] = []

    def _dataset(self, run: RunInfo) -> Any:
        from naslung.data.dataset import load_dataset

        source = str(self.data) if self.data is not None else run.source
        if not source or not Path(source).is_file():
            note = (f"{run.path}: dataset file {source!r} not found, so no paired comparison against the "
                    f"diameter baseline for it (pass --data)")
            self.notes.append(note)
            return None
        if source not in self._datasets:
            self._datasets[source] = load_dataset(source)
        return self._datasets[source]

    def predictions(self, run: RunInfo) -> dict[tuple[str, str], float] | None:
        from naslung.train.baselines import fit_baseline
        from naslung.train.config import TrainConfig
        from naslung.train.engine import data_split

        dataset = self._dataset(run)
        if dataset is None or run.test_fold is None:
            return None
        try:
            config = TrainConfig.from_dict(run.train_config)
            split = data_split(dataset, config, run.test_fold)
            base = fit_baseline("diameter", dataset, split, seed=config.seed)
        except (ValueError, TypeError) as exc:
            self.notes.append(f"{run.path}: diameter baseline not refitted ({exc})")
            return None
        if base.test is None:
            return None
        keys = _keys(base.test.seriesuid, base.test.nodule_id)
        return dict(zip(keys, base.test.prob.tolist(), strict=True))


def _pooled(runs: list[RunInfo], cache: BaselineCache) -> tuple[np.ndarray, ...]:
    """Concatenated test ``(y, p, seriesuid, ref)`` of ``runs``; ``ref`` None unless every run has one."""
    from naslung.train.predictions import read_predictions

    ys, ps, gs, refs = [], [], [], []
    for run in runs:
        pred = read_predictions(run.path, "test")
        ys.append(pred.label)
        ps.append(pred.prob)
        gs.append(pred.seriesuid.astype(str))
        base = cache.predictions(run)
        refs.append(None if base is None else np.array([base.get(k, np.nan) for k in
                                                        _keys(pred.seriesuid, pred.nodule_id)]))
    ref = None if any(r is None for r in refs) else np.concatenate(refs)
    if ref is not None and not np.isfinite(ref).all():
        ref = None
    return np.concatenate(ys), np.concatenate(ps), np.concatenate(gs), ref


def _ensembles(exp: Experiment, cache: BaselineCache) -> list[Entry]:
    from naslung.ensemble.vote import load_members, majority_vote

    groups: dict[tuple[str, int], list[RunInfo]] = defaultdict(list)
    for run in exp.runs:
        if run.cv_dir is None and run.test_fold is not None:
            groups[(str(run.path.parent), run.test_fold)].append(run)
    sets: list[tuple[str, list[tuple[list[Path], int, RunInfo]]]] = []
    for (parent, fold), runs in sorted(groups.items()):
        if len(runs) >= 2:
            sets.append((f"{Path(parent).name} (fold {fold})", [([r.path for r in runs], fold, runs[0])]))
    # cv folders side by side in one folder (e.g. the members of a search) form an ensemble, fold by fold.
    siblings: dict[Path, set[Path]] = defaultdict(set)
    for cv_dir in exp.cv_dirs:
        siblings[cv_dir.parent].add(cv_dir)
    for parent, cv_dirs in sorted(siblings.items()):
        if len(cv_dirs) < 2:
            continue
        by_fold: dict[int, list[RunInfo]] = defaultdict(list)
        for run in exp.runs:
            if run.cv_dir in cv_dirs and run.test_fold is not None:
                by_fold[run.test_fold].append(run)
        common = [(sorted(r.path for r in rs), k, rs[0]) for k, rs in sorted(by_fold.items())
                  if {r.cv_dir for r in rs} == cv_dirs]
        if common:
            where = f" in {parent.relative_to(exp.root)}" if parent != exp.root else ""
            sets.append((f"{len(cv_dirs)} cv folders{where}", common))
    entries = []
    for name, parts in sets:
        ys, soft, major, gs, refs, folds = [], [], [], [], [], []
        try:
            for paths, fold, first in parts:
                members = load_members(paths, fold)
                share = (members.probs >= 0.5).mean(axis=0)
                votes = majority_vote(members.probs)
                ys.append(members.label)
                soft.append(members.probs.mean(axis=0))
                # The vote share as score, nudged so that thresholding at 0.5 gives the majority decision
                # (an even-n tie is benign).
                major.append(np.where(votes == 1, np.maximum(share, 0.5), np.minimum(share, 0.4999)))
                gs.append(members.seriesuid.astype(str))
                base = cache.predictions(first)
                keys = _keys(members.seriesuid, members.nodule_id)
                refs.append(None if base is None else np.array([base.get(k, np.nan) for k in keys]))
                folds.append(fold)
        except (ValueError, FileNotFoundError) as exc:
            cache.notes.append(f"ensemble {name}: not formed ({exc})")
            continue
        n = len(parts[0][0])
        ref = None if any(r is None for r in refs) else np.concatenate(refs)
        for kind, p, calibrated in (("ensemble majority", major, False), ("ensemble soft", soft, True)):
            entries.append(Entry(name=f"{kind.split()[1]} vote, {name}", kind=kind,
                                 description=f"{n} members", params=None, y=np.concatenate(ys),
                                 p=np.concatenate(p), groups=np.concatenate(gs), ref=ref, folds=folds,
                                 calibrated=calibrated))
    return entries


def analyse(exp: Experiment, data: str | Path | None = None, n_boot: int = 1000,
            seed: int = 0) -> tuple[list[Entry], list[str]]:
    """Every model and ensemble of ``exp`` with CIs, calibration and the paired diameter comparison."""
    cache = BaselineCache(data)
    entries: list[Entry] = []
    by_cv: dict[Path, list[RunInfo]] = defaultdict(list)
    for run in exp.runs:
        if run.test_fold is None:
            continue  # development-only runs (search trials) have no test predictions
        if run.cv_dir is not None:
            by_cv[run.cv_dir].append(run)
        else:
            y, p, g, ref = _pooled([run], cache)
            entries.append(Entry(name=str(run.path.relative_to(exp.root)), kind="run",
                                 description=run.describe(), params=run.result.get("params"), y=y, p=p,
                                 groups=g, ref=ref, folds=[run.test_fold]))
    for cv_dir, runs in sorted(by_cv.items()):
        runs.sort(key=lambda r: r.test_fold)
        y, p, g, ref = _pooled(runs, cache)
        name = str(cv_dir.relative_to(exp.root)) if cv_dir != exp.root else cv_dir.name
        entries.append(Entry(name=name, kind="cv", description=runs[0].describe(),
                             params=runs[0].result.get("params"), y=y, p=p, groups=g, ref=ref,
                             folds=[int(r.test_fold) for r in runs]))
    entries += _ensembles(exp, cache)
    for e in entries:
        e.stats = summarize(e.y, e.p, e.groups, n_boot, seed, e.ref)
        if e.ref is not None:
            e.ref_stats = summarize(e.y, e.ref, e.groups, n_boot, seed)
    return entries, cache.notes
