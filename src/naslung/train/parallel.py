"""Independent training runs side by side, one spawned single-threaded process per job.

On a CPU of few cores, two single-threaded runs at once beat one two-threaded run (OpenMP threads of one
small model wait on each other; docs/performance.md), and the folds of a cv and the members of an ensemble are
independent runs. Each worker reads the dataset from its file and calls :func:`~naslung.train.engine.fit`
with ``resume=True``, so a killed batch resumes, and a run finished earlier is only read back. Workers end
with their parent (:func:`~naslung.data.phantom.build.die_with_parent`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from naslung.progress import Progress, tracked
from naslung.train.config import TrainConfig
from naslung.train.init import WeightInit
from naslung.train.rundir import RunDir


def fit_side_by_side(data_path: str | Path, tasks: Sequence[tuple[TrainConfig, int, Path]], jobs: int,
                     progress: Progress | None = None, init: WeightInit | None = None) -> None:
    """Train each unfinished ``(config, test_fold, run_dir)`` of ``tasks``, ``jobs`` at once, 1 thread each.

    ``data_path`` is the crop dataset file every worker loads. Raises the first worker's error (the other
    runs keep what they finished: they resume on the next call). ``init``: the weights every run starts from
    (:mod:`naslung.train.init`), sent to each worker.
    """
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    from naslung.data.phantom.build import die_with_parent

    if jobs < 1:
        raise ValueError(f"--jobs: must be >= 1, got {jobs}")
    data = Path(data_path)
    if not str(data_path) or not data.is_file():
        where = f"{data} is not a file" if str(data_path) else "none was given"
        raise ValueError(f"--jobs {jobs}: the runs load the dataset from its file, and {where}")
    todo = [(config.replace(num_threads=1), int(fold), Path(out)) for config, fold, out in tasks
            if not RunDir(out).finished()]
    if not todo:
        return
    pool = ProcessPoolExecutor(min(jobs, len(todo)), mp_context=get_context("spawn"),
                               initializer=die_with_parent, initargs=(os.getpid(),))
    with pool, tracked(progress, "runs side by side", len(todo)) as report:
        futures = [pool.submit(_fit_job, str(data), config.to_dict(), fold, str(out), init)
                   for config, fold, out in todo]
        for future in as_completed(futures):
            future.result()
            report(1)


def _fit_job(data: str, config: dict[str, Any], fold: int, out: str, init: WeightInit | None = None) -> None:
    import torch

    from naslung.data.dataset import load_dataset
    from naslung.train.engine import fit

    torch.set_num_threads(1)
    fit(load_dataset(data), TrainConfig.from_dict(config), test_fold=fold, out_dir=out, resume=True,
        source=data, init=init)
