"""attention_maps / capture_attention: maps from forward hooks, nothing left on the model."""

from __future__ import annotations

import pytest
import torch

from naslung.models import MODEL_1, attention_maps, build_model, capture_attention
from naslung.models.blocks import CBAM
from naslung.models.factory import ATTENTION_STAGES


def _hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


@pytest.mark.parametrize("dims", [2, 3])
def test_maps_shapes_ranges_and_no_leftovers(dims: int):
    torch.manual_seed(0)
    model = build_model(MODEL_1, spatial_dims=dims).train()
    x = torch.randn(2, 1, *([16] * dims))
    maps = attention_maps(model, x)
    assert model.training and _hooks(model) == 0
    assert sorted(maps) == list(ATTENTION_STAGES)
    widths = {"stage2": 4, "stage3": 4, "stage4": 8, "stage5": 8}
    for i, stage in enumerate(ATTENTION_STAGES):
        assert maps[stage]["channel"].shape == (2, widths[stage])
        assert maps[stage]["spatial"].shape == (2, 1, *([16 // 2**i] * dims))
        for m in maps[stage].values():
            assert not m.requires_grad and ((m > 0) & (m < 1)).all()


def test_maps_are_the_gates_that_shape_the_output():
    """Replaying stage 2 by hand with the captured maps gives the stage's output."""
    torch.manual_seed(1)
    model = build_model(MODEL_1).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    stage2 = model.stages["stage2"]
    with torch.no_grad(), capture_attention(model) as maps:
        pre = stage2[0](model.stages["stage1"](x))
        out = stage2(model.stages["stage1"](x))
    gated = pre * maps["stage2"]["channel"].view(1, -1, 1, 1, 1)
    assert torch.allclose(out, gated * maps["stage2"]["spatial"], atol=1e-6)


def test_capture_keeps_graph_when_asked_and_cleans_up_on_error():
    model = build_model(MODEL_1, spatial_dims=2)
    x = torch.randn(2, 1, 16, 16)
    with capture_attention(model, detach=False) as maps:
        logits = model(x)
    assert maps["stage5"]["spatial"].requires_grad and logits.shape == (2, 2)
    (g,) = torch.autograd.grad(logits[:, 1].sum(), maps["stage5"]["spatial"])
    assert g.shape == maps["stage5"]["spatial"].shape
    with pytest.raises(ValueError), capture_attention(model):
        model(torch.randn(1, 1, 20, 16))
    assert _hooks(model) == 0


def test_no_attention_and_plain_modules():
    assert attention_maps(build_model(MODEL_1, attention="none"), torch.randn(1, 1, 16, 16, 16)) == {}
    seq = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), CBAM(4))
    maps = attention_maps(seq, torch.randn(1, 1, 8, 8, 8))
    assert list(maps) == ["1"] and maps["1"]["spatial"].shape == (1, 1, 8, 8, 8)
