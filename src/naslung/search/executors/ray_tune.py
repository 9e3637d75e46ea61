"""Ray Tune executor: POP as a ``ray.tune.search.Searcher``, trials on a local or remote Ray cluster.

The searcher lives in the driver process and owns the :class:`~naslung.search.driver.SearchDriver`:
``suggest`` draws from the candidates that are neither trained, pruned nor running; ``on_trial_complete``
records the trial (same ``trials.jsonl`` records as the local executor) and prunes. Workers receive only the
evaluator (paths and options, a few hundred bytes) and load the dataset from its file themselves, so the crops
never travel through the object store. On a multi-node cluster the file must exist at the same path on
every node (a shared file system).
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray import tune
from ray.tune.search import Searcher

from naslung.models.spec import ArchSpec

if TYPE_CHECKING:
    from naslung.search.driver import SearchDriver, Trial
    from naslung.search.objective import Evaluator


class PopSearcher(Searcher):
    """POP behind Ray Tune's searcher interface; Tune's ``metric`` is the reported ``score``."""

    def __init__(self, driver: SearchDriver) -> None:
        super().__init__(metric="score", mode="max")
        self.driver = driver
        self.live: dict[str, Trial] = {}

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        trial = self.driver.next_trial()
        if trial is None:
            return Searcher.FINISHED
        self.live[trial_id] = trial
        return {
            "index": trial.index,
            "spec": str(trial.spec),
            "seed": trial.seed,
            "metric": self.driver.config.metric,
        }

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        trial = self.live.pop(trial_id, None)
        if trial is None:
            return
        if error or not result or "outcome" not in result:
            self.driver.finish(
                trial, None, "the Ray trial failed (see the Ray logs under ray/ in the output folder)"
            )
            return
        outcome = json.loads(result["outcome"])
        self.driver.finish(trial, outcome, result.get("error") or None)

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its searcher into the experiment folder. The driver holds callbacks (progress bars,
        # locks) and the state lives in trials.jsonl anyway, so the pickled copy carries neither.
        state = dict(self.__dict__)
        state["driver"], state["live"] = None, {}
        return state

    # The search state lives in trials.jsonl (--resume replays it), so Tune's own checkpoints carry nothing.
    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_text(json.dumps({"state": "see trials.jsonl in the search folder"}))

    def restore(self, checkpoint_path: str) -> None:
        pass


def train_candidate(config: dict[str, Any], evaluator: Evaluator) -> None:
    """Function trainable: train one candidate and report its outcome once."""
    try:
        outcome = evaluator(ArchSpec.parse(config["spec"]), int(config["seed"]))
        score = outcome.get("metrics", {}).get(config["metric"])
        tune.report(
            {
                "score": float(score) if score is not None else math.nan,
                "outcome": json.dumps(outcome),
                "error": "",
            }
        )
    except Exception as exc:  # noqa: BLE001 - reported as a failed trial, the search goes on
        tune.report({"score": math.nan, "outcome": "null", "error": f"{type(exc).__name__}: {exc}"})


def run_ray(driver: SearchDriver) -> str | None:
    """Run the search on Ray Tune: connect to ``--ray-address``, or start a local Ray if none is running."""
    import ray

    cfg, ex = driver.config, driver.config.executor
    started = False
    if not ray.is_initialized():
        if ex.ray_address:
            ray.init(address=ex.ray_address, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(include_dashboard=False, log_to_driver=False)
        started = True
    try:
        trainable = tune.with_resources(
            tune.with_parameters(train_candidate, evaluator=driver.evaluator),
            {"cpu": ex.cpus_per_trial, "gpu": ex.gpus_per_trial},
        )
        remaining = None if cfg.budget_trials is None else max(0, cfg.budget_trials - len(driver.records))
        if remaining == 0:
            driver.stopped = driver.stop_reason()
            return driver.stopped
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=PopSearcher(driver),
                num_samples=remaining or -1,
                max_concurrent_trials=ex.concurrency,
            ),
            run_config=tune.RunConfig(
                name=f"pop-{time.strftime('%Y%m%d-%H%M%S')}",
                storage_path=str(Path(driver.out).resolve() / "ray"),
                verbose=0,
            ),
        )
        # Tune prints its banner and tables to stdout; keep stdout for our summary (``--json``).
        with contextlib.redirect_stdout(sys.stderr):
            tuner.fit()
    finally:
        if started:
            ray.shutdown()
    driver.stopped = driver.stopped or driver.stop_reason()
    return driver.stopped
