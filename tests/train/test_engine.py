"""fit(): learning, 2-D, resume == uninterrupted, and the test fold never reaches training or selection."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import naslung.train.engine as engine
import naslung.train.epoch as epoch_step
from naslung.atomic import read_jsonl
from naslung.train.checkpoint import CheckpointError, load_checkpoint
from naslung.train.engine import TrainResult, data_split, fit

from .conftest import TINY, synthetic_dataset, tiny


@pytest.mark.parametrize("loss", ["asoftmax", "softmax"])
@pytest.mark.slow
def test_learns_a_separable_problem_3d(separable, loss):
    result = fit(separable, tiny(epochs=10, loss=loss), test_fold=0)
    majority = max(np.mean(result.test.label), 1 - np.mean(result.test.label))
    assert result.test_metrics["accuracy"] >= max(0.9, majority + 0.3)
    assert result.history[0]["train_loss"] > result.history[-1]["train_loss"]


def test_learns_in_2d():
    ds = synthetic_dataset(n=160, dims=2, folds=4, seed=2)
    result = fit(ds, tiny(epochs=10, loss="softmax"), test_fold=1)
    assert result.model is not None and result.model.config["spatial_dims"] == 2
    assert result.test_metrics["accuracy"] >= 0.85


def test_same_seed_same_numbers(separable):
    a = fit(separable, tiny(), test_fold=0)
    b = fit(separable, tiny(), test_fold=0)
    assert np.array_equal(a.test.prob, b.test.prob)
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]


def test_run_folder_files(separable, tmp_path):
    out = tmp_path / "run"
    result = fit(separable, tiny(), test_fold=2, out_dir=out)
    for name in ("config.json", "epochs.jsonl", "last.pt", "best.pt", "predictions.csv", "predictions.json",
                 "result.json"):
        assert (out / name).exists(), name
    log = read_jsonl(out / "epochs.jsonl")
    assert [r["epoch"] for r in log] == [1, 2]
    assert {"train_loss", "train_accuracy", "val", "lambda", "seconds"} <= set(log[0])
    assert log[0]["lambda"] is not None  # A-Softmax anneals lambda
    preds = json.loads((out / "predictions.json").read_text())
    assert {r["fold"] for r in preds["test"]} == {2}
    assert len(preds["val"]) == result.split["val"]
    res = json.loads((out / "result.json").read_text())
    assert res["epoch"] == result.epoch and res["params"] == result.params > 0
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["spec"] == TINY and ckpt["epoch"] == 2 and ckpt["model_config"]["spec"] == TINY
    assert "lambda_" in ckpt["criterion"] and "numpy" in ckpt["rng"]
    loaded = TrainResult.load(out)
    assert loaded.test_metrics == pytest.approx(result.test_metrics, nan_ok=True)
    # A second fresh run into the same folder refuses to overwrite it.
    with pytest.raises(FileExistsError, match="--resume"):
        fit(separable, tiny(), test_fold=2, out_dir=out)


class KilledError(Exception):
    pass


@pytest.mark.slow
def test_resume_equals_uninterrupted(separable, tmp_path, monkeypatch):
    full = fit(separable, tiny(epochs=3), test_fold=1, out_dir=tmp_path / "full")

    # Kill the second run half-way through epoch 2 (after epoch 1's checkpoint was written).
    calls = {"n": 0}
    real = epoch_step.random_crop_flip
    batches = -(-full.split["train"] // 16)

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == batches + 2:
            raise KilledError
        return real(*args, **kwargs)

    monkeypatch.setattr(epoch_step, "random_crop_flip", dying)
    with pytest.raises(KilledError):
        fit(separable, tiny(epochs=3), test_fold=1, out_dir=tmp_path / "cut")
    monkeypatch.setattr(epoch_step, "random_crop_flip", real)
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 1
    assert not (tmp_path / "cut" / "result.json").exists()

    resumed = fit(separable, tiny(epochs=3), test_fold=1, out_dir=tmp_path / "cut", resume=True)
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in full.history]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in resumed.history] == strip
    assert resumed.epoch == full.epoch
    assert np.array_equal(resumed.test.prob, full.test.prob)
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    last_full = load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    last_cut = load_checkpoint(tmp_path / "cut" / "last.pt")["model"]
    assert all(torch.equal(last_full[k], last_cut[k]) for k in last_full)
    assert len(read_jsonl(tmp_path / "cut" / "epochs.jsonl")) == 3

    # A finished run is read back, not retrained; another --arch on resume is a clear error.
    again = fit(separable, tiny(epochs=3), test_fold=1, out_dir=tmp_path / "cut", resume=True)
    assert again.model is None and again.test_metrics == pytest.approx(full.test_metrics, nan_ok=True)
    with pytest.raises(CheckpointError, match="spec"):
        fit(separable, tiny(epochs=3, arch="[4,4,[4],[8],[8]]"), test_fold=1, out_dir=tmp_path / "cut",
            resume=True)
    (tmp_path / "cut" / "result.json").unlink()
    with pytest.raises(CheckpointError, match="arch"):
        fit(separable, tiny(epochs=3, arch="[4,4,[4],[8],[8]]"), test_fold=1, out_dir=tmp_path / "cut",
            resume=True)


def test_split_keeps_the_test_fold_out_of_train_and_val(separable):
    split = data_split(separable, tiny(), test_fold=3)
    test_rows = set(np.flatnonzero(separable.fold == 3))
    assert set(split.test) == test_rows
    assert not test_rows & (set(split.train) | set(split.val))


def test_selection_sees_only_validation_results(separable, monkeypatch):
    split = data_split(separable, tiny(), test_fold=0)
    seen = []
    real = engine.select_epoch

    def spy(val_history, metric="f1", min_balanced_accuracy=0.0):
        seen.append(val_history)
        for record in val_history:
            assert isinstance(record, dict)
            assert not any(isinstance(v, np.ndarray | torch.Tensor | list) for v in record.values())
            assert record["n"] == split.val.size != split.test.size
        return real(val_history, metric, min_balanced_accuracy)

    monkeypatch.setattr(engine, "select_epoch", spy)
    fit(separable, tiny(epochs=2), test_fold=0)
    assert len(seen) >= 2


def test_test_fold_content_cannot_change_training_or_selection(separable):
    """Scramble the test fold's images and flip its labels: everything before the test look is identical."""
    poisoned = separable.subset(np.arange(len(separable)))
    rows = np.flatnonzero(poisoned.fold == 0)
    poisoned.images = poisoned.images.copy()
    poisoned.images[rows] = np.random.default_rng(0).random(poisoned.images[rows].shape, dtype=np.float32)
    poisoned.labels = poisoned.labels.copy()
    poisoned.labels[rows] = 1 - poisoned.labels[rows]
    a = fit(separable, tiny(epochs=2), test_fold=0)
    b = fit(poisoned, tiny(epochs=2), test_fold=0)
    assert a.epoch == b.epoch
    assert [h["val"] for h in a.history] == [h["val"] for h in b.history]
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values(),
                                                   strict=True))


def test_no_test_fold_gives_validation_only(separable):
    result = fit(separable, tiny(epochs=1), test_fold=None)
    assert result.test is None and result.test_metrics is None and result.split["test"] == 0
    assert result.val_metrics["n"] == result.split["val"]
