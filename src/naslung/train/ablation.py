"""The paper's ablations (section 4.3): Table 2 (CBAM and A-Softmax on/off) and Table 3 (CBAM order).

Every (variant, architecture) pair is one cv folder ``OUT/<variant>/<arch slug>/`` trained by
:func:`naslung.train.cv.run_cv`: the inner validation split picks the epoch, the test fold is predicted once,
and finished folds are read back, so a killed ablation resumes where it stopped. Variants differ from the
default :class:`~naslung.train.config.TrainConfig` only in ``attention`` and ``loss`` (the head follows the
loss); every variant shares ``split_seed``, so all of them train, validate and test on the same nodules.

``OUT/ablation.json`` holds the per-fold rows and the summary (mean and sample std over architectures x
folds); ``OUT/ablation.md`` holds the two tables as markdown.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from naslung import schemas
from naslung.atomic import write_json_atomic, write_text_atomic
from naslung.data.errors import DataError
from naslung.models.spec import ArchSpec
from naslung.options import HEAD_FOR_LOSS
from naslung.progress import Progress
from naslung.train.config import TrainConfig
from naslung.train.cv import CNN, SUMMARY_METRICS, summarize
from naslung.train.rundir import CVDir

SCHEMA = schemas.ABLATION
SCHEMA_VERSION = 1
JSON_NAME = "ablation.json"
MARKDOWN_NAME = "ablation.md"
#: The reference fitted on the same splits as every variant (Table 2's last row).
REFERENCE = "diameter"
METRIC_LABELS = {"accuracy": "Accu.", "sensitivity": "Sens.", "specificity": "Spec.", "f1": "F1",
                 "auc": "AUC"}


@dataclass(frozen=True)
class Variant:
    """One model variant: the TrainConfig fields it sets (everything else is the default recipe)."""

    name: str
    label: str
    attention: str
    loss: str

    def config(self, arch: str, budget: str | None = None, **given: Any) -> TrainConfig:
        """The variant's config for ``arch``; ``budget`` (a ``TrainConfig`` budget such as ``"paper"``: 700
        epochs with early stopping) and ``given`` (None values skipped) set budget fields only."""
        return TrainConfig.resolve(budget=budget, arch=arch, attention=self.attention, loss=self.loss,
                                   **given)


VARIANTS: tuple[Variant, ...] = (
    Variant("base", "NAS (base)", "none", "softmax"),
    Variant("cbam", "NAS+CBAM", "cbam", "softmax"),
    Variant("asoftmax", "NAS+A-Softmax", "none", "asoftmax"),
    Variant("cbam-asoftmax", "NAS+CBAM+A-Softmax", "cbam", "asoftmax"),
    Variant("spatial-first", "spatial-first CBAM+A-Softmax", "cbam-spatial-first", "asoftmax"),
)
VARIANT = {v.name: v for v in VARIANTS}
#: Table rows: (variant name, row label).
TABLE2: tuple[tuple[str, str], ...] = tuple((v.name, v.label) for v in VARIANTS[:4])
TABLE3: tuple[tuple[str, str], ...] = (("cbam-asoftmax", "channel-first"), ("spatial-first", "spatial-first"))


def arch_slug(arch: str | ArchSpec) -> str:
    """A folder name for an architecture, one-to-one: ``[4,4,[4,4],[4,8],[8]]`` -> ``4_4_4-4_4-8_8``."""
    spec = arch if isinstance(arch, ArchSpec) else ArchSpec.parse(str(arch))
    return "_".join([*(str(c) for c in spec.stem), *("-".join(map(str, s)) for s in spec.stages)])


def cv_dir(out_dir: str | Path, variant: str, arch: str) -> CVDir:
    """The cv folder of one (variant, architecture) pair."""
    return CVDir(Path(out_dir) / variant / arch_slug(arch))


def parse_archs(archs: Sequence[str]) -> list[str]:
    """Canonical architecture strings; ``ValueError`` naming ``--archs`` for a bad or repeated one."""
    if not archs:
        raise ValueError("--archs: no architecture given")
    out: list[str] = []
    for text in archs:
        try:
            arch = str(ArchSpec.parse(str(text)))
        except ValueError as exc:
            raise ValueError(f"--archs: {text!r}: {exc}") from None
        if arch in out:
            raise ValueError(f"--archs: {arch} given twice")
        out.append(arch)
    return out


def plan(archs: Sequence[str], *, epochs: int | None = None, threads: int | None = None,
         variants: Sequence[str] | None = None,
         budget: str | None = None) -> dict[tuple[str, str], TrainConfig]:
    """``{(variant, arch): TrainConfig}`` for every variant and architecture, in table order (``budget``: a
    ``TrainConfig`` budget, e.g. ``"paper"`` for 700 epochs with early stopping; ``epochs`` overrides it)."""
    names = list(variants) if variants is not None else [v.name for v in VARIANTS]
    unknown = [n for n in names if n not in VARIANT]
    if unknown:
        raise ValueError(f"unknown ablation variants {unknown}; valid: {', '.join(VARIANT)}")
    return {(name, arch): VARIANT[name].config(arch, budget, epochs=epochs, num_threads=threads)
            for name in names for arch in parse_archs(archs)}


def validate(dataset: Any, configs: dict[tuple[str, str], TrainConfig], folds: Sequence[int],
             out_dir: str | Path) -> None:
    """Everything checkable before training: folds present with both classes in the test fold and in the
    inner splits, and a writable output folder. Raises ``ValueError``/``DataError`` naming the option."""
    from naslung.train.cv import validate_cv

    labels = np.asarray(dataset.labels)
    fold_of = np.asarray(dataset.fold)
    for config in configs.values():
        validate_cv(dataset, config, folds, (REFERENCE,))
    for fold in folds:
        classes = sorted({int(c) for c in labels[fold_of == int(fold)].tolist()})
        if len(classes) < 2:
            raise ValueError(f"--folds: test fold {fold} holds only class {classes}; sensitivity, "
                             f"specificity and AUC are undefined there")
    check_writable(Path(out_dir))


def check_writable(out: Path) -> None:
    """Refuse an ``--out`` that is a file or lies where nothing can be written."""
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out}: is a file, expected a folder")
    from naslung.paths import check_creatable

    check_creatable(out, f"--out {out}")


def _run_one(dataset: Any, config: TrainConfig, folds: list[int], out: str, source: str,
             progress: Progress | None = None) -> list[dict[str, Any]]:
    """Run one cv folder; its per-fold rows (the CNN's and the reference's)."""
    from naslung.train.cv import run_cv

    return run_cv(dataset, config, folds, out, baselines=(REFERENCE,), progress=progress, source=source).rows


def _cv_job(data: str, config: dict[str, Any], folds: list[int], out: str,
            source: str) -> list[dict[str, Any]]:
    """:func:`_run_one` in a spawned worker, which loads its own copy of the dataset."""
    from naslung.fingerprint import load_dataset

    return _run_one(load_dataset(data), TrainConfig.from_dict(config), folds, out, source)


def run_ablation(data: str | Path, archs: Sequence[str], folds: Sequence[int], out_dir: str | Path, *,
                 epochs: int | None = None, threads: int | None = None, jobs: int = 1,
                 variants: Sequence[str] | None = None, progress: Progress | None = None,
                 log: Callable[[str], None] | None = None, budget: str | None = None) -> dict[str, Any]:
    """Train every (variant, arch) cv folder over ``folds``; write and return ``ablation.json``'s payload.

    ``jobs > 1`` runs that many cv folders at once in spawned processes, each single-threaded unless
    ``threads`` says otherwise. Everything is validated before the first epoch; finished folds are read back.
    """
    from naslung.data.source import PHANTOM_NOTE, is_phantom_kind
    from naslung.fingerprint import fingerprint_of, load_dataset
    from naslung.lock import output_lock

    if jobs < 1:
        raise ValueError(f"--jobs: must be >= 1, got {jobs}")
    if threads is not None and threads < 1:
        raise ValueError(f"--threads: must be >= 1, got {threads}")
    folds = sorted({int(f) for f in folds})
    configs = plan(archs, epochs=epochs, threads=threads if threads or jobs == 1 else 1, variants=variants,
                   budget=budget)
    try:
        dataset = load_dataset(data)
    except (FileNotFoundError, ValueError) as exc:
        raise DataError(f"--data: {exc}") from None
    out = Path(out_dir)
    validate(dataset, configs, folds, out)
    phantom = is_phantom_kind(dataset.source_kind)
    fingerprint = fingerprint_of(dataset)
    started = time.perf_counter()
    with output_lock(out, "naslung ablate"):
        rows_of: dict[tuple[str, str], list[dict[str, Any]]] = {}
        if jobs == 1 or len(configs) == 1:
            for k, (key, cfg) in enumerate(configs.items(), 1):
                _log(log, f"[{k}/{len(configs)}] {key[0]} ({cfg.attention}, {cfg.loss}) {key[1]}")
                rows_of[key] = _run_one(dataset, cfg, folds, str(cv_dir(out, *key).path), str(data), progress)
        else:
            del dataset  # each worker loads its own copy
            tasks = [(key, (str(data), cfg.to_dict(), folds, str(cv_dir(out, *key).path), str(data)))
                     for key, cfg in configs.items()]
            rows_of = _parallel(tasks, jobs, log)
        result = _payload(configs, rows_of, folds, out, phantom, fingerprint, str(data),
                          time.perf_counter() - started)
        result["note"] = PHANTOM_NOTE if phantom else None
        write_json_atomic(out / JSON_NAME, result)
        write_text_atomic(out / MARKDOWN_NAME, to_markdown(result))
    return result


def _log(log: Callable[[str], None] | None, message: str) -> None:
    if log is not None:
        log(message)


def _parallel(tasks: list[tuple[tuple[str, str], tuple[Any, ...]]], jobs: int,
              log: Callable[[str], None] | None) -> dict[tuple[str, str], list[dict[str, Any]]]:
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    from naslung.data.phantom.build import die_with_parent

    rows_of = {}
    with ProcessPoolExecutor(min(jobs, len(tasks)), mp_context=get_context("spawn"),
                             initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
        futures = {pool.submit(_cv_job, *args): key for key, args in tasks}
        for k, future in enumerate(as_completed(futures), 1):
            key = futures[future]
            rows_of[key] = future.result()
            _log(log, f"[{k}/{len(tasks)}] {key[0]} {key[1]} done")
    return {key: rows_of[key] for key, _ in tasks}


def _payload(configs: dict[tuple[str, str], TrainConfig],
             rows_of: dict[tuple[str, str], list[dict[str, Any]]], folds: list[int], out: Path,
             phantom: bool, fingerprint: str, source: str, seconds: float) -> dict[str, Any]:
    per_fold, reference = [], {}
    for (name, arch), rows in rows_of.items():
        folder = str(cv_dir(out, name, arch).path.relative_to(out))
        for row in rows:
            if row["method"] == CNN:
                per_fold.append({"variant": name, "arch": arch, "cv_dir": folder, **_clean(row)})
            elif row["method"] == REFERENCE:
                reference.setdefault(int(row["fold"]), _clean(row))  # same split for every variant
    names = list(dict.fromkeys(name for name, _ in configs))
    summary = [summarize_variant(name, [r for r in per_fold if r["variant"] == name]) for name in names]
    ref_rows = [reference[f] for f in sorted(reference)]
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "archs": list(dict.fromkeys(a for _, a in configs)),
        "folds": folds, "phantom": phantom, "dataset": {"source": source, "fingerprint": fingerprint},
        "variants": [{"name": n, "label": VARIANT[n].label, "attention": VARIANT[n].attention,
                      "loss": VARIANT[n].loss, "head": HEAD_FOR_LOSS[VARIANT[n].loss]}
                     for n in names],
        "configs": {f"{n}/{arch_slug(a)}": c.to_dict() for (n, a), c in configs.items()},
        "per_fold": per_fold, "summary": summary,
        "reference": {**summarize(ref_rows, REFERENCE), "per_fold": ref_rows},
        "tables": {"table2": [list(r) for r in TABLE2 if r[0] in names],
                   "table3": [list(r) for r in TABLE3 if r[0] in names]},
        "std": "sample standard deviation (ddof=1) over architectures x test folds; NaN folds are skipped",
        "seconds": seconds,
    }


def summarize_variant(name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample std over all (arch, fold) rows of one variant; params averaged over architectures."""
    out = summarize(rows, name)
    out["variant"] = out.pop("method")
    out["label"] = VARIANT[name].label
    per_arch = {r["arch"]: r["params"] for r in rows if r.get("params") is not None}
    out["params"] = float(np.mean(list(per_arch.values()))) if per_arch else None
    out["archs"] = len(per_arch)
    return out


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    """A cv row as JSON-safe values (NaN stays NaN; ``write_json_atomic`` writes it as JSON does)."""
    return {k: (float(v) if isinstance(v, np.floating) else v) for k, v in row.items() if k != "method"}


def _cell(summary: dict[str, Any], metric: str) -> str:
    mean, std = summary.get(f"{metric}_mean"), summary.get(f"{metric}_std")
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    spread = "-" if std is None or (isinstance(std, float) and math.isnan(std)) else f"{100 * std:.2f}"
    return f"{100 * mean:.2f} ± {spread}"


def table_rows(result: dict[str, Any], table: str) -> list[list[str]]:
    """Rows of ``"table2"`` or ``"table3"``: label, one ``mean ± std`` cell per metric, params."""
    by_name = {s["variant"]: s for s in result["summary"]}
    rows = []
    for name, label in result["tables"][table]:
        s = by_name[name]
        params = f"{s['params'] / 1e6:.4f}" if s.get("params") else "-"
        rows.append([label, *(_cell(s, m) for m in SUMMARY_METRICS), str(s["folds"]), params])
    if table == "table2" and result.get("reference", {}).get("folds"):
        ref = result["reference"]
        rows.append(["diameter baseline (same splits)", *(_cell(ref, m) for m in SUMMARY_METRICS),
                     str(ref["folds"]), "-"])
    return rows


TABLE_HEADERS = ["variant", *METRIC_LABELS.values(), "runs", "para.(M)"]
TABLE_TITLES = {"table2": "Table 2 analogue: CBAM and A-Softmax ablation",
                "table3": "Table 3 analogue: order of the attention in CBAM (with A-Softmax)"}


def to_markdown(result: dict[str, Any]) -> str:
    """The two tables as markdown, with the protocol line and the phantom note when it applies."""
    lines = [f"# Ablation (paper section 4.3): {len(result['archs'])} architecture(s) x test folds "
             f"{','.join(map(str, result['folds']))}", ""]
    if result.get("note"):
        lines += [f"**{result['note']}**", ""]
    lines += [f"Architectures: {', '.join(f'`{a}`' for a in result['archs'])}. Percent, mean ± sample std "
              "over architectures x test folds; each fold's epoch picked on the inner validation split.", ""]
    for key, title in TABLE_TITLES.items():
        rows = table_rows(result, key)
        if not rows:
            continue
        lines += [f"## {title}", "", "| " + " | ".join(TABLE_HEADERS) + " |",
                  "|" + "---|" + "---:|" * (len(TABLE_HEADERS) - 1)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines.append("")
    return "\n".join(lines)


def read_ablation(path: str | Path) -> dict[str, Any]:
    """An ``ablation.json`` (or the folder holding one), schema-checked; errors name the file."""
    from naslung.atomic import read_json

    path = Path(path)
    if path.is_dir():
        path = path / JSON_NAME
    data = read_json(path, "ablation summary")
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a naslung ablation summary")
    return data
