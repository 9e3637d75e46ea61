"""The 3-D serving path runs channels-last on CPU: it must equal the contiguous path, natively and on AVX2."""

from __future__ import annotations

import pytest
import torch

from naslung.models import build_model
from naslung.models.fast import eval_model, serving_channels_last, to_channels_last

ARCHS = ("[4,4,[4,4],[4,8],[8,8]]", "[8,8,[8,8],[16,16],[32,32]]")


def test_a_3d_run_that_trains_channels_last_is_served_channels_last_on_cpu() -> None:
    assert serving_channels_last(True, 3)
    assert not serving_channels_last(False, 3)
    assert not serving_channels_last(True, 2)  # 2-D always runs contiguous


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("batch", [1, 5])
def test_the_channels_last_serving_path_equals_the_contiguous_one(arch: str, batch: int) -> None:
    torch.manual_seed(0)
    model = build_model(arch)
    model.train()
    with torch.no_grad():  # batch statistics that are not the identity, so that the BN folding matters
        model(torch.randn(4, 1, 32, 32, 32))
    model.eval()
    x = torch.randn(batch, 1, 32, 32, 32)
    with torch.no_grad():
        want = eval_model(model, channels_last=False)(x.contiguous())
        got = eval_model(model, channels_last=True)(to_channels_last(x, 3))
        eager = model(x)
    assert got.shape == want.shape == (batch, 2)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4)
    assert torch.allclose(got, eager, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_the_channels_last_serving_path_under_avx2_dispatch(rerun_under_avx2) -> None:
    """The same checks with torch and oneDNN capped to AVX2, plus 300 forwards of batch sizes 1-9 (oneDNN's
    2-D channels-last bug showed only after hundreds of calls)."""
    rerun_under_avx2(__file__, "equals_the_contiguous or repeated")


def test_repeated_channels_last_forwards_stay_finite() -> None:
    torch.manual_seed(1)
    net = eval_model(build_model(ARCHS[0]).eval(), channels_last=True)
    with torch.no_grad():
        for step in range(300):
            x = to_channels_last(torch.randn(step % 9 + 1, 1, 32, 32, 32), 3)
            assert torch.isfinite(net(x)).all()
