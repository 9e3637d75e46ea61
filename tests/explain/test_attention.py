"""Stage-2 attention maps: captured by hooks, upsampled to the input, in [0, 1]; the montage picks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from explain_helpers import TINY

from naslung.explain.attention import _maps_with_hooks, capture_maps, central_slice, spatial_attention
from naslung.explain.montage import GROUPS, pick_examples
from naslung.models.factory import build_model


@pytest.mark.parametrize("dims", [3, 2])
@pytest.mark.parametrize("stage", ["stage2", "stage3", "stage5"])
def test_maps_have_input_shape_and_lie_in_unit_range(dims, stage):
    torch.manual_seed(0)
    model = build_model(TINY, spatial_dims=dims).eval()
    x = torch.rand(3, 1, *([16] * dims))
    maps = spatial_attention(model, x, stage)
    assert maps.shape == (3, *([16] * dims))
    assert float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0
    assert float(maps.std()) > 0  # a real map, not a constant fill
    # Stage 2 runs at the input resolution: no resampling, the gate's own values.
    if stage == "stage2":
        raw = capture_maps(model, x)["stage2"]["spatial"][:, 0]
        assert torch.equal(maps, raw)


def test_hook_fallback_matches_the_models_helper():
    torch.manual_seed(1)
    model = build_model(TINY).eval()
    x = torch.rand(2, 1, 16, 16, 16)
    ours = _maps_with_hooks(model, x)
    theirs = capture_maps(model, x)
    assert set(ours) == set(theirs) == {"stage2", "stage3", "stage4", "stage5"}
    for stage in ours:
        assert torch.allclose(ours[stage]["spatial"], theirs[stage]["spatial"])
    # No hook left behind.
    assert all(not m._forward_hooks for m in model.modules())


def test_no_attention_is_a_clear_error():
    model = build_model(TINY, attention="none").eval()
    with pytest.raises(ValueError, match="no spatial attention at stage2"):
        spatial_attention(model, torch.rand(1, 1, 16, 16, 16))


def test_central_slice():
    cube = np.arange(4 * 2 * 2).reshape(4, 2, 2)
    assert np.array_equal(central_slice(cube), cube[2])
    assert np.array_equal(central_slice(cube[0]), cube[0])


def test_pick_examples_groups_and_confidence_order():
    labels = np.array([1, 1, 1, 0, 0, 0, 1])
    prob = np.array([0.9, 0.6, 0.2, 0.1, 0.45, 0.8, 0.99])
    picked = pick_examples(labels, prob, per_group=2)
    assert list(picked) == [g[0] for g in GROUPS]
    assert picked["malignant, correct"].tolist() == [6, 0]  # most confident first, capped at 2
    assert picked["malignant, wrong"].tolist() == [2]
    assert picked["benign, correct"].tolist() == [3, 4]
    assert picked["benign, wrong"].tolist() == [5]
