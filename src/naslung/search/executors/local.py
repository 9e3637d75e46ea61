"""The default executor: train candidates one after another in this process (no Ray needed)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from naslung.search.driver import SearchDriver


def run_local(driver: SearchDriver) -> str | None:
    """Suggest, train, record until a stop condition holds; returns the stop reason.

    A trial that raises is recorded with ``status: "error"`` and the search goes on (its candidate is not
    retried); ``KeyboardInterrupt`` stops the search, and ``--resume`` picks it up from ``trials.jsonl``.
    """
    while (trial := driver.next_trial()) is not None:
        try:
            outcome = driver.evaluator(trial.spec, trial.seed)
        except Exception as exc:  # noqa: BLE001 - one broken candidate must not end the search
            driver.finish(trial, None, f"{type(exc).__name__}: {exc}")
            continue
        driver.finish(trial, outcome)
    return driver.stopped
