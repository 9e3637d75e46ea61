"""What configures a search: frozen, validated dataclasses, resolved once, written to ``search_config.json``.

:class:`SearchConfig` nests the candidates' training recipe (a :class:`~naslung.train.config.TrainConfig`,
the very object ``naslung train``/``cv`` use), the space (:class:`SpaceConfig`), the latency measurements
(:class:`LatencyConfig`) and the executor (:class:`ExecutorConfig`) under the search's own settings
(budgets, objective metric, seed, excluded folds).

Two ways in: :meth:`SearchConfig.resolve` takes the CLI's flat option names, where None means "the default"
(so no default is restated outside these classes); :meth:`SearchConfig.from_dict` reads a saved config, in
the nested form :meth:`SearchConfig.to_dict` writes or in the flat form of searches written before it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from naslung.models.latency import LATENCY_PATHS
from naslung.models.spec import PAPER_CHANNELS, PAPER_DEPTH, ArchSpec
from naslung.options import DEVICES, EXECUTORS, LATENCY_KINDS, METRICS, check_folds, check_option, check_seed
from naslung.search.latency_model import FEATURES
from naslung.search.objective import DEFAULT_LATENCY_PATH, PAPER_TEST_FOLDS
from naslung.search.select import MIN_BALANCED_ACCURACY
from naslung.train.config import RECIPES, TrainConfig

#: Epochs each candidate trains for (paper, section 4.1.3); every other training field is TrainConfig's.
CANDIDATE_EPOCHS = 10
#: TrainConfig fields set per trial (the candidate and its seed), not by the search's recipe.
PER_TRIAL = ("arch", "seed")
#: TrainConfig fields a resumed search may change: where and how fast it trains, not what it computes.
RESUMABLE_TRAIN = ("device", "num_threads")


#: TrainConfig fields a new search's candidates get over the TrainConfig defaults (a recipe and the options
#: given override them). AUC alone kept early epochs at the prior on real 3-D cubes (its ranking beats chance
#: before the decision does), so an epoch under search select's balanced-accuracy floor is kept only when no
#: epoch of the trial reaches it (naslung.train.selection.select_epoch). Searches saved before this rule read
#: back without it, as they trained.
CANDIDATE_TRAIN: dict[str, Any] = {"epochs": CANDIDATE_EPOCHS,
                                   "select_min_balanced_accuracy": MIN_BALANCED_ACCURACY}


def _candidate_train() -> TrainConfig:
    return TrainConfig(**CANDIDATE_TRAIN)


def _at_least(owner: str, name: str, value: float | None, low: float, optional: bool = False) -> None:
    if value is None and optional:
        return
    if value is None or not value >= low or not math.isfinite(value):
        raise ValueError(f"{owner}{name} must be >= {low:g}, got {value}")


@dataclass(frozen=True)
class SpaceConfig:
    """The space of eq. 5-6: block widths and the range of ``L+M+N`` (paper: {4..128}, 3-9)."""

    channels: tuple[int, ...] = PAPER_CHANNELS
    depth_range: tuple[int, int] = PAPER_DEPTH

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(sorted({int(c) for c in self.channels})))
        if len(self.depth_range) != 2:
            raise ValueError(f"space depth_range must be (min, max), got {self.depth_range}")
        object.__setattr__(self, "depth_range", (int(self.depth_range[0]), int(self.depth_range[1])))
        if not self.channels or self.channels[0] < 1:
            raise ValueError(f"space channels must be positive widths, got {list(self.channels)}")
        lo, hi = self.depth_range
        if lo < 3 or hi < lo:
            raise ValueError(f"space depth range {lo}-{hi} must satisfy 3 <= min <= max "
                             "(one block per stage)")


@dataclass(frozen=True)
class LatencyConfig:
    """How candidate latency is measured (batch 1, median of ``repeats`` after ``warmup``) and modelled.

    ``samples`` candidates are timed untrained to fit the latency model of ``kind``
    (``naslung.search.latency_model``) that POP prunes with. ``path`` is what is timed
    (:data:`naslung.models.latency.LATENCY_PATHS`): ``folded``, the serving path
    (:func:`naslung.models.fast.eval_model`: batch norm folded, ``channels_last_3d`` in 3-D), or ``eager``,
    the unfolded eval model. A saved config without a path was timed eagerly (:data:`LEGACY_LATENCY_PATH`),
    and a resumed search keeps its folder's path, so that every trial of one search is timed alike.
    """

    samples: int = 40
    warmup: int = 3
    repeats: int = 10
    threads: int = 1
    device: str = "cpu"
    kind: str = "linear"
    path: str = DEFAULT_LATENCY_PATH

    def __post_init__(self) -> None:
        check_option("latency_device", self.device, DEVICES)
        check_option("latency_kind", self.kind, LATENCY_KINDS)
        check_option("latency_path", self.path, LATENCY_PATHS)
        _at_least("latency_", "warmup", self.warmup, 0)
        for name in ("repeats", "threads"):
            _at_least("latency_", name, getattr(self, name), 1)
        if self.samples < len(FEATURES) + 2:
            raise ValueError(f"latency_samples must be >= {len(FEATURES) + 2} to fit the latency model, "
                             f"got {self.samples}")

    def measure_options(self) -> dict[str, Any]:
        """The options of :func:`naslung.models.latency.measure_latency` (``TrainEvaluator.latency``)."""
        return {"device": self.device, "threads": self.threads, "warmup": self.warmup,
                "repeats": self.repeats, "path": self.path}


#: The latency path of searches saved before :attr:`LatencyConfig.path` existed (they timed the eager model).
LEGACY_LATENCY_PATH = "eager"


@dataclass(frozen=True)
class ExecutorConfig:
    """Where trials run: ``local`` (one after another) or ``ray`` (Ray Tune, ``concurrency`` at once).

    ``concurrency`` None means 2 trials at once on Ray and 1 locally; ``ray_address`` None starts a local Ray.
    """

    name: str = "local"
    concurrency: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    ray_address: str | None = None

    def __post_init__(self) -> None:
        check_option("executor", self.name, EXECUTORS)
        if self.concurrency is None:
            object.__setattr__(self, "concurrency", 2 if self.name == "ray" else 1)
        _at_least("", "concurrency", self.concurrency, 1)
        if not 0 < self.cpus_per_trial < math.inf:
            raise ValueError(f"cpus_per_trial must be positive, got {self.cpus_per_trial}")
        _at_least("", "gpus_per_trial", self.gpus_per_trial, 0)


#: Flat option names (the CLI's, and the keys of the flat form) -> (section, field).
FLAT: dict[str, tuple[str, str]] = {
    **{k: ("train", k) for k in ("epochs", "attention", "loss", "batch_size", "device", "num_threads")},
    "channels": ("space", "channels"),
    "depth_range": ("space", "depth_range"),
    **{f"latency_{k}": ("latency", k)
       for k in ("samples", "warmup", "repeats", "threads", "device", "kind", "path")},
    "executor": ("executor", "name"),
    **{k: ("executor", k) for k in ("concurrency", "cpus_per_trial", "gpus_per_trial", "ray_address")},
}
SECTIONS = {"train": TrainConfig, "space": SpaceConfig, "latency": LatencyConfig, "executor": ExecutorConfig}


@dataclass(frozen=True)
class SearchConfig:
    """Everything that configures a search (written resolved to ``search_config.json``).

    Attributes:
        out: the search folder.
        data: the crop dataset file (None only with an evaluator that needs no data, in tests).
        train: the recipe every candidate trains with, the same :class:`TrainConfig` that ``naslung
            train``/``cv`` use (default: its defaults with the paper's 10 epochs per candidate). ``arch`` and
            ``seed`` are set per trial; ``split_seed`` follows ``seed``, so that every candidate validates on
            the same nodules; each keeps its epoch by ``train.select_metric`` (AUC; see ``__post_init__``).
        space, latency, executor: see :class:`SpaceConfig`, :class:`LatencyConfig`, :class:`ExecutorConfig`.
        budget_trials, budget_minutes, patience: stop after that many trained candidates, stop starting trials
            after that many minutes (running ones finish and are recorded), stop when the front is unchanged
            for that many trials; None disables that stop.
        latency_budget_ms: sample only candidates predicted at or under it (None: all).
        metric: the inner-validation objective (``naslung.options.METRICS``): it ranks trials and picks each
            trial's checkpoint; a 95 % bootstrap interval is stored for accuracy and f1.
        seed: seeds POP's sampling, the latency calibration sample, the trial seeds and the inner split.
        exclude_folds: folds the search never sees (default: the paper's test folds 1-5).
    """

    out: str
    data: str | None = None
    train: TrainConfig = field(default_factory=_candidate_train)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    budget_trials: int | None = 50
    budget_minutes: float | None = None
    patience: int | None = None
    latency_budget_ms: float | None = None
    metric: str = "accuracy"
    seed: int = 0
    exclude_folds: tuple[int, ...] = PAPER_TEST_FOLDS

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", str(self.out))
        if not self.out:
            raise ValueError("a search needs an output folder (--out)")
        if self.data is not None:
            object.__setattr__(self, "data", str(self.data))
        for name, kind in SECTIONS.items():
            if not isinstance(getattr(self, name), kind):
                raise TypeError(f"SearchConfig.{name} must be a {kind.__name__}, "
                                f"got {type(getattr(self, name)).__name__}")
        check_option("metric", self.metric, METRICS)
        check_seed("seed", self.seed)
        object.__setattr__(self, "exclude_folds", tuple(check_folds(self.exclude_folds, "exclude_folds")))
        for name in ("budget_trials", "patience"):
            _at_least("", name, getattr(self, name), 1, optional=True)
        if self.budget_minutes is not None and not 0 < self.budget_minutes < math.inf:
            raise ValueError(f"budget_minutes must be positive, got {self.budget_minutes}")
        if self.latency_budget_ms is not None and not self.latency_budget_ms > 0:
            raise ValueError(f"latency_budget_ms must be positive, got {self.latency_budget_ms}")
        # Each candidate keeps its checkpoint by the training config's select_metric (default AUC), not by the
        # objective: a model still at the class prior scores the benign share in accuracy (2p/(1+p) in F1),
        # which a short trial that has only begun to learn does not beat yet, so selecting by the objective
        # kept epochs at the prior (the demo's member at sensitivity 0 and AUC 0.41). AUC has no threshold and
        # is 0.5 at the prior, so the epoch that ranks best is kept; the objective then ranks the trials.
        object.__setattr__(self, "train", self.train.replace(split_seed=int(self.seed)))

    def candidate(self, spec: ArchSpec | str, seed: int) -> TrainConfig:
        """The TrainConfig one candidate trains with: the recipe with its architecture and seed."""
        return self.train.replace(arch=str(spec), seed=int(seed))

    def replace(self, **changes: Any) -> SearchConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The nested JSON form (``search_config.json``'s ``config``)."""
        data = asdict(self)
        data["train"] = self.train.to_dict()
        data["space"] = {"channels": list(self.space.channels), "depth_range": list(self.space.depth_range)}
        data["exclude_folds"] = list(self.exclude_folds)
        return data

    def identity(self) -> dict[str, Any]:
        """The settings that decide a search's numbers, flat: a resume must keep them.

        Budgets, patience, the executor, the latency measurement (the folder keeps its fitted model), the
        training device and thread count may change between runs of one search.
        """
        data = self.to_dict()
        keep = {k: data[k] for k in ("data", "metric", "seed", "exclude_folds", "latency_budget_ms")}
        keep |= {f"space.{k}": v for k, v in data["space"].items()}
        keep |= {f"train.{k}": v for k, v in data["train"].items() if k not in (*PER_TRIAL, *RESUMABLE_TRAIN)}
        return keep

    @classmethod
    def resolve(cls, recipe: str | None = None, **given: Any) -> SearchConfig:
        """Build from flat option names (:data:`FLAT`, the top-level fields, ``min_depth``/``max_depth``).

        This is how the CLI builds a config: an option left unset is None and keeps the dataclass default.
        ``recipe`` names a training recipe of ``naslung.train.config.RECIPES`` that the candidates train
        with (None: the TrainConfig defaults), under the training options given.
        """
        given = {k: v for k, v in given.items() if v is not None}
        lo, hi = given.pop("min_depth", None), given.pop("max_depth", None)
        if lo is not None or hi is not None:
            default = SpaceConfig().depth_range
            given["depth_range"] = (default[0] if lo is None else lo, default[1] if hi is None else hi)
        recipe_fields = {} if recipe is None else RECIPES[check_option("recipe", recipe, tuple(RECIPES))]
        return cls._from_flat(given, {**CANDIDATE_TRAIN, **recipe_fields})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchConfig:
        """Inverse of :meth:`to_dict`; also reads the flat form of older ``search_config.json`` files.

        In the flat form the training fields it does not record take today's TrainConfig defaults. Unknown
        keys raise, so that a typo never passes silently. A config saved without a latency path reads as
        :data:`LEGACY_LATENCY_PATH`, the path it was timed on.
        """
        if not isinstance(data, dict):
            raise ValueError(f"a search config must be a JSON object, got {type(data).__name__}")
        if any(isinstance(data.get(name), dict) for name in SECTIONS):
            latency = data.get("latency", {})
            if isinstance(latency, dict):
                data = {**data, "latency": {"path": LEGACY_LATENCY_PATH, **latency}}
            return cls._from_nested(data)
        # Searches that saved the flat form kept each candidate's epoch by the objective metric.
        legacy_train = {"select_metric": data.get("metric", "accuracy")}
        return cls._from_flat({"latency_path": LEGACY_LATENCY_PATH, **data}, legacy_train)

    @classmethod
    def _from_nested(cls, data: dict[str, Any]) -> SearchConfig:
        top = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - top)
        if unknown:
            raise ValueError(f"unknown search config keys {unknown}; valid: {sorted(top)}")
        values = dict(data)
        for name, kind in SECTIONS.items():
            section = values.get(name, {})
            if isinstance(section, dict):
                values[name] = _section(kind, section, name)
        return cls(**values)

    @classmethod
    def _from_flat(cls, data: dict[str, Any], recipe: dict[str, Any] | None = None) -> SearchConfig:
        top = {f.name for f in fields(cls)} - set(SECTIONS)
        unknown = sorted(set(data) - top - set(FLAT))
        if unknown:
            raise ValueError(f"unknown search options {unknown}; valid: {sorted(top | set(FLAT))}")
        sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
        for key, value in data.items():
            if key in FLAT:
                section, name = FLAT[key]
                sections[section][name] = value
        sections["train"] = {**(recipe or {}), **sections["train"]}
        built = {name: _section(SECTIONS[name], values, name) for name, values in sections.items()}
        return cls(**built, **{k: v for k, v in data.items() if k in top})


def _section(kind: type, values: dict[str, Any], name: str) -> Any:
    """One nested section from its fields; a missing field keeps the default (the recipe's for ``train``)."""
    if kind is TrainConfig:
        return TrainConfig.from_dict({"epochs": CANDIDATE_EPOCHS, **values})
    known = {f.name for f in fields(kind)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {name} settings {unknown}; valid: {sorted(known)}")
    return kind(**values)
