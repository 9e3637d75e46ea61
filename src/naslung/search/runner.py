"""Run a POP search end to end: configuration, latency model, resume, executor, outputs.

:func:`run_search` is what ``naslung search`` calls. It enumerates the space, computes every candidate's
analytic cost, fits (or loads) the latency model, replays ``trials.jsonl`` when resuming, hands a
:class:`SearchDriver` to the chosen executor and writes ``pareto.json`` and the plot.

Data protocol (never select on a test fold; docs/explanation.md, "The protocol"): by default the paper's test
folds 1-5 are
removed from the dataset before anything else, and candidates train and validate on folds 0, 6-9 through
``fit(dev, config, test_fold=None)``, whose inner validation split comes from those folds. The objective is
that inner-validation score (accuracy or F1), never a test score.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from naslung.search import records as rec
from naslung.search.config import SearchConfig
from naslung.search.costs import space_costs
from naslung.search.driver import SearchDriver, SearchFailedError, summary, write_pareto
from naslung.search.latency_model import FEATURES, LatencyModel, cached_model, calibrate
from naslung.search.objective import Evaluator, TrainEvaluator
from naslung.search.pop import PopState
from naslung.search.resume import check_resume, replay, saved_config
from naslung.search.space import SearchSpace

__all__ = ["SearchConfig", "SearchFailedError", "SearchResult", "run_search"]


@dataclass
class SearchResult:
    """What :func:`run_search` returns; ``config`` is the search's resolved configuration."""

    out: Path
    state: PopState
    records: list[dict[str, Any]]
    latency_model: LatencyModel
    stop_reason: str | None
    seconds: float
    new_trials: int
    config: SearchConfig

    @property
    def summary(self) -> dict[str, Any]:
        return {
            **summary(self.state, self.stop_reason),
            "seconds": self.seconds,
            "new_trials": self.new_trials,
            "latency_mape_trained": trained_latency_error(self.records),
        }


def trained_latency_error(records: list[dict[str, Any]]) -> float | None:
    """MAPE of the latency model on the trained candidates (predicted vs measured during the search).

    Differs from the held-out calibration error when the device's load changed between calibration and
    trials; pruning compares predictions with predictions, so a uniform bias does not change what is pruned.
    """
    pairs = [
        (r["latency_pred_ms"], r["latency_ms"]) for r in records if r["status"] == "ok" and r["latency_ms"]
    ]
    if not pairs:
        return None
    return float(np.mean([abs(p - m) / m for p, m in pairs]))


def default_evaluator(config: SearchConfig) -> TrainEvaluator:
    """The training-engine evaluator for ``config.data``: every candidate trains with ``config.train``."""
    if config.data is None:
        raise ValueError("a search needs --data (a naslung crop dataset file)")
    return TrainEvaluator(
        data_path=str(Path(config.data).resolve()),
        train=config.train,
        exclude_folds=config.exclude_folds,
        latency=config.latency.measure_options(),
    )


def latency_context(config: SearchConfig, evaluator: Evaluator, space: SearchSpace) -> dict[str, Any]:
    """What the latency model depends on: device, threads, input, options, space, sample and fit settings."""
    import torch

    lat = config.latency
    return {
        "device": evaluator.device_label(),
        "threads": lat.threads,
        "size": evaluator.size,
        "spatial_dims": evaluator.spatial_dims,
        **evaluator.options,
        "space": space.config(),
        "samples": lat.samples,
        "warmup": lat.warmup,
        "repeats": lat.repeats,
        "kind": lat.kind,
        "path": lat.path,
        "features": list(FEATURES),
        "seed": config.seed,
        "torch": torch.__version__,
    }


def run_search(
    config: SearchConfig,
    evaluator: Evaluator | None = None,
    resume: bool = False,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    on_status: Callable[[str], None] | None = None,
    plot_note: str = "",
) -> SearchResult:
    """Run (or resume) a POP search into ``config.out``; see the module docstring.

    ``plot_note`` is added to the plot title (e.g. "phantom data"); ``on_record`` sees every new trial record.
    Options, devices and the dataset are checked before the first trial; the folder is locked against a
    second search, a resume against another dataset or changed settings is refused, failed trials of an
    earlier run are trained again first, and a search in which no trial succeeds raises
    :class:`SearchFailedError`. ``config`` itself is never changed; the result carries the resolved one.
    """
    from naslung.lock import output_lock

    check_devices(config)
    with output_lock(Path(config.out), "naslung search"):
        return _run_search(config, evaluator, resume, on_record, on_status, plot_note)


def check_devices(config: SearchConfig) -> None:
    """Refuse ``cuda`` (training or latency) on a machine without a CUDA device, before any work."""
    import torch

    for device, option in ((config.train.device, "--device"), (config.latency.device, "--latency-device")):
        if device == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"{option} cuda: no CUDA device is available on this machine")


def validate_evaluator(evaluator: Evaluator) -> None:
    """Check a training evaluator's dataset and options once, before the first trial.

    Loads the development folds (a file lacking ``labels``, or every fold excluded, fails here), requires
    both classes there, resolves the training device and carves the inner validation split.
    """
    if not isinstance(evaluator, TrainEvaluator):
        return
    from naslung.train.engine import data_split, resolve_device

    dev = evaluator.development_data()
    classes = sorted({int(c) for c in np.asarray(dev.labels).tolist()})
    if len(classes) < 2:
        excluded = list(evaluator.exclude_folds)
        raise ValueError(f"{evaluator.data_path}: the development folds (outside {excluded}) hold only "
                         f"class {classes}; a search needs benign and malignant nodules")
    resolve_device(evaluator.train.device)
    data_split(dev, evaluator.train, None)


def _run_search(
    config: SearchConfig,
    evaluator: Evaluator | None,
    resume: bool,
    on_record: Callable[[dict[str, Any]], None] | None,
    on_status: Callable[[str], None] | None,
    plot_note: str,
) -> SearchResult:
    t_start = time.perf_counter()
    status = on_status or (lambda _msg: None)
    out = Path(config.out)
    if resume:
        rec.repair_log(out)
    existing = rec.read_trials(out)
    if not resume and (existing or (out / rec.CONFIG).exists()):
        raise FileExistsError(
            f"{out}: already holds a search; pass --resume to continue it or choose another --out"
        )
    fingerprint = None
    if config.data is not None:
        from naslung.fingerprint import file_fingerprint

        fingerprint = file_fingerprint(config.data)
        config = config.replace(data=str(Path(config.data).resolve()))
    if resume and (out / rec.CONFIG).exists():
        check_resume(out, config, fingerprint)
        # New trials are timed on the path the folder's trials were timed on (eager for old folders).
        config = config.replace(latency=replace(config.latency, path=saved_config(out).latency.path))
    evaluator = evaluator if evaluator is not None else default_evaluator(config)
    validate_evaluator(evaluator)
    out.mkdir(parents=True, exist_ok=True)

    status("enumerating the search space")
    space = SearchSpace(channels=config.space.channels, depth_range=config.space.depth_range)
    costs = space_costs(
        space,
        size=int(evaluator.size or 32),
        spatial_dims=int(evaluator.spatial_dims or 3),
        **evaluator.options,
    )
    latency_model = _latency_model(config, evaluator, space, costs, resume, status)
    predicted = np.maximum(latency_model.predict(costs), 1e-6)

    state = PopState(space, predicted, config.latency_budget_ms, config.seed)
    if config.latency_budget_ms is not None and not state.in_budget.any():
        fastest = float(predicted.min())
        raise ValueError(f"--max-latency-ms {config.latency_budget_ms:g}: no architecture of the space is "
                         f"predicted at or under it (the fastest is predicted at {fastest:.3g} ms on this "
                         f"device); raise the budget")
    retry = replay(state, existing)
    rec.write_config(
        out,
        {
            "config": config.to_dict(),
            "space": space.config(),
            "input": {"size": evaluator.size, "spatial_dims": evaluator.spatial_dims, **evaluator.options},
            "protocol": (
                f"candidates train and validate on folds outside {list(config.exclude_folds)} "
                f"(inner validation split of those folds); objective: validation {config.metric}"
            ),
            "latency_model": {k: latency_model.to_dict()[k] for k in ("kind", "features", "coef", "metrics")},
            "dataset": {"path": config.data, "fingerprint": fingerprint},
            "provenance": _provenance(),
        },
    )

    driver = SearchDriver(config, state, costs, evaluator, out, list(existing), on_record)
    driver.retry = retry
    if config.executor.name == "ray":
        from naslung.search.executors.ray_tune import run_ray

        run_ray(driver)
    else:
        from naslung.search.executors.local import run_local

        run_local(driver)
    stop = driver.stopped or driver.stop_reason()
    write_pareto(out, state, driver.records, stop)
    try:
        from naslung.search.plot import plot_search

        plot_search(driver.records, state, out / rec.PLOT, note=plot_note)
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        pass
    new = driver.records[len(existing):]
    if new and not state.trained:
        raise SearchFailedError(
            f"{out}: all {len(new)} trials failed, the Pareto front is empty; last error: {new[-1]['error']} "
            f"(fix the cause and rerun with --resume: failed trials are trained again)")
    return SearchResult(
        out,
        state,
        driver.records,
        latency_model,
        stop,
        time.perf_counter() - t_start,
        len(new),
        config,
    )


def _latency_model(config: SearchConfig, evaluator: Evaluator, space: SearchSpace,
                   costs: dict[str, np.ndarray], resume: bool, status: Callable[[str], None]) -> LatencyModel:
    """The folder's latency model on resume, else a cached or freshly calibrated one (saved to the folder)."""
    model_path = Path(config.out) / rec.LATENCY_MODEL
    if resume and model_path.exists():
        return LatencyModel.load(model_path)
    context = latency_context(config, evaluator, space)
    lat = config.latency

    def build() -> LatencyModel:
        status(f"calibrating the latency model on {lat.samples} measured candidates")
        return calibrate(
            costs,
            lambda i: float(evaluator.measure(space[i])["latency_ms"]),
            n=lat.samples,
            seed=config.seed,
            kind=lat.kind,
            context=context,
        )

    model = cached_model(context, build)
    model.save(model_path)
    return model


def _provenance() -> dict[str, Any]:
    from naslung.provenance import provenance

    return provenance()
