"""Ensemble inference from saved per-nodule predictions (paper section 3.5), plus soft vote and agreement.

Majority vote, as in the paper: every member thresholds its malignancy probability at 0.5, and the nodule
is malignant when *more than* ``floor(n/2)`` members say so. With an even ``n`` a tie (n/2 votes each way)
is therefore benign. Soft vote (mean probability >= 0.5) and per-nodule agreement (the share of members
that agree with the majority decision) are reported beside it; agreement is an uncertainty signal.

No model runs here: the members' probabilities are the ``predictions.csv`` that training wrote, computed on
the serving path (:func:`naslung.train.inference.predict_proba` runs :func:`naslung.models.fast.eval_model`);
``naslung predict`` runs the members on new crops the same way (:mod:`naslung.serving.predict`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from naslung.train.predictions import THRESHOLD, Predictions, read_predictions
from naslung.train.rundir import CVDir, run_for_fold

VOTES = ("majority", "soft")


def majority_vote(probs: np.ndarray) -> np.ndarray:
    """``(n_members, N)`` probabilities -> ``(N,)`` 0/1: malignant iff more than floor(n/2) votes."""
    probs = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    votes = (probs >= THRESHOLD).sum(axis=0)
    return (votes > probs.shape[0] // 2).astype(np.int64)


def soft_vote(probs: np.ndarray) -> np.ndarray:
    """``(n_members, N)`` -> ``(N,)`` 0/1: mean probability >= 0.5."""
    probs = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    return (probs.mean(axis=0) >= THRESHOLD).astype(np.int64)


def agreement(probs: np.ndarray) -> np.ndarray:
    """``(N,)`` share of members whose own 0/1 vote equals the majority decision, in [0.5, 1] for odd n."""
    probs = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    votes = (probs >= THRESHOLD).astype(np.int64)
    return (votes == majority_vote(probs)[None, :]).mean(axis=0)


@dataclass
class Members:
    """Test predictions of several runs on one fold, aligned on nodule id."""

    runs: list[str]
    fold: int
    nodule_id: np.ndarray
    seriesuid: np.ndarray
    label: np.ndarray
    probs: np.ndarray  # (n_members, N)


@dataclass
class EnsembleResult:
    fold: int
    runs: list[str]
    vote: str
    metrics: dict[str, Any]
    majority: dict[str, Any]
    soft: dict[str, Any]
    members: list[dict[str, Any]]
    mean_agreement: float
    low_agreement: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"fold": self.fold, "runs": self.runs, "vote": self.vote, "n_members": len(self.runs),
                "metrics": self.metrics, "majority": self.majority, "soft": self.soft,
                "members": self.members, "mean_agreement": self.mean_agreement,
                "low_agreement": self.low_agreement}


def check_result(run: Path) -> dict[str, Any]:
    """A finished run's ``result.json``; a truncated, garbled or foreign one raises, naming the file."""
    from naslung.train.rundir import RunDir

    path = RunDir(run).result
    data = RunDir(run).read_result()
    fold = data.get("test_fold")
    if not isinstance(fold, int) or isinstance(fold, bool):
        raise ValueError(f"{path}: the run has no test fold (test_fold={fold!r}), nothing to ensemble")
    return data


def load_members(runs: Sequence[str | Path], fold: int | None) -> Members:
    """Read and align the test predictions of ``runs`` on ``fold``.

    Every member must have been tested on the same fold with the same nodule ids and labels; anything else
    raises ``ValueError`` naming the offending run. Rows are aligned to the first member's order.
    """
    if not runs:
        raise ValueError("an ensemble needs at least one run")
    preds: list[Predictions] = []
    paths = [run_for_fold(r, fold).path for r in runs]
    for path in paths:
        check_result(path)
        p = read_predictions(path, "test")
        folds = set(p.fold.tolist())
        if len(folds) != 1:
            raise ValueError(f"{path}: test predictions span folds {sorted(folds)}")
        (got,) = folds
        if fold is not None and got != fold:
            raise ValueError(f"{path}: was tested on fold {got}, not fold {fold}")
        preds.append(p)
    first = preds[0]
    fold_used = int(first.fold[0])
    # nodule ids are per scan (the label cluster's index), so a nodule is keyed by (seriesuid, nodule_id).
    ref = {k: i for i, k in enumerate(_keys(first))}
    probs = np.empty((len(preds), len(first)), dtype=np.float64)
    for k, (path, p) in enumerate(zip(paths, preds, strict=True)):
        if int(p.fold[0]) != fold_used:
            raise ValueError(f"{path}: tested on fold {int(p.fold[0])}, but {paths[0]} on fold {fold_used}")
        if set(_keys(p)) != set(ref) or len(p) != len(first):
            raise ValueError(f"{path}: test nodule ids differ from {paths[0]} (different dataset or split?)")
        order = np.array([ref[k] for k in _keys(p)])
        if not np.array_equal(first.label[order], p.label):
            raise ValueError(f"{path}: labels differ from {paths[0]} for the same nodule ids")
        probs[k, order] = p.prob
    return Members(runs=[str(p) for p in paths], fold=fold_used, nodule_id=first.nodule_id,
                   seriesuid=first.seriesuid, label=first.label, probs=probs)


def _keys(p: Predictions) -> list[tuple[str, str]]:
    return list(zip(p.seriesuid.astype(str).tolist(), p.nodule_id.astype(str).tolist(), strict=True))


def ensemble_predict(members: Members, vote: str = "majority", low_agreement: float = 0.75) -> EnsembleResult:
    """Majority and soft vote metrics, per-member metrics, and agreement for ``members``.

    ``low_agreement``: nodules whose agreement is below this share are listed (with their votes); our
    choice of 0.75 lists every split decision for n = 3 and 5 and splits of 3+ members for n = 9.
    """
    from naslung.metrics import binary_metrics

    if vote not in VOTES:
        raise ValueError(f"unknown vote {vote!r}; valid: {', '.join(VOTES)}")
    y, probs = members.label, members.probs
    maj, soft = majority_vote(probs), soft_vote(probs)
    mean_prob = probs.mean(axis=0)
    # The majority vote has no score of its own; the AUC beside it uses the vote share.
    vote_share = (probs >= THRESHOLD).mean(axis=0)
    maj_m = binary_metrics(y, maj, vote_share)
    soft_m = binary_metrics(y, soft, mean_prob)
    agree = agreement(probs)
    low = [
        {"nodule_id": str(members.nodule_id[i]), "seriesuid": str(members.seriesuid[i]),
         "label": int(y[i]), "majority": int(maj[i]), "agreement": float(agree[i]),
         "malignant_votes": int((probs[:, i] >= THRESHOLD).sum()), "mean_prob": float(mean_prob[i])}
        for i in np.flatnonzero(agree < low_agreement)
    ]
    per_member = [
        {"run": run, **binary_metrics(y, (p >= THRESHOLD).astype(np.int64), p)}
        for run, p in zip(members.runs, probs, strict=True)
    ]
    return EnsembleResult(
        fold=members.fold, runs=members.runs, vote=vote, metrics=maj_m if vote == "majority" else soft_m,
        majority=maj_m, soft=soft_m, members=per_member, mean_agreement=float(agree.mean()),
        low_agreement=low,
    )


def common_folds(runs: Sequence[str | Path]) -> list[int]:
    """Folds that every cv dir in ``runs`` has finished."""
    sets = []
    for run in runs:
        found = set(CVDir(run).folds(finished_only=True))
        if not found:
            raise ValueError(f"{run}: not a cv folder with finished folds; pass --fold for single runs")
        sets.append(found)
    return sorted(set.intersection(*sets))
