"""The training recipe: split seed, planned schedules, CT augmentation twins, TTA, EMA, class balance,
early stopping, and exact resume with all of it switched on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import naslung.train.engine as engine
import naslung.train.epoch as epoch_step
from naslung.losses.asoftmax import DEFAULT_LAMBDA_MIN
from naslung.train.augment import (
    PERMUTATIONS_3D,
    ExtraAugment,
    affine,
    augment_crops,
    flip_views,
    intensity,
    permute_axes,
    rotate90,
)
from naslung.train.checkpoint import CheckpointError, load_checkpoint
from naslung.train.ema import ModelEMA
from naslung.train.engine import class_weights, data_split, fit, stop_early
from naslung.train.schedule import lambda_gamma, lr_factor

from .conftest import TINY, synthetic_dataset, tiny

FULL = {"lr_schedule": "cosine", "warmup_epochs": 1.0, "rot90": True, "permute_axes": True,
        "affine_deg": 10.0, "affine_scale": 0.1, "intensity": 0.05, "noise_std": 0.02, "tta": True,
        "ema_decay": 0.9, "class_balance": True, "weight_decay": 1e-3}




# --- split seed -----------------------------------------------------------------------------------------

def test_split_depends_on_split_seed_not_on_seed(separable):
    a = data_split(separable, tiny(seed=0), test_fold=0)
    b = data_split(separable, tiny(seed=7), test_fold=0)
    c = data_split(separable, tiny(seed=0, split_seed=5), test_fold=0)
    assert np.array_equal(a.val, b.val) and np.array_equal(a.train, b.train)
    assert not np.array_equal(a.val, c.val)


def test_search_trials_validate_on_the_same_nodules(tmp_path, monkeypatch):
    """Every trial of a search, whatever its seed, gets the same inner validation rows."""
    from naslung.models.spec import ArchSpec
    from naslung.search.objective import TrainEvaluator

    from .conftest import write_synthetic

    path = write_synthetic(tmp_path / "d.h5", n=80, folds=10)
    seen: list[tuple[str, ...]] = []
    real = engine.data_split

    def spy(dataset, config, test_fold):
        split = real(dataset, config, test_fold)
        seen.append(tuple(dataset.nodule_id[split.val]))
        return split

    monkeypatch.setattr(engine, "data_split", spy)
    evaluator = TrainEvaluator(data_path=str(path), train={"epochs": 1, "device": "cpu", "num_threads": 1,
                                                           "batch_size": 16},
                               exclude_folds=(1, 2, 3, 4, 5), latency={"warmup": 0, "repeats": 1})
    for seed in (0, 1, 2):
        evaluator(ArchSpec.parse(TINY), seed)
    assert len(seen) == 3 and seen[0] == seen[1] == seen[2]


def test_cv_folds_record_their_split_seed(separable, tmp_path):
    import json

    from naslung.train.cv import run_cv

    run_cv(separable, tiny(epochs=1, split_seed=3), folds=[0, 1], out_dir=tmp_path / "cv")
    for fold in (0, 1):
        saved = json.loads((tmp_path / "cv" / f"fold_{fold}" / "config.json").read_text())
        assert saved["config"]["split_seed"] == 3
        split = data_split(separable, tiny(split_seed=3), test_fold=fold)
        assert saved["split"]["val_nodule_ids"] == [str(n) for n in separable.nodule_id[split.val]]


# --- schedules ------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_lambda_reaches_its_floor_by_the_end_of_a_10_epoch_run(separable):
    result = fit(separable, tiny(epochs=10), test_fold=0)
    assert result.history[-1]["lambda"] == pytest.approx(DEFAULT_LAMBDA_MIN, rel=1e-6)
    # ... and not before half of the run (the default lambda_floor_at = 0.5).
    assert result.history[3]["lambda"] > DEFAULT_LAMBDA_MIN + 1


def test_sphereface_constants_remain_available(separable):
    result = fit(separable, tiny(epochs=2, lambda_schedule="sphereface"), test_fold=0)
    steps = engine.steps_per_epoch(result.split["train"], 16)
    assert result.history[-1]["lambda"] == pytest.approx(1000 / (1 + 0.12 * 2 * steps), rel=1e-5)


def test_lambda_gamma_formula():
    gamma = lambda_gamma(200, 0.5, "run")
    assert 1000 / (1 + gamma * 100) == pytest.approx(5.0)
    assert lambda_gamma(200, 0.5, "sphereface") == 0.12


def test_cosine_lr_warms_up_then_decays():
    total, warmup = 100, 10
    f = [lr_factor(i, total, warmup, "cosine") for i in range(total)]
    assert f[0] == pytest.approx(0.1) and f[warmup] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(f[:warmup], f[1:warmup + 1], strict=True))
    assert all(a >= b for a, b in zip(f[warmup:], f[warmup + 1:], strict=False))
    assert f[-1] == pytest.approx(0.01)
    assert lr_factor(5, total, warmup, "constant") == 1.0


def test_run_follows_the_cosine_schedule(separable):
    result = fit(separable, tiny(epochs=3, lr_schedule="cosine"), test_fold=0)
    steps = engine.steps_per_epoch(result.split["train"], 16)
    for h in result.history:  # lr after the epoch's last step
        it = h["epoch"] * steps
        assert h["lr"] == pytest.approx(3e-3 * lr_factor(it, 3 * steps, 0, "cosine"))


# --- augmentation twins ---------------------------------------------------------------------------------

def test_rotate90_matches_per_sample_rot90():
    x = torch.rand(6, 1, 5, 7, 7)
    k = torch.tensor([0, 1, 2, 3, 1, 2])
    out = rotate90(x, k)
    for b in range(6):
        assert torch.equal(out[b], torch.rot90(x[b], int(k[b]), dims=(-2, -1)))


def test_permute_axes_matches_per_sample_permute():
    x = torch.rand(6, 1, 4, 4, 4)
    pid = torch.arange(6)
    out = permute_axes(x, pid)
    for b in range(6):
        order = PERMUTATIONS_3D[b]
        assert torch.equal(out[b, 0], x[b, 0].permute(order))
    with pytest.raises(ValueError, match="3-D"):
        permute_axes(torch.rand(2, 1, 4, 4), torch.zeros(2, dtype=torch.long))


@pytest.mark.parametrize("dims", [2, 3])
def test_affine_identity_and_quarter_turn(dims):
    x = torch.rand(3, *([8] * dims))
    same = affine(x, torch.zeros(3), torch.ones(3))
    assert torch.allclose(same, x, atol=1e-5)
    turned = affine(x, torch.full((3,), 90.0), torch.ones(3))
    # A quarter turn in the axial (y, x) plane is a rot90 of the last two axes (one of its two senses).
    options = [torch.rot90(x, k, dims=(-2, -1)) for k in (1, 3)]
    assert any(torch.allclose(turned, o, atol=1e-4) for o in options)


def test_intensity_formula():
    x = torch.ones(2, 1, 3, 3)
    noise = torch.full_like(x, 0.5)
    out = intensity(x, torch.tensor([0.1, -0.1]), torch.tensor([0.0, 0.2]), noise)
    assert torch.allclose(out[0], torch.full((1, 3, 3), 1.6))
    assert torch.allclose(out[1], torch.full((1, 3, 3), 1.6))


def test_augment_crops_is_reproducible_and_off_is_identity():
    x = torch.rand(4, 1, 6, 6, 6)
    extra = ExtraAugment(rot90=True, permute_axes=True, intensity=0.1, noise_std=0.05)
    a = augment_crops(x, extra, torch.Generator().manual_seed(1))
    b = augment_crops(x, extra, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, x)
    assert torch.equal(augment_crops(x, ExtraAugment(), torch.Generator().manual_seed(1)), x)


@pytest.mark.slow
def test_flip_views_and_tta_invariance(separable):
    x = torch.rand(2, 1, 4, 4, 4)
    views = flip_views(x)
    assert len(views) == 8 and torch.equal(views[0], x) and torch.equal(views[7], x.flip(2, 3, 4))
    # TTA makes the prediction invariant to flipping the input.
    model, _ = engine.build(tiny(), 3)
    images = torch.rand(5, 20, 20, 20)
    a = engine.predict_proba(model, images, 16, 8, tta=True)
    b = engine.predict_proba(model, images.flip(1, 3), 16, 8, tta=True)
    assert np.allclose(a, b, atol=1e-6)


# --- EMA, class balance, early stopping -----------------------------------------------------------------

def test_ema_update_formula():
    model = torch.nn.Linear(2, 1)
    ema = ModelEMA(model, decay=0.5)
    before = ema.shadow.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    d = ema.current_decay()  # warm-up: min(0.5, 1/10)
    assert d == pytest.approx(0.1)
    ema.update(model)
    assert torch.allclose(ema.shadow.weight, d * before + (1 - d) * model.weight)


def test_class_weights():
    w = class_weights(torch.tensor([0, 0, 0, 1]))
    assert torch.allclose(w, torch.tensor([4 / 6, 2.0]))
    assert torch.allclose(class_weights(torch.tensor([0, 0])), torch.tensor([1.0, 1.0]))


def test_early_stopping(separable):
    assert not stop_early([{}] * 3, chosen=0, patience=None)
    assert stop_early([{}] * 3, chosen=0, patience=2)
    assert not stop_early([{}] * 3, chosen=1, patience=2)



def test_training_stops_after_patience_epochs_without_validation_gain(separable, monkeypatch):
    monkeypatch.setattr(engine, "select_epoch", lambda history, *_: 0)  # epoch 1 stays best
    result = fit(separable, tiny(epochs=12, patience=3), test_fold=0)
    assert len(result.history) == 4 and result.epoch == 1


@pytest.mark.slow
def test_full_recipe_learns_and_resumes_exactly(separable, tmp_path, monkeypatch):
    config = tiny(epochs=3, **FULL)
    full = fit(separable, config, test_fold=1, out_dir=tmp_path / "full")
    calls = {"n": 0}
    real = epoch_step.random_crop_flip
    batches = engine.steps_per_epoch(full.split["train"], 16)

    class KilledError(Exception):
        pass

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == batches + 2:
            raise KilledError
        return real(*args, **kwargs)

    monkeypatch.setattr(epoch_step, "random_crop_flip", dying)
    with pytest.raises(KilledError):
        fit(separable, config, test_fold=1, out_dir=tmp_path / "cut")
    monkeypatch.setattr(epoch_step, "random_crop_flip", real)
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["ema"]["updates"] == batches
    resumed = fit(separable, config, test_fold=1, out_dir=tmp_path / "cut", resume=True)
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in full.history]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in resumed.history] == strip
    assert np.array_equal(resumed.test.prob, full.test.prob)
    # A planned schedule fixes the length of the run: more epochs on resume are refused.
    with pytest.raises(CheckpointError, match="epochs"):
        fit(separable, config.replace(epochs=4), test_fold=1, out_dir=tmp_path / "cut", resume=True)


def test_2d_recipe_runs(tmp_path):
    ds = synthetic_dataset(n=160, dims=2, folds=4, seed=2)
    config = tiny(epochs=10, **{k: v for k, v in FULL.items() if k != "permute_axes"})
    result = fit(ds, config, test_fold=1)
    assert math.isfinite(result.history[-1]["train_loss"])
    assert result.test_metrics["accuracy"] >= 0.8  # the whole recipe still learns a separable problem
