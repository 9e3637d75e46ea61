"""Rebuild a bundled model: train its recipe on every fold, write its weights and card atomically.

:func:`member_configs` gives the TrainConfig of each member (TrainConfig's defaults for a single model, each
member's recorded config for an ensemble); :func:`build_bundle` trains each on the whole dataset
(``fit(test_fold=None)``: no test fold, the epoch chosen on the inner validation split) in a resumable run
folder of the user cache, copies the chosen weights into a small checkpoint (model weights and config only,
so the bytes do not depend on timings), fills the card's metrics from a ``naslung cv`` folder of the same
recipe (:func:`cv_metrics`) and replaces ``<models root>/<NAME>/`` in one rename. The same command on the
same data gives the same bytes where torch is deterministic (CPU, one thread count); the report says which
checksums differ from the card it replaces.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from naslung import schemas
from naslung.progress import Progress
from naslung.train.config import TrainConfig
from naslung.zoo.card import (
    CARD_SCHEMA,
    CARD_SCHEMA_VERSION,
    bundle_sha256,
    input_section,
    member_entry,
)
from naslung.zoo.registry import CARD_FILE, WEIGHTS_FILE, Recipe, model_dir, read_card, sha256_file

#: TrainConfig fields that may differ between the cv folder and the build (they do not change the recipe).
RUNTIME_FIELDS = ("num_threads", "device")
#: Checkpoint keys copied into a bundled weights file (no optimizer, RNG state, history or timings).
KEPT_KEYS = ("spec", "model_config", "model_options", "options", "test_fold", "epoch", "best", "model")


@dataclass
class BuildReport:
    """What :func:`build_bundle` did: the card, where it went, and how the checksums compare."""

    card: dict[str, Any]
    folder: Path | None  # None: a --check build, nothing written
    previous: dict[str, str] = field(default_factory=dict)  # weights path -> sha256 of the card replaced
    warnings: list[str] = field(default_factory=list)

    def differences(self) -> dict[str, tuple[str, str]]:
        """``{weights: (before, now)}`` for every member whose sha256 changed from the card replaced."""
        return {m["weights"]: (self.previous[m["weights"]], m["sha256"]) for m in self.card["members"]
                if m["weights"] in self.previous and self.previous[m["weights"]] != m["sha256"]}


def member_configs(recipe: Recipe, members: str | Path | None = None, *, threads: int | None = None,
                   device: str | None = None,
                   root: str | Path | None = None) -> list[tuple[str, TrainConfig]]:
    """``(member name, TrainConfig)`` of every member of ``recipe``.

    Single: TrainConfig's defaults for the recipe's dims. Ensemble: the configs of the ``members`` file
    (``naslung search select``); without it, the configs the existing card records (a rebuild).
    """
    given = {"num_threads": threads, "device": device}
    if recipe.kind == "single":
        if members is not None:
            raise ValueError(f"--members: {recipe.name} is a single model; only an ensemble takes members")
        return [(recipe.name, TrainConfig.resolve(spatial_dims=recipe.dims, **given))]
    if members is not None:
        from naslung.search.members import read_members

        found = read_members(members)
        return [(m.name, TrainConfig.resolve(m.config.to_dict(), **given)) for m in found.members]
    card = read_card(recipe.name, root)
    if card is None:
        raise ValueError(f"--members: {recipe.name} is an ensemble and is not built yet; give the "
                         f"members.json of `naslung search select`")
    return [(m["name"], TrainConfig.resolve(m["config"], **given)) for m in card["members"]]


def check_destination(name: str, root: str | Path | None, overwrite: bool) -> Path:
    """The model's folder, if the build may write it: missing or empty, or a bundled model with ``overwrite``.

    A folder holding anything but a bundled model is refused even with ``overwrite``
    (:class:`naslung.outputs.OutputRefusedError`, as every output of naslung).
    """
    from naslung.outputs import OutputRefusedError, describe

    folder = model_dir(name, root)
    if not folder.exists() or (folder.is_dir() and not any(folder.iterdir())):
        return folder
    card = folder / CARD_FILE
    try:
        is_bundle = folder.is_dir() and read_card(name, root) is not None
    except ValueError:
        is_bundle = False
    if not is_bundle:
        raise OutputRefusedError(f"{folder}: holds {describe(folder)}, not a bundled model ({card} missing "
                                 f"or foreign); naslung will not replace it, even with --overwrite")
    if not overwrite:
        raise OutputRefusedError(f"{folder}: already holds bundled model {name}; pass --overwrite to replace "
                                 f"it (or --check to compare a rebuild without writing)")
    return folder


def _work_dir(name: str, member: str, config: TrainConfig, fingerprint: str) -> Path:
    """The resumable run folder of one member in the user cache, keyed by its config and the data."""
    from naslung.paths import cache_dir

    key = hashlib.blake2b(json.dumps([config.to_dict(), fingerprint], sort_keys=True, default=str).encode(),
                          digest_size=6).hexdigest()
    return cache_dir("zoo", "runs", name) / f"{member}-{key}"


def _strip_checkpoint(best: Path, target: Path) -> None:
    """Copy the deployable part of a run's ``best.pt`` (weights and config) to ``target``.

    Serialised in memory first: ``torch.save`` to a path names the zip's inner folder after the file, and an
    atomic write goes through a randomly named temporary file, so the bytes would differ on every build.
    """
    import io

    import torch

    from naslung.atomic import atomic_path
    from naslung.train.checkpoint import SCHEMA, SCHEMA_VERSION, load_checkpoint

    state = load_checkpoint(best, map_location="cpu")
    buffer = io.BytesIO()
    torch.save({"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **{k: state.get(k) for k in KEPT_KEYS}},
               buffer)
    with atomic_path(target) as tmp:
        Path(tmp).write_bytes(buffer.getvalue())


def _compare_configs(cv_config: dict[str, Any] | None, config: TrainConfig, where: Path) -> None:
    if not isinstance(cv_config, dict):
        raise ValueError(f"{where}: records no TrainConfig; cannot tell that it is the same recipe")
    mine = config.to_dict()
    theirs = TrainConfig.from_dict(cv_config).to_dict()
    diff = sorted(k for k in mine if k not in RUNTIME_FIELDS and theirs.get(k) != mine[k])
    if diff:
        shown = ", ".join(f"{k}={theirs.get(k)!r} (build: {mine[k]!r})" for k in diff[:4])
        raise ValueError(f"{where}: cross-validated another recipe than this build ({shown}); give the cv "
                         f"folder of the same recipe")


def _metric_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    from naslung.train.cv import SUMMARY_METRICS

    return [{"fold": int(r["fold"]), **{k: r.get(k) for k in SUMMARY_METRICS}} for r in rows]


def cv_metrics(recipe: Recipe, cv_dir: str | Path, configs: Sequence[tuple[str, TrainConfig]],
               fingerprint: str | None) -> tuple[dict[str, Any], list[str]]:
    """The card's ``metrics`` from a cv folder of the same recipe, and warnings.

    Single: ``naslung cv`` folder (its ``cv.json``: the ``cnn`` and ``diameter`` rows per test fold).
    Ensemble: the ``naslung cv --members`` folder (``<member>/`` cv folders); the majority vote of the saved
    test predictions per fold (:func:`naslung.ensemble.vote.ensemble_predict`) and the diameter baseline of
    the first member's folds (all members share the split seed). A cv folder of another recipe is refused.
    """
    from naslung.atomic import read_json
    from naslung.train.cv import summarize
    from naslung.train.rundir import CVDir

    cv_dir = Path(cv_dir)
    warnings: list[str] = []
    dirs = [cv_dir] if recipe.kind == "single" else [cv_dir / name for name, _ in configs]
    summaries = []
    for d, (_, config) in zip(dirs, configs, strict=True):
        path = CVDir(d).summary_json
        if not path.is_file():
            raise FileNotFoundError(f"--cv {cv_dir}: no {path}; give a finished `naslung cv"
                                    f"{'' if recipe.kind == 'single' else ' --members'}` folder")
        data = read_json(path, "cv summary")
        if not isinstance(data, dict) or data.get("schema") != schemas.CV:
            raise ValueError(f"{path}: not a naslung cv summary")
        _compare_configs(data.get("config"), config, path)
        summaries.append(data)
    seen = {(s.get("dataset") or {}).get("fingerprint") for s in summaries}
    matches = fingerprint is not None and seen == {fingerprint}
    if not matches:
        warnings.append(f"--cv {cv_dir}: made on crops with fingerprint {sorted(map(str, seen))}, not the "
                        f"build's {fingerprint}; the card says so")
    if recipe.kind == "single":
        rows = summaries[0]["per_fold"]
        model_rows = _metric_rows([r for r in rows if r["method"] == "cnn"])
        base_rows = _metric_rows([r for r in rows if r["method"] == "diameter"])
        method = "the single model"
    else:
        from naslung.ensemble.vote import common_folds, ensemble_predict, load_members

        folds = common_folds(dirs)
        if not folds:
            raise ValueError(f"--cv {cv_dir}: the member cv folders share no finished fold")
        model_rows = [{"fold": f, **ensemble_predict(load_members(dirs, f), "majority").majority}
                      for f in folds]
        model_rows = _metric_rows(model_rows)
        base_rows = []
        for f in folds:
            base = CVDir(dirs[0]).run(f).baselines
            if base.is_file():
                base_rows.append({"fold": f, **read_json(base, "baselines of a cv fold")["diameter"]
                                  ["test_metrics"]})
        base_rows = _metric_rows(base_rows)
        method = f"majority vote of {len(dirs)} members"
    folds = [r["fold"] for r in model_rows]
    if folds != [1, 2, 3, 4, 5]:
        warnings.append(f"--cv {cv_dir}: test folds {folds}, not the paper's 1-5")
    summary = {"model": summarize(model_rows, "model")}
    if base_rows:
        summary["diameter"] = summarize(base_rows, "diameter")
    return ({"cv": cv_dir.name, "folds": folds, "method": method, "dataset_matches": matches,
             "rows": {"model": model_rows, "diameter": base_rows}, "summary": summary}, warnings)


def data_section(dataset: Any, fingerprint: str, prepare_command: str,
                 voi_commit: str | None) -> dict[str, Any]:
    """The card's ``data`` section: counts, folds and fingerprint of the crops."""
    import numpy as np

    return {"source": "LIDC-IDRI via the public VOI set", "prepare_command": prepare_command,
            "voi_commit": voi_commit, "n_nodules": int(len(dataset)),
            "n_malignant": int(np.asarray(dataset.labels).sum()),
            "n_scans": int(len(set(np.asarray(dataset.seriesuid).astype(str).tolist()))),
            "folds": sorted({int(f) for f in np.asarray(dataset.fold).tolist()}), "fingerprint": fingerprint}


def build_bundle(recipe: Recipe, dataset: Any, configs: Sequence[tuple[str, TrainConfig]], *,
                 command: str, prepare_command: str, source: str | None = None, voi_commit: str | None = None,
                 cv: str | Path | None = None, root: str | Path | None = None, overwrite: bool = False,
                 check: bool = False, retrain: bool = False, progress: Progress | None = None,
                 on_warning: Callable[[str], None] | None = None) -> BuildReport:
    """Train every member of ``recipe`` on all of ``dataset`` and write the bundle (see the module docstring).

    ``check``: build and compare with the bundled card, write nothing. ``retrain``: discard the cached run
    folders first (otherwise a finished one is read back and a killed one resumes).
    """
    import torch

    from naslung import __version__
    from naslung.fingerprint import fingerprint_of
    from naslung.train.engine import fit
    from naslung.train.rundir import RunDir

    if int(dataset.spatial_dims) != recipe.dims:
        raise ValueError(f"{recipe.name} is a {recipe.dims}-D model, but the crops are "
                         f"{dataset.spatial_dims}-D")
    folder = model_dir(recipe.name, root) if check else check_destination(recipe.name, root, overwrite)
    fingerprint = fingerprint_of(dataset)
    warnings: list[str] = []
    metrics = None
    if cv is not None:  # read before hours of training: a wrong folder fails now
        metrics, warnings = cv_metrics(recipe, cv, configs, fingerprint)
    for w in warnings:
        if on_warning:
            on_warning(w)
    previous_card = read_card(recipe.name, root)
    previous = {m["weights"]: m["sha256"] for m in (previous_card or {}).get("members", [])}
    trained = []
    for name, config in configs:
        work = _work_dir(recipe.name, name, config, fingerprint)
        if retrain and work.exists():
            shutil.rmtree(work)
        result = fit(dataset, config, test_fold=None, out_dir=work, resume="auto", progress=progress,
                     source=source)
        trained.append((name, config, result, RunDir(work).best))
    root_dir = folder.parent
    root_dir.mkdir(parents=True, exist_ok=True)
    tmp = root_dir / f".{recipe.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        members = []
        for name, config, result, best in trained:
            rel = WEIGHTS_FILE if recipe.kind == "single" else f"{name}/{WEIGHTS_FILE}"
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            _strip_checkpoint(best, target)
            members.append(member_entry(name, config.arch, result.params, rel, sha256_file(target),
                                        config.to_dict(), result.epoch, len(result.history)))
        first = trained[0][2]
        card = {
            "schema": CARD_SCHEMA, "schema_version": CARD_SCHEMA_VERSION, "name": recipe.name,
            "kind": recipe.kind, "dims": recipe.dims, "summary": recipe.summary, "members": members,
            "sha256": bundle_sha256(members),
            "input": input_section(dataset.spatial_dims, dataset.size, dataset.margin,
                                   float(dataset.attrs.get("spacing_mm", 1.0)), dataset.attrs["window"]),
            "data": data_section(dataset, fingerprint, prepare_command, voi_commit),
            "training": {"test_fold": None, "n_train": int(first.split.get("train", 0)),
                         "n_val": int(first.split.get("val", 0)), "device": str(configs[0][1].device),
                         "threads": torch.get_num_threads() if configs[0][1].num_threads is None
                         else configs[0][1].num_threads, "torch": torch.__version__, "naslung": __version__},
            "command": command, "metrics": metrics,
        }
        if check:
            return BuildReport(card=card, folder=None, previous=previous, warnings=warnings)
        from naslung.atomic import write_json_atomic

        write_json_atomic(tmp / CARD_FILE, card)
        old = root_dir / f".{recipe.name}.old-{os.getpid()}"
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
        if old.exists():
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return BuildReport(card=card, folder=folder, previous=previous, warnings=warnings)
