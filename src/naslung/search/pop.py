"""Partial Order Pruning (POP, Li et al. CVPR 2019; NAS-Lung section 3.4): the executor-agnostic state.

:class:`PopState` answers three questions and nothing else: which candidate to train next
(:meth:`~PopState.suggest`), what a finished trial changes (:meth:`~PopState.complete`: pruning and the
Pareto front), and whether to stop (:meth:`~PopState.stop_reason`). Executors (local, Ray) drive it.

Pruning rule, after every finished trial: for every trained ``beta`` let ``gamma`` be the fastest trained
model whose score is >= beta's. Every untrained ``alpha <= beta`` (partial order of
:mod:`naslung.search.order`) that is not faster than ``gamma`` is pruned: by the POP assumption it is no
more accurate than beta, hence than gamma, and no faster than gamma, so it cannot improve the front.

Which latency does pruning compare? Untrained candidates only have the latency *model's* prediction, so
pruning uses the predicted latency on both sides (alpha and gamma). Comparing like with like cancels a
systematic bias of the latency model. The Pareto front, plots and selection use *measured* latency.

Pruning is monotone: adding a trial can only make each gamma faster, so the pruned set only grows and
equals a from-scratch recomputation over the trained set in any order (tests check this), which is what
makes ``--resume`` exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from naslung.search.order import below_mask
from naslung.search.space import SearchSpace


@dataclass(frozen=True)
class Trained:
    """A finished trial as POP sees it."""

    index: int
    score: float
    latency_ms: float  # measured


def pareto_front(points: dict[int, tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points of ``{index: (score, latency)}`` (score up, latency down).

    Sorted by latency ascending. Exact duplicates keep the lowest index only.
    """
    order = sorted(points, key=lambda i: (points[i][1], -points[i][0], i))
    front: list[int] = []
    best = -np.inf
    for i in order:
        if points[i][0] > best:
            front.append(i)
            best = points[i][0]
    return front


def gamma_latency(latency: np.ndarray, trained: dict[int, float]) -> dict[int, float]:
    """``{beta: latency of gamma(beta)}``: the fastest trained candidate scoring at least as high as beta."""
    by_score = sorted(trained, key=lambda i: -trained[i])
    out: dict[int, float] = {}
    fastest = np.inf
    pending: list[int] = []
    for pos, i in enumerate(by_score):
        pending.append(i)
        fastest = min(fastest, float(latency[i]))
        nxt = by_score[pos + 1] if pos + 1 < len(by_score) else None
        if nxt is not None and trained[nxt] == trained[i]:
            continue  # equal scores share one gamma: the fastest among all of them
        out.update(dict.fromkeys(pending, fastest))
        pending = []
    return out


def prune_mask(
    keys: np.ndarray, latency: np.ndarray, trained: dict[int, float], exclude: np.ndarray
) -> np.ndarray:
    """From-scratch pruned set for the trained ``{index: score}`` (the reference for :class:`PopState`).

    Args:
        keys: order keys ``(S, F)`` of the space.
        latency: ``(S,)`` latency used for pruning (the model's prediction).
        trained: score of every successfully trained index.
        exclude: ``(S,)`` bool, never pruned (trained, failed or running candidates).
    """
    pruned = np.zeros(len(keys), dtype=bool)
    for beta, fastest in gamma_latency(latency, trained).items():
        pruned |= below_mask(keys, beta) & (latency >= fastest)
    return pruned & ~exclude


class PopState:
    """POP bookkeeping over an enumerated :class:`SearchSpace`.

    Args:
        space: the candidates.
        predicted_latency: ``(S,)`` predicted latency in ms of every candidate (for pruning and the budget).
        latency_budget_ms: only candidates predicted at or under it are sampled (``None``: no budget).
        seed: base seed; the t-th suggestion uses ``default_rng([seed, t])`` so a resumed search draws the
            same candidates as an uninterrupted one.
    """

    def __init__(
        self,
        space: SearchSpace,
        predicted_latency: np.ndarray,
        latency_budget_ms: float | None = None,
        seed: int = 0,
    ) -> None:
        self.space = space
        self.keys = space.order_keys()
        self.latency = np.asarray(predicted_latency, dtype=np.float64)
        if self.latency.shape != (len(space),):
            raise ValueError(
                f"need one predicted latency per candidate ({len(space)}), got {self.latency.shape}"
            )
        self.in_budget = (
            np.ones(len(space), dtype=bool)
            if latency_budget_ms is None
            else self.latency <= latency_budget_ms
        )
        self.seed = int(seed)
        self.trained: dict[int, Trained] = {}
        self.failed: set[int] = set()
        self.running: set[int] = set()
        self.pruned = np.zeros(len(space), dtype=bool)
        self._gamma: dict[int, float] = {}  # beta -> predicted latency of its gamma
        self.front: list[int] = []
        self.n_suggested = 0
        self.n_completed = 0
        self.since_front_change = 0

    # ------------------------------------------------------------------ sampling
    def done_mask(self) -> np.ndarray:
        mask = np.zeros(len(self.space), dtype=bool)
        idx = [*self.trained, *self.failed, *self.running]
        mask[idx] = True
        return mask

    def candidates(self) -> np.ndarray:
        """Indices still eligible: in budget, not trained, failed, running or pruned."""
        return np.flatnonzero(self.in_budget & ~self.pruned & ~self.done_mask())

    def suggest(self) -> int | None:
        """Draw the next candidate uniformly and mark it running; ``None`` when none is left."""
        rng = np.random.default_rng([self.seed, self.n_suggested])
        self.n_suggested += 1
        cands = self.candidates()
        if len(cands) == 0:
            return None
        index = int(cands[rng.integers(len(cands))])
        self.running.add(index)
        return index

    # ------------------------------------------------------------------ results
    def complete(self, index: int, score: float | None, latency_ms: float | None, prune: bool = True) -> bool:
        """Record a finished trial (``score is None``: failed) and prune; True when the front changed.

        ``prune=False`` defers pruning (replaying a log); call :meth:`reprune` afterwards.
        """
        index = int(index)
        self.running.discard(index)
        self.n_completed += 1
        if score is None or latency_ms is None or not np.isfinite(score):
            self.failed.add(index)
            self.since_front_change += 1
            return False
        self.trained[index] = Trained(index, float(score), float(latency_ms))
        if prune:
            self._prune_after(index)
        front = pareto_front({i: (t.score, t.latency_ms) for i, t in self.trained.items()})
        changed = front != self.front
        self.front = front
        self.since_front_change = 0 if changed else self.since_front_change + 1
        return changed

    def reprune(self) -> None:
        """Recompute the pruned set from the trained set (pruning is order-independent)."""
        self._gamma = gamma_latency(self.latency, self.scores())
        self.pruned = prune_mask(self.keys, self.latency, self.scores(), self.done_mask())

    def _prune_after(self, index: int) -> None:
        """Incremental pruning: only betas whose gamma got faster (and the new one) can prune more.

        The union over time of ``{alpha <= beta, latency >= gamma_t(beta)}`` equals the set for the final
        (fastest) gamma, so this matches :func:`prune_mask` from scratch (tests check it).
        """
        new = self.trained[index]
        lat_new = float(self.latency[index])
        changed = {
            index: min([float(self.latency[j]) for j, t in self.trained.items() if t.score >= new.score])
        }
        for beta, g in self._gamma.items():
            if self.trained[beta].score <= new.score and lat_new < g:
                changed[beta] = lat_new
        self._gamma.update(changed)
        for beta, g in changed.items():
            self.pruned |= below_mask(self.keys, beta) & (self.latency >= g)
        self.pruned &= ~self.done_mask()

    def release(self, index: int) -> None:
        """Forget a running trial that never finished (cancelled); it becomes a candidate again."""
        self.running.discard(int(index))

    def scores(self) -> dict[int, float]:
        return {i: t.score for i, t in self.trained.items()}

    # ------------------------------------------------------------------ stopping
    def stop_reason(self, budget_trials: int | None = None, patience: int | None = None) -> str | None:
        """Why the search should stop now, or ``None``. Running trials are not counted as finished."""
        if budget_trials is not None and self.n_completed + len(self.running) >= budget_trials:
            return "trial budget"
        if patience is not None and self.trained and self.since_front_change >= patience:
            return f"front unchanged for {patience} trials"
        if len(self.candidates()) == 0:
            return "search space exhausted"
        return None

    def summary(self) -> dict[str, int]:
        """Counts: space size, trained, failed, running, pruned, out of budget, remaining, front."""
        return {
            "space": len(self.space),
            "trained": len(self.trained),
            "failed": len(self.failed),
            "running": len(self.running),
            "pruned": int(self.pruned.sum()),
            "out_of_budget": int((~self.in_budget & ~self.pruned & ~self.done_mask()).sum()),
            "remaining": int(len(self.candidates())),
            "front": len(self.front),
        }
