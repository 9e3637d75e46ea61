"""``TrainConfig.amp`` (bf16 autocast on CUDA only; CPU training unchanged) and the folded prediction path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from naslung.models import fast
from naslung.models.fuse import count_batchnorms
from naslung.train import inference
from naslung.train.augment import center_crop, flip_views
from naslung.train.config import TrainConfig
from naslung.train.engine import fit
from naslung.train.epoch import amp_applies
from naslung.train.inference import format_input, predict_proba
from naslung.train.resume import changed_options

from .conftest import tiny


def test_amp_is_a_field_off_by_default() -> None:
    assert TrainConfig().amp is False and TrainConfig().to_dict()["amp"] is False
    saved = TrainConfig().to_dict()
    del saved["amp"]  # a run written before the field existed trained in fp32
    assert TrainConfig.from_dict(saved).amp is False
    assert TrainConfig.from_dict({**saved, "amp": True}).amp is True


def test_amp_applies_on_cuda_only() -> None:
    assert amp_applies(True, torch.device("cuda")) and not amp_applies(False, torch.device("cuda"))
    assert not amp_applies(True, torch.device("cpu"))


def test_a_change_of_amp_refuses_resume() -> None:
    assert changed_options(tiny(amp=False).to_dict(), tiny(amp=True)) == ["amp"]
    old = tiny().to_dict()
    del old["amp"]  # a run that predates the field counts as its default
    assert changed_options(old, tiny()) == []


def test_cpu_training_is_bit_identical_with_amp_on_or_off(separable, monkeypatch: pytest.MonkeyPatch) -> None:
    # Pretend this CPU has native bf16, so that autocast would act if amp reached the CPU path.
    monkeypatch.setattr(fast, "bf16_supported", lambda device="cpu": True)
    runs = {amp: fit(separable, tiny(amp=amp, epochs=2), test_fold=0) for amp in (True, False)}
    on, off = runs[True], runs[False]
    assert [h["train_loss"] for h in on.history] == [h["train_loss"] for h in off.history]
    assert [h["val"] for h in on.history] == [h["val"] for h in off.history]
    for (name, a), b in zip(on.model.state_dict().items(), off.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert np.array_equal(on.test.prob, off.test.prob)


@pytest.mark.parametrize(("tta", "channels_last"), [(False, False), (True, True)])
@pytest.mark.slow
def test_predictions_run_folded_and_equal_the_unfolded_model(separable, monkeypatch: pytest.MonkeyPatch,
                                                            tta: bool, channels_last: bool) -> None:
    model = fit(separable, tiny(epochs=1, ema_decay=0.9), test_fold=0).model  # EMA weights, trained BN stats
    assert count_batchnorms(model) > 0
    folded: list[bool] = []
    real = inference.eval_model

    def spy(m: torch.nn.Module, channels_last: bool = False) -> torch.nn.Module:
        out = real(m, channels_last=channels_last)
        folded.append(count_batchnorms(out) == 0)
        return out

    monkeypatch.setattr(inference, "eval_model", spy)
    images = torch.from_numpy(np.ascontiguousarray(separable.images[:24], dtype=np.float32))
    got = predict_proba(model, images, separable.size, 8, channels_last=channels_last, tta=tta)
    assert folded == [True] and count_batchnorms(model) > 0  # the model itself is left unfolded
    model.eval()
    with torch.no_grad():
        crop = center_crop(images, separable.size)
        views = flip_views(crop) if tta else [crop]
        want = sum(torch.softmax(model(format_input(v, channels_last)), dim=1)[:, 1] for v in views)
        want = want / len(views)
    assert got.shape == (24,) and np.abs(got - want.double().numpy()).max() < 1e-5


def test_embedding_field_and_the_configs_written_before_it() -> None:
    saved = TrainConfig(embedding="linear").to_dict()
    assert TrainConfig.from_dict(saved).embedding == "linear"
    del saved["embedding"]  # a whole config written before the field existed trained the ReLU embedding
    assert TrainConfig.from_dict(saved).embedding == "relu"
    # a partial config (--config FILE) keeps the default
    assert TrainConfig.from_dict({"epochs": 3}).embedding == TrainConfig().embedding
    assert TrainConfig(embedding="linear").model_options()["embedding"] == "linear"
    with pytest.raises(ValueError, match="embedding"):
        TrainConfig(embedding="gelu")
    with pytest.raises(ValueError, match="cbam_kernel"):
        TrainConfig(cbam_kernel=5)  # the model has no 5^3 gate; refused before any work


def test_a_checkpoint_without_the_embedding_option_is_the_relu_one() -> None:
    from naslung.train.checkpoint import CheckpointError, check_compatible

    state = {"spec": "[4,4,[4],[4],[8]]", "model_options": {"loss": "asoftmax", "cbam_kernel": 7}}
    check_compatible(state, {"arch": "[4,4,[4],[4],[8]]", "embedding": "relu"}, "old/best.pt")
    with pytest.raises(CheckpointError, match="embedding='relu'.*embedding='linear'"):
        check_compatible(state, {"arch": "[4,4,[4],[4],[8]]", "embedding": "linear"}, "old/best.pt")
