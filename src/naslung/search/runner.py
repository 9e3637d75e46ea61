"""Run a POP search end to end: configuration, latency model, resume, executor, outputs.

:func:`run_search` is what ``naslung search`` calls. It enumerates the space, computes every candidate's
analytic cost, fits (or loads) the latency model, replays ``trials.jsonl`` when resuming, hands a
:class:`SearchDriver` to the chosen executor and writes ``pareto.json`` and the plot.

Data protocol (never select on a test fold; README, "Protocol"): by default the paper's test folds 1-5 are
removed from the dataset before anything else, and candidates train and validate on folds 0, 6-9 through
``fit(dev, config, test_fold=None)``, whose inner validation split comes from those folds. The objective is
that inner-validation score (accuracy or F1), never a test score.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from naslung.models.spec import PAPER_CHANNELS, PAPER_DEPTH, ArchSpec
from naslung.search import records as rec
from naslung.search.costs import space_costs
from naslung.search.latency_model import FEATURES, LatencyModel, cached_model, calibrate
from naslung.search.objective import PAPER_TEST_FOLDS, Evaluator, TrainEvaluator
from naslung.search.pop import PopState
from naslung.search.space import SearchSpace

METRICS = ("accuracy", "f1")
EXECUTORS = ("local", "ray")
#: Settings that decide the numbers; a resumed search must keep them (budgets, executor, patience may change).
IDENTITY = (
    "data",
    "epochs",
    "metric",
    "attention",
    "loss",
    "seed",
    "exclude_folds",
    "channels",
    "depth_range",
    "batch_size",
    "latency_budget_ms",
)
#: Consecutive failures at the start of a search that mean the set-up itself is broken.
MAX_INITIAL_FAILURES = 3
#: Failed trials do not consume the trial budget; this many failures in a row stop the search anyway.
MAX_CONSECUTIVE_FAILURES = 10
DEVICES = ("auto", "cpu", "cuda")


class SearchFailedError(RuntimeError):
    """No trial of the search trained successfully (the search exits non-zero)."""


@dataclass
class SearchConfig:
    """Everything that configures a search (written resolved to ``search_config.json``).

    Defaults follow the paper where it speaks: CBAM + A-Softmax candidates, 10 epochs per candidate (section
    4.1.3), channels {4..128}, depth 3-9. ``budget_trials``/``patience``/``budget_minutes`` set to ``None``
    disable that stop. The time budget stops *new* trials; running ones finish and are recorded.
    """

    out: str
    data: str | None = None
    budget_trials: int | None = 50
    budget_minutes: float | None = None
    patience: int | None = None
    epochs: int = 10
    metric: str = "accuracy"
    latency_budget_ms: float | None = None
    attention: str = "cbam"
    loss: str = "asoftmax"
    seed: int = 0
    exclude_folds: tuple[int, ...] = PAPER_TEST_FOLDS
    executor: str = "local"
    concurrency: int = 1
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    ray_address: str | None = None
    channels: tuple[int, ...] = PAPER_CHANNELS
    depth_range: tuple[int, int] = PAPER_DEPTH
    batch_size: int = 32
    device: str = "auto"
    num_threads: int | None = None
    latency_samples: int = 40
    latency_warmup: int = 3
    latency_repeats: int = 10
    latency_threads: int = 1
    latency_device: str = "cpu"
    latency_kind: str = "linear"

    def __post_init__(self) -> None:
        self.exclude_folds = tuple(int(f) for f in self.exclude_folds)
        self.channels = tuple(int(c) for c in self.channels)
        self.depth_range = (int(self.depth_range[0]), int(self.depth_range[1]))
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r}; valid: {', '.join(METRICS)}")
        if self.executor not in EXECUTORS:
            raise ValueError(f"unknown executor {self.executor!r}; valid: {', '.join(EXECUTORS)}")
        for name in ("budget_trials", "patience", "concurrency", "epochs", "latency_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.budget_minutes is not None and self.budget_minutes <= 0:
            raise ValueError(f"budget_minutes must be positive, got {self.budget_minutes}")
        for name in ("batch_size", "latency_repeats", "latency_threads", "cpus_per_trial"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads (--threads) must be >= 1, got {self.num_threads}")
        for name in ("device", "latency_device"):
            if getattr(self, name) not in DEVICES:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; valid: {', '.join(DEVICES)}")
        if self.latency_samples < len(FEATURES) + 2:
            raise ValueError(f"latency_samples must be >= {len(FEATURES) + 2} to fit the latency model, "
                             f"got {self.latency_samples}")
        outside = [f for f in self.exclude_folds if not 0 <= f <= 9]
        if outside:
            raise ValueError(f"exclude_folds {outside} are outside the LUNA16 subsets 0-9")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("exclude_folds", "channels", "depth_range"):
            data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Trial:
    """A suggested candidate on its way through an executor."""

    index: int
    spec: ArchSpec
    seed: int
    started: str
    t0: float = field(default_factory=time.perf_counter)


def trial_seed(seed: int, index: int) -> int:
    """Training seed of a candidate: depends on the search seed and the architecture, not on the order."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0] % (2**31 - 1))


class SearchDriver:
    """Glue between :class:`PopState` and an executor: suggests trials, records results, checks budgets."""

    def __init__(
        self,
        config: SearchConfig,
        state: PopState,
        costs: dict[str, np.ndarray],
        evaluator: Evaluator,
        out: Path,
        records: list[dict[str, Any]],
        on_record: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.config, self.state, self.costs, self.evaluator, self.out = config, state, costs, evaluator, out
        self.records = records
        self.on_record = on_record
        self.started = time.perf_counter()
        self.deadline = (
            None if config.budget_minutes is None else self.started + 60.0 * float(config.budget_minutes)
        )
        self.stopped: str | None = None
        self._fresh_failures = 0
        self._failures_in_a_row = 0
        #: Candidates that failed before a resume: trained again first.
        self.retry: list[int] = []

    def stop_reason(self) -> str | None:
        """Why to stop now, or None. Only successful (and running) trials count towards the trial budget."""
        budget = self.config.budget_trials
        if budget is not None and len(self.state.trained) + len(self.state.running) >= budget:
            return "trial budget"
        if self._failures_in_a_row >= MAX_CONSECUTIVE_FAILURES:
            return f"{MAX_CONSECUTIVE_FAILURES} failed trials in a row"
        reason = None if self.retry else self.state.stop_reason(None, self.config.patience)
        if reason is None and self.deadline is not None and time.perf_counter() >= self.deadline:
            reason = "time budget"
        return reason

    def next_trial(self) -> Trial | None:
        """The next candidate to train, or ``None`` (and :attr:`stopped` set) when the search should stop."""
        self.stopped = self.stop_reason()
        if self.stopped is not None:
            return None
        if self.retry:
            index: int | None = self.retry.pop(0)
            self.state.running.add(int(index))
        else:
            index = self.state.suggest()
        if index is None:  # pragma: no cover - stop_reason already covers an empty candidate set
            self.stopped = "search space exhausted"
            return None
        return Trial(index, self.state.space[index], trial_seed(self.config.seed, index), rec.now_iso())

    def finish(
        self, trial: Trial, outcome: dict[str, Any] | None, error: str | None = None
    ) -> dict[str, Any]:
        """Record a finished trial (``outcome`` from the evaluator, or ``error``), prune, persist."""
        wall = time.perf_counter() - trial.t0
        score = None
        if outcome is not None and error is None:
            value = outcome.get("metrics", {}).get(self.config.metric)
            if value is not None and np.isfinite(value):
                score = float(value)
            else:
                error = f"validation {self.config.metric} is undefined ({value})"
        latency = outcome.get("latency_ms") if outcome else None
        changed = self.state.complete(trial.index, score, latency if score is not None else None)
        i = trial.index
        outcome = outcome or {}
        record = rec.trial_record(
            trial=len(self.records),
            index=i,
            spec=str(trial.spec),
            status="ok" if score is not None else "error",
            error=error,
            metric=self.config.metric,
            score=score,
            val_metrics=outcome.get("metrics"),
            epochs=outcome.get("epochs"),
            epoch=outcome.get("epoch"),
            seed=trial.seed,
            params=int(self.costs["params"][i]),
            macs=int(self.costs["macs"][i]),
            activation_bytes=int(self.costs["activation_bytes"][i]),
            latency_ms=latency,
            latency_pred_ms=float(self.state.latency[i]),
            latency_device=outcome.get("latency_device"),
            latency_threads=outcome.get("latency_threads"),
            wall_s=wall,
            train_seconds=outcome.get("train_seconds"),
            started=trial.started,
            finished=rec.now_iso(),
            executor=self.config.executor,
            front_changed=changed,
            pruned=int(self.state.pruned.sum()),
            remaining=int(len(self.state.candidates())),
        )
        rec.append_trial(self.out, record)
        self.records.append(record)
        write_pareto(self.out, self.state, self.records, self.stop_reason())
        if self.on_record is not None:
            self.on_record(record)
        self._fresh_failures = self._fresh_failures + 1 if score is None and not self.state.trained else 0
        self._failures_in_a_row = self._failures_in_a_row + 1 if score is None else 0
        if self._fresh_failures >= MAX_INITIAL_FAILURES:
            raise SearchFailedError(
                f"{self.out}: the first {MAX_INITIAL_FAILURES} trials all failed; last error: {error}")
        return record


def front_records(state: PopState, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The trial records of the current front, by measured latency ascending."""
    by_index = {r["index"]: r for r in records if r["status"] == "ok"}
    keys = (
        "index",
        "spec",
        "score",
        "val_metrics",
        "latency_ms",
        "latency_pred_ms",
        "latency_device",
        "params",
        "macs",
        "trial",
    )
    return [{k: by_index[i][k] for k in keys} for i in state.front]


def summary(state: PopState, stop: str | None = None) -> dict[str, Any]:
    s: dict[str, Any] = dict(state.summary())
    s["pruned_fraction"] = s["pruned"] / s["space"] if s["space"] else 0.0
    s["stop_reason"] = stop
    return s


def write_pareto(out: Path, state: PopState, records: list[dict[str, Any]], stop: str | None = None) -> None:
    rec.write_pareto(out, front_records(state, records), summary(state, stop))


@dataclass
class SearchResult:
    """What :func:`run_search` returns."""

    out: Path
    state: PopState
    records: list[dict[str, Any]]
    latency_model: LatencyModel
    stop_reason: str | None
    seconds: float
    new_trials: int

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
    """The training-engine evaluator for ``config.data``."""
    if config.data is None:
        raise ValueError("a search needs --data (a naslung crop dataset file)")
    from naslung.search.members import search_train_fields

    train = search_train_fields(config.to_dict())
    latency = {
        "device": config.latency_device,
        "threads": config.latency_threads,
        "warmup": config.latency_warmup,
        "repeats": config.latency_repeats,
    }
    return TrainEvaluator(
        data_path=str(Path(config.data).resolve()),
        train=train,
        exclude_folds=config.exclude_folds,
        latency=latency,
    )


def _check_resume(out: Path, config: SearchConfig, fingerprint: str | None) -> None:
    from naslung.fingerprint import check_same

    recorded = rec.read_config(out)
    if fingerprint is not None:
        check_same((recorded.get("dataset") or {}).get("fingerprint"), fingerprint, out, "resume the search")
    saved = recorded.get("config", {})
    now = config.to_dict()
    if saved.get("data") and now.get("data"):
        now["data"] = str(Path(now["data"]).resolve())
    differ = [k for k in IDENTITY if saved.get(k) != now.get(k)]
    if differ:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in differ)
        raise ValueError(f"{out}: cannot resume with changed settings ({detail}); use another --out")


def latency_context(config: SearchConfig, evaluator: Evaluator, space: SearchSpace) -> dict[str, Any]:
    """What the latency model depends on: device, threads, input, options, space, sample and fit settings."""
    import torch

    return {
        "device": evaluator.device_label(),
        "threads": config.latency_threads,
        "size": evaluator.size,
        "spatial_dims": evaluator.spatial_dims,
        **evaluator.options,
        "space": space.config(),
        "samples": config.latency_samples,
        "warmup": config.latency_warmup,
        "repeats": config.latency_repeats,
        "kind": config.latency_kind,
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
    second search, a resume against another dataset is refused, failed trials of an earlier run are trained
    again first, and a search in which no trial succeeds raises :class:`SearchFailedError`.
    """
    from naslung.lock import output_lock

    check_devices(config)
    with output_lock(Path(config.out), "naslung search"):
        return _run_search(config, evaluator, resume, on_record, on_status, plot_note)


def check_devices(config: SearchConfig) -> None:
    """Refuse ``cuda`` (training or latency) on a machine without a CUDA device, before any work."""
    import torch

    for name, option in (("device", "--device"), ("latency_device", "--latency-device")):
        if getattr(config, name) == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"{option} cuda: no CUDA device is available on this machine")


def validate_evaluator(evaluator: Evaluator) -> None:
    """Check a training evaluator's dataset and options once, before the first trial.

    Loads the development folds (a file lacking ``labels``, or every fold excluded, fails here), requires
    both classes there, builds the training configuration and carves the inner validation split.
    """
    if not isinstance(evaluator, TrainEvaluator):
        return
    from naslung.train.config import TrainConfig
    from naslung.train.engine import data_split, resolve_device

    dev = evaluator.development_data()
    classes = sorted({int(c) for c in np.asarray(dev.labels).tolist()})
    if len(classes) < 2:
        excluded = list(evaluator.exclude_folds)
        raise ValueError(f"{evaluator.data_path}: the development folds (outside {excluded}) hold only "
                         f"class {classes}; a search needs benign and malignant nodules")
    try:
        train = TrainConfig(**{**evaluator.train, "arch": "[4,4,[4],[4],[4]]"})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"invalid training options for the search: {exc}") from None
    resolve_device(train.device)
    data_split(dev, train, None)


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
    if resume and (out / rec.CONFIG).exists():
        _check_resume(out, config, fingerprint)
    if config.data is not None:
        config.data = str(Path(config.data).resolve())
    evaluator = evaluator if evaluator is not None else default_evaluator(config)
    validate_evaluator(evaluator)
    out.mkdir(parents=True, exist_ok=True)

    status("enumerating the search space")
    space = SearchSpace(channels=config.channels, depth_range=config.depth_range)
    costs = space_costs(
        space,
        size=int(evaluator.size or 32),
        spatial_dims=int(evaluator.spatial_dims or 3),
        **evaluator.options,
    )

    model_path = out / rec.LATENCY_MODEL
    if resume and model_path.exists():
        latency_model = LatencyModel.load(model_path)
    else:
        context = latency_context(config, evaluator, space)

        def build() -> LatencyModel:
            status(f"calibrating the latency model on {config.latency_samples} measured candidates")
            return calibrate(
                costs,
                lambda i: float(evaluator.measure(space[i])["latency_ms"]),
                n=config.latency_samples,
                seed=config.seed,
                kind=config.latency_kind,
                context=context,
            )

        latency_model = cached_model(context, build)
        latency_model.save(model_path)
    predicted = np.maximum(latency_model.predict(costs), 1e-6)

    state = PopState(space, predicted, config.latency_budget_ms, config.seed)
    for r in existing:  # replay in completion order: same front history, hence the same patience counter
        state.complete(
            space.index(r["spec"]), r["score"] if r["status"] == "ok" else None, r["latency_ms"], prune=False
        )
    # Failed candidates (never trained successfully) are trained again, first, and do not count.
    trained_ok = {space.index(r["spec"]) for r in existing if r["status"] == "ok"}
    retry = list(dict.fromkeys(space.index(r["spec"]) for r in existing if r["status"] != "ok"))
    retry = [i for i in retry if i not in trained_ok]
    state.failed.difference_update(retry)
    state.reprune()
    retry = [i for i in retry if not state.pruned[i] and state.in_budget[i]]
    state.n_suggested = len(existing)
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
    if config.executor == "ray":
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
        len(driver.records) - len(existing),
    )


def _provenance() -> dict[str, Any]:
    from naslung.provenance import provenance

    return provenance()
