"""Fast paths match eager fp32: channels_last_3d (outputs and gradients), bf16 autocast (outputs within
bf16 tolerance, trains a small fixed problem as well as fp32), the BN-folded eval path."""

from __future__ import annotations

import pytest
import torch

from naslung.losses import build_criterion
from naslung.models import MODEL_1, build_model
from naslung.models.fast import autocast, bf16_supported, eval_model, to_channels_last


@pytest.mark.parametrize("kernel", [3, 7])
@pytest.mark.slow
def test_channels_last_3d_matches_eager_outputs_and_gradients(kernel: int):
    torch.manual_seed(0)
    ref = build_model(MODEL_1, cbam_kernel=kernel).train()
    fast = to_channels_last(build_model(MODEL_1, cbam_kernel=kernel), 3)
    fast.load_state_dict(ref.state_dict())
    fast.train()
    x = torch.randn(4, 1, 16, 16, 16)
    y = torch.tensor([0, 1, 0, 1])
    losses = []
    for model, inp in ((ref, x), (fast, to_channels_last(x, 3))):
        loss = build_criterion("softmax", model)(model.forward_features(inp), y)
        loss.backward()
        losses.append(loss)
    assert torch.allclose(losses[0], losses[1], rtol=1e-4, atol=1e-5)
    for (name, a), b in zip(ref.named_parameters(), fast.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, rtol=1e-3, atol=1e-5), name


def test_two_d_is_left_contiguous():
    model = build_model(MODEL_1, spatial_dims=2)
    x = torch.randn(2, 1, 16, 16)
    assert to_channels_last(model, 2) is model and to_channels_last(x, 2) is x


def test_eval_model_equals_eager():
    torch.manual_seed(0)
    model = build_model(MODEL_1)
    with torch.no_grad():
        model.train()(torch.randn(8, 1, 16, 16, 16))
    model.eval()
    x = torch.randn(3, 1, 16, 16, 16)
    with torch.no_grad():
        ref = model(x)
        for cl in (False, True):
            fast = eval_model(model, channels_last=cl)
            out = fast(to_channels_last(x, 3) if cl else x)
            assert torch.allclose(ref, out, rtol=1e-4, atol=1e-5)


def _blobs(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed toy problem: class 1 has a bright 6^3 cube at the centre of 16^3 noise."""
    x = torch.randn(n, 1, 16, 16, 16, generator=gen) * 0.5
    y = torch.arange(n) % 2
    x[y == 1, :, 5:11, 5:11, 5:11] += 1.5
    return x, y


@pytest.mark.skipif(not bf16_supported(), reason="no native bf16 on this CPU (autocast is a no-op)")
def test_bf16_autocast_close_to_fp32():
    torch.manual_seed(0)
    model = to_channels_last(build_model("[4,4,[4],[8],[8]]", cbam_kernel=3), 3).eval()
    x = to_channels_last(torch.randn(4, 1, 16, 16, 16), 3)
    with torch.no_grad():
        ref = model.forward_features(x)
        with autocast():
            low = model.forward_features(x).float()
    assert torch.allclose(ref, low, rtol=5e-2, atol=5e-2)


@pytest.mark.slow  # bf16 at these tiny shapes is slow on CPU (~1 min on a loaded 2-core machine)
@pytest.mark.skipif(not bf16_supported(), reason="no native bf16 on this CPU (autocast is a no-op)")
@pytest.mark.xfail(
    strict=False,
    reason="bf16 training on this toy problem sometimes ends at chance (0.5) while fp32 reaches 1.0 "
    "(torch 2.13 CPU, AVX512-BF16); bf16 is therefore not a default",
)
def test_bf16_trains_as_well_as_fp32():
    accuracy = {}
    for bf16 in (False, True):
        torch.manual_seed(1)
        gen = torch.Generator().manual_seed(2)
        model = to_channels_last(build_model("[4,4,[4],[8],[8]]", cbam_kernel=3), 3).train()
        criterion = build_criterion("softmax", model)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(30):
            xb, yb = _blobs(16, gen)
            with autocast(enabled=bf16):
                feats = model.forward_features(to_channels_last(xb, 3))
            loss = criterion(feats.float(), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        xt, yt = _blobs(64, torch.Generator().manual_seed(99))
        with torch.no_grad():
            accuracy[bf16] = float((model.eval()(to_channels_last(xt, 3)).argmax(1) == yt).float().mean())
    assert accuracy[False] >= 0.9 and accuracy[True] >= 0.9, accuracy
    assert abs(accuracy[True] - accuracy[False]) <= 0.1, accuracy


def test_autocast_disabled_is_a_no_op():
    with autocast(enabled=False):
        assert not torch.is_autocast_enabled("cpu")
