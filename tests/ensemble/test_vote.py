import json

import numpy as np
import pytest

from naslung.atomic import write_json_atomic
from naslung.ensemble.size_study import plot_size_study, size_study
from naslung.ensemble.vote import agreement, ensemble_predict, load_members, majority_vote, soft_vote
from naslung.train.predictions import Predictions, write_predictions


@pytest.mark.parametrize("probs, expected", [
    # n = 3: malignant with >= 2 votes (> floor(3/2) = 1)
    ([[0.9, 0.2, 0.6], [0.8, 0.4, 0.3], [0.1, 0.7, 0.5]], [1, 0, 1]),
    # n = 2: a 1-1 tie is benign (needs > floor(2/2) = 1 vote, i.e. both)
    ([[0.9, 0.9, 0.1], [0.1, 0.8, 0.2]], [0, 1, 0]),
    # n = 4: 2-2 tie is benign, 3 votes malignant
    ([[0.9, 0.9], [0.9, 0.9], [0.1, 0.9], [0.2, 0.1]], [0, 1]),
    # n = 1: the model itself; exactly 0.5 counts as malignant (threshold p >= 0.5)
    ([[0.5, 0.49]], [1, 0]),
])
def test_majority_vote_hand_computed(probs, expected):
    assert majority_vote(np.array(probs)).tolist() == expected


def test_soft_vote_and_agreement():
    probs = np.array([[0.9, 0.2, 0.6], [0.8, 0.4, 0.3], [0.1, 0.7, 0.45]])
    assert soft_vote(probs).tolist() == [1, 0, 0]  # means 0.6, 0.433, 0.45
    assert np.allclose(agreement(probs), [2 / 3, 2 / 3, 2 / 3])
    assert np.allclose(agreement(np.array([[0.9], [0.8], [0.7]])), [1.0])


def _run(path, fold, ids, labels, probs):
    p = Predictions(nodule_id=np.array(ids), seriesuid=np.array([f"s{i}" for i in ids]),
                    fold=np.full(len(ids), fold), label=np.array(labels), prob=np.array(probs, dtype=float))
    val = Predictions(nodule_id=np.array(["v"]), seriesuid=np.array(["sv"]), fold=np.array([9]),
                      label=np.array([1]), prob=np.array([0.7]))
    write_predictions(path, {"val": val, "test": p})
    write_json_atomic(path / "result.json", {"schema": "naslung-train-result", "test_fold": fold})
    return path


def test_ensemble_from_saved_predictions(tmp_path):
    ids, y = ["a", "b", "c", "d"], [1, 0, 1, 0]
    runs = [
        _run(tmp_path / "r1", 2, ids, y, [0.9, 0.1, 0.2, 0.6]),
        # another member lists the nodules in a different order: aligned by id
        _run(tmp_path / "r2", 2, ids[::-1], y[::-1], [0.1, 0.9, 0.3, 0.8]),
        _run(tmp_path / "r3", 2, ids, y, [0.7, 0.4, 0.4, 0.2]),
    ]
    members = load_members(runs, 2)
    assert members.probs[1].tolist() == [0.8, 0.3, 0.9, 0.1]
    result = ensemble_predict(members, "majority")
    # votes a: 1,1,1 -> 1; b: 0,0,0 -> 0; c: 0,1,0 -> 0; d: 1,0,0 -> 0
    assert result.majority["tp"] == 1 and result.majority["fn"] == 1 and result.majority["tn"] == 2
    assert result.mean_agreement == pytest.approx((1 + 1 + 2 / 3 + 2 / 3) / 4)
    assert [r["nodule_id"] for r in result.low_agreement] == ["c", "d"]
    assert len(result.members) == 3 and json.dumps(result.to_dict())


def test_members_must_share_fold_and_ids(tmp_path):
    a = _run(tmp_path / "a", 1, ["x", "y"], [0, 1], [0.2, 0.9])
    b = _run(tmp_path / "b", 2, ["x", "y"], [0, 1], [0.2, 0.9])
    c = _run(tmp_path / "c", 1, ["x", "z"], [0, 1], [0.2, 0.9])
    with pytest.raises(ValueError, match="fold"):
        load_members([a, b], None)
    with pytest.raises(ValueError, match="not fold 1"):
        load_members([a, b], 1)
    with pytest.raises(ValueError, match="nodule ids differ"):
        load_members([a, c], 1)
    with pytest.raises(FileNotFoundError):
        load_members([tmp_path / "missing"], 1)


def test_size_study_is_seeded_and_plots(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 50)
    probs = np.clip(labels + rng.normal(0, 0.6, (9, 50)), 0, 1)
    rows = size_study(probs, labels, (1, 3, 5, 7, 9, 11), repeats=10, seed=1)
    assert [r["n"] for r in rows] == [1, 3, 5, 7, 9]  # 11 > 9 runs is skipped
    assert rows == size_study(probs, labels, (1, 3, 5, 7, 9, 11), repeats=10, seed=1)
    assert rows[-1]["accuracy_std"] == 0.0  # every 9-subset of 9 runs is the same
    assert rows[-1]["accuracy_mean"] >= rows[0]["accuracy_mean"]
    png = plot_size_study(rows, tmp_path / "fig7.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
