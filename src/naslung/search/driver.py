"""The search driver: suggests trials from POP, records what the executors report, and decides when to stop.

An executor (``naslung.search.executors``) asks :meth:`SearchDriver.next_trial` for work, runs the evaluator
and hands the outcome to :meth:`SearchDriver.finish`, which appends the trial record, prunes and rewrites
``pareto.json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from naslung.models.spec import ArchSpec
from naslung.search import records as rec
from naslung.search.config import SearchConfig
from naslung.search.objective import Evaluator, score_ci_record
from naslung.search.pop import PopState

#: Consecutive failures at the start of a search that mean the set-up itself is broken.
MAX_INITIAL_FAILURES = 3
#: Failed trials do not consume the trial budget; this many failures in a row stop the search anyway.
MAX_CONSECUTIVE_FAILURES = 10


class SearchFailedError(RuntimeError):
    """No trial of the search trained successfully (the search exits non-zero)."""


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
        score_ci = None if score is None else score_ci_record(outcome.get("metrics_ci"), self.config.metric)
        record = rec.trial_record(
            trial=len(self.records),
            index=i,
            spec=str(trial.spec),
            status="ok" if score is not None else "error",
            error=error,
            metric=self.config.metric,
            score=score,
            score_ci=score_ci,
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
            executor=self.config.executor.name,
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
