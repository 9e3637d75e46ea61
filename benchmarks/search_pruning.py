"""POP pruning on the paper's space with a synthetic objective (no training): how much is pruned, how fast.

Prints, for the monotone objective of ``naslung.search.objective.SyntheticEvaluator`` (accuracy grows with
width and depth, latency with MACs and depth; the partial-order assumption holds exactly) and for the same
objective plus noise (the assumption holds only on average, as with real training):

- the pruned fraction of the 42,426 architectures after 12, 50, 100, 200 and 400 trials;
- the trials POP needs to exhaust the space (nothing left to train), the trial at which the front last
  changed, and how many members of the true front of all 42,426 architectures the final front holds.

Run: ``python benchmarks/search_pruning.py`` (about a minute on 2 cores).
"""

from __future__ import annotations

import time

import numpy as np

from naslung.search.costs import space_costs
from naslung.search.objective import SyntheticEvaluator
from naslung.search.pop import PopState, pareto_front
from naslung.search.space import paper_space

CHECKPOINTS = (12, 50, 100, 200, 400)


def main() -> None:
    space = paper_space()
    costs = space_costs(space)
    latency = 0.5 + costs["macs"] / 2e8 + 0.05 * costs["depth"]
    for noise in (0.0, 0.01):
        ev = SyntheticEvaluator(noise=noise, seed=1)
        acc = np.array([ev.accuracy(s) for s in space])
        true_front = set(pareto_front({i: (float(acc[i]), float(latency[i])) for i in range(len(space))}))
        for seed in (0, 1, 2):
            state = PopState(space, latency, seed=seed)
            t0, last_change, row = time.perf_counter(), 0, []
            while (i := state.suggest()) is not None:
                if state.complete(i, float(acc[i]), float(latency[i])):
                    last_change = state.n_completed
                if state.n_completed in CHECKPOINTS:
                    row.append(f"{state.n_completed}: {100 * state.pruned.mean():.1f}%")
            found = len(set(state.front) & true_front)
            print(f"noise {noise} seed {seed}: pruned after {', '.join(row)} | exhausted after "
                  f"{state.n_completed} trials, front last changed at trial {last_change}; "
                  f"front {len(state.front)}, of which {found}/{len(true_front)} on the true front; "
                  f"{time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
