"""``naslung evaluate --model NAME|--run RUN --data DATASET.h5``: a model re-run on the crops of a dataset.

The models are a bundled model (every member; an ensemble votes) or a run / cv folder (the run, or the
``fold_<K>`` run of each fold K). Each one predicts the centre crops of the fold's nodules exactly as
training evaluates its test fold (:func:`naslung.train.inference.predict_proba`, with the member's own TTA
setting), so a run evaluated on its own test fold gives its ``result.json`` test metrics again.

Metrics are :func:`naslung.metrics.binary_metrics` at p >= 0.5: per fold, and pooled over the folds. An
ensemble is judged as its card is (:func:`naslung.ensemble.vote.ensemble_predict`): the majority vote
(paper, section 3.5) with the vote share as its score, the soft vote and each member beside it.

Folds a model saw are refused before anything runs (:func:`naslung.explain.guards.check_unseen_fold`): a
run's training folds, every fold a bundled model's card lists (the deployment models: all of them), and a
run's dataset other than ``--data``. ``allow_seen_fold`` evaluates them anyway, with a note in the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from naslung import schemas

#: The metrics printed and compared, in order.
METRICS = ("accuracy", "f1", "auc", "sensitivity", "specificity")


def check_crops(member: Any, dataset: Any, data: Path) -> None:
    """Refuse a dataset whose crops differ from the member's (2-D/3-D, side, spacing, HU window), naming both;
    a setting the member does not record (its dataset file is gone) is not compared."""
    crop = member.crop
    if crop.dims != dataset.spatial_dims or crop.size != dataset.size:
        raise ValueError(f"{member.name}: trained on {crop.dims}-D crops of side {crop.size}, but {data} "
                         f"holds {dataset.spatial_dims}-D crops of side {dataset.size}")
    for key, have, attr in (("spacing", crop.spacing, "spacing_mm"), ("window", crop.window, "window")):
        theirs = dataset.attrs.get(attr)
        if have is None or theirs is None:
            continue
        theirs = float(theirs) if key == "spacing" else tuple(float(v) for v in theirs)
        if theirs != have:
            raise ValueError(f"{member.name}: trained on crops with {key} {have}, but {data} has {theirs}")


def _probabilities(member: Any, images: Any, batch: int) -> np.ndarray:
    from naslung.train.inference import predict_proba

    config = member.config.get("config") or {}
    return predict_proba(member.model, images, member.crop.size, batch,
                         bool(config.get("channels_last", False)), bool(config.get("tta", False)))


def _fold_metrics(labels: np.ndarray, probs: np.ndarray, names: Sequence[str], fold: int | None,
                  nodule_id: np.ndarray, seriesuid: np.ndarray) -> dict[str, Any]:
    from naslung.ensemble.vote import Members, ensemble_predict
    from naslung.metrics import binary_metrics

    if len(names) == 1:
        p = probs[0]
        return {"metrics": binary_metrics(labels, (p >= 0.5).astype(np.int64), p)}
    result = ensemble_predict(Members(runs=list(names), fold=fold if fold is not None else -1,
                                      nodule_id=nodule_id, seriesuid=seriesuid, label=labels, probs=probs))
    return {"metrics": result.majority, "soft_vote": result.soft, "members": result.members,
            "mean_agreement": result.mean_agreement}


def evaluate_on_data(model: str | Path, data: str | Path, folds: Sequence[int] | None = None, *,
                     allow_seen_fold: bool = False, batch: int = 128) -> dict[str, Any]:
    """Metrics of ``model`` (a bundled model name, a run or a cv folder) on ``folds`` of dataset ``data``.

    ``folds`` None: a run's test fold, a cv folder's finished folds, a bundled model's every fold of the
    data. Returns the JSON that ``naslung evaluate --out`` writes. ``ValueError``/``FileNotFoundError``
    (:class:`~naslung.explain.guards.ExplainDataError` for a seen fold or another dataset) name the model.
    """
    import torch

    from naslung.explain.guards import check_same_data, check_unseen_fold
    from naslung.fingerprint import fingerprint_of, load_dataset
    from naslung.serving.predict import load_for_fold
    from naslung.zoo.registry import is_model_name

    data = Path(data)
    dataset = load_dataset(data)
    present = sorted({int(f) for f in np.asarray(dataset.fold).tolist()})
    bundled = is_model_name(model)
    if folds is None:
        if bundled:
            folds = present
        else:
            from naslung.train.rundir import finished_runs

            runs = finished_runs(model)
            if not runs:
                raise FileNotFoundError(f"{model}: no finished training run (result.json) in or under it")
            tested = (r.read_result().get("test_fold") for r in runs)
            folds = sorted({int(f) for f in tested if f is not None})
            if not folds:
                raise ValueError(f"{model}: the run held out no test fold; give --folds (with "
                                 f"--allow-seen-fold: every fold was training or validation data)")
    folds = [int(f) for f in folds]
    missing = sorted(set(folds) - set(present))
    if missing:
        raise ValueError(f"--folds: {data} has no nodule in folds {missing} (folds present: {present})")
    plan, notes = [], []
    shared = load_for_fold(model) if bundled else None
    for fold in folds:  # every check before any inference
        members = shared if shared is not None else load_for_fold(model, fold)
        for m in members:
            check_crops(m, dataset, data)
            check_same_data(m, dataset, data)
            note = check_unseen_fold(m, fold, allow_seen_fold, option="evaluate")
            if note and note not in notes:
                notes.append(note)
        plan.append((fold, members))
    images = torch.from_numpy(np.ascontiguousarray(dataset.images, dtype=np.float32))
    labels = np.asarray(dataset.labels, dtype=np.int64)
    fold_of = np.asarray(dataset.fold)
    per_fold, pooled = [], {"labels": [], "probs": [], "ids": [], "series": []}
    for fold, members in plan:
        rows = np.flatnonzero(fold_of == fold)
        probs = np.stack([_probabilities(m, images[rows], batch) for m in members])
        ids = np.asarray(dataset.nodule_id[rows]).astype(str)
        series = np.asarray(dataset.seriesuid[rows]).astype(str)
        entry = _fold_metrics(labels[rows], probs, [m.name for m in members], fold, ids, series)
        per_fold.append({"fold": fold, "models": [str(m.name) for m in members], "n": int(rows.size),
                         **entry})
        for key, value in (("labels", labels[rows]), ("probs", probs), ("ids", ids), ("series", series)):
            pooled[key].append(value)
    all_probs = np.concatenate(pooled["probs"], axis=1)
    n_members = all_probs.shape[0]
    overall = _fold_metrics(np.concatenate(pooled["labels"]), all_probs,
                            [f"member {i + 1}" for i in range(n_members)] if n_members > 1 else ["model"],
                            None, np.concatenate(pooled["ids"]), np.concatenate(pooled["series"]))
    return {"schema": schemas.EVALUATION, "schema_version": 1, "model": str(model),
            "kind": "bundled model" if bundled else "run", "data": str(data),
            "dataset": {"fingerprint": fingerprint_of(dataset), "n": len(dataset)}, "folds": folds,
            "allow_seen_fold": bool(allow_seen_fold), "notes": notes,
            "method": "majority vote of the members" if n_members > 1 else "single model",
            "per_fold": per_fold, "pooled": {"n": int(all_probs.shape[1]), **overall}}
