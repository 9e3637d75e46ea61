"""Interleaved timing for the benchmarks: every round calls each step once, in a rotating order, so that load
from other processes hits all of them alike; the figure is the median."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleave(steps: dict[str, Callable[[], object]], rounds: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each step after ``warmup`` untimed calls, ``rounds`` rounds interleaved."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}
