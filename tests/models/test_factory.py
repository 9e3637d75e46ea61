"""build_model: shape tables (2-D/3-D), gradients, attention reach, parameter count, config, errors."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from naslung.models import MODEL_1, attention_maps, build_model, model_from_config
from naslung.models.blocks import CBAM
from naslung.models.factory import ATTENTION_STAGES
from naslung.models.heads import AngularHead

SMALL = "[4,4,[4],[4],[8]]"
MID = "[4,4,[8,16],[16,32],[32,64]]"
BIG = "[4,4,[64,64,64],[128,128,256],[256,256,256,512]]"


@pytest.mark.parametrize(
    ("spec", "dims", "size", "batch", "features"),
    [
        (SMALL, 3, 16, 2, 8),
        (str(MODEL_1), 3, 32, 2, 8),
        (MODEL_1, 3, 48, 1, 8),
        (MID, 3, 16, 2, 64),
        (SMALL, 2, 16, 3, 8),
        (str(MODEL_1), 2, 32, 2, 8),
        (MID, 2, 48, 2, 64),
        (BIG, 2, 16, 2, 512),
    ],
)
def test_shape_table(spec, dims: int, size: int, batch: int, features: int):
    model = build_model(spec, spatial_dims=dims).eval()
    x = torch.randn(batch, 1, *([size] * dims))
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model(x)
    assert feats.shape == (batch, features)
    assert logits.shape == (batch, 2)
    assert torch.allclose(model.forward_head(feats), logits)
    maps = attention_maps(model, x)
    assert sorted(maps) == list(ATTENTION_STAGES)
    for i, stage in enumerate(ATTENTION_STAGES):
        side = size // 2**i
        assert maps[stage]["spatial"].shape == (batch, 1, *([side] * dims))


def test_non_cubic_and_multichannel_input():
    model = build_model(SMALL, in_channels=2, num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 2, 8, 16, 24)).shape == (1, 3)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("head", ["angular", "linear"])
@pytest.mark.parametrize("attention", ["cbam", "cbam-spatial-first", "none"])
def test_gradients_reach_every_parameter(attention: str, head: str, dims: int):
    torch.manual_seed(0)
    model = build_model("[4,4,[4,8],[8],[8]]", attention=attention, head=head, spatial_dims=dims)
    # A CBAM MLP with 1-2 hidden units can start with its ReLU off for the whole batch (a real property
    # of CBAM, not a broken path); CBAM inputs are post-ReLU (>= 0), so positive weights switch it on.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, CBAM):
                m.channel.mlp[0].weight.abs_()
                m.channel.mlp[0].bias.fill_(0.1)
    x = torch.randn(4, 1, *([16] * dims))
    loss = F.cross_entropy(model(x), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert torch.isfinite(loss)


@pytest.mark.parametrize(
    ("attention", "order"),
    [("cbam", "channel-first"), ("cbam-spatial-first", "spatial-first"), ("none", None)],
)
def test_attention_option_reaches_every_stage(attention: str, order: str | None):
    model = build_model(MID, attention=attention, spatial_dims=2)
    cbams = [m for m in model.modules() if isinstance(m, CBAM)]
    mods = model.attention_modules()
    if order is None:
        assert cbams == [] and mods == {}
        assert attention_maps(model, torch.randn(1, 1, 16, 16)) == {}
        return
    assert len(cbams) == 4
    assert sorted(mods) == list(ATTENTION_STAGES)
    assert all(m.order == order for m in cbams)
    # each CBAM closes its stage and sees that stage's width
    widths = {"stage2": 4, "stage3": 16, "stage4": 32, "stage5": 64}
    for stage, m in mods.items():
        assert model.stages[stage][-1] is m
        assert m.channel.mlp[0].in_features == widths[stage]


def _conv(cin: int, cout: int, k: int, bias: bool = False) -> int:
    return cin * cout * k**3 + (cout if bias else 0)


def _bn(c: int) -> int:
    return 2 * c


def _cbam(c: int, kernel: int = 7) -> int:
    hidden = max(1, c // 4)
    mlp = (c * hidden + hidden) + (hidden * c + c)
    return mlp + _conv(2, 1, kernel, bias=True)


def _block(cin: int, cout: int, projection: bool) -> int:
    n = _conv(cin, cout, 3) + _bn(cout) + _conv(cout, cout, 3) + _bn(cout)
    return n + (_conv(cin, cout, 1) + _bn(cout) if projection else 0)


def test_model1_parameter_count_closed_form():
    stage1 = _conv(1, 4, 3) + _bn(4)  # 116
    stage2 = _conv(4, 4, 3) + _bn(4) + _cbam(4)  # 440 + 700
    stage3 = _block(4, 4, True) + _block(4, 4, False) + _cbam(4)  # stride-2 first block: projection
    stage4 = _block(4, 4, True) + _block(4, 8, True) + _cbam(8)
    stage5 = _block(8, 8, True) + _block(8, 8, False) + _cbam(8)
    head = 2 * 8  # angular: (num_classes, F), no bias
    expected = stage1 + stage2 + stage3 + stage4 + stage5 + head
    assert expected == 15846
    model = build_model(MODEL_1)
    assert sum(p.numel() for p in model.parameters()) == expected
    # without attention and with a linear head (bias) the difference is exactly the four CBAMs + 2
    plain = build_model(MODEL_1, attention="none", head="linear")
    cbams = _cbam(4) * 2 + _cbam(8) * 2
    assert sum(p.numel() for p in plain.parameters()) == expected - cbams + 2
    # the 3^3 spatial kernel: each CBAM loses 2 * (7^3 - 3^3) weights
    small = build_model(MODEL_1, cbam_kernel=3)
    assert sum(p.numel() for p in small.parameters()) == expected - 4 * 2 * (7**3 - 3**3)
    assert all(m.spatial.conv.kernel_size == (3, 3, 3) for m in small.attention_modules().values())


def test_big_spec_builds_outside_the_search_space():
    model = build_model(BIG)
    assert model.num_features == 512
    assert isinstance(model.head, AngularHead) and model.head.weight.shape == (2, 512)


def test_config_round_trip():
    model = build_model(MID, attention="cbam-spatial-first", head="linear", spatial_dims=2, num_classes=3)
    cfg = json.loads(json.dumps(model.config))
    assert cfg == {
        "spec": MID,
        "attention": "cbam-spatial-first",
        "head": "linear",
        "spatial_dims": 2,
        "in_channels": 1,
        "num_classes": 3,
        "cbam_kernel": 7,
        "embedding": "relu",
    }
    clone = model_from_config(cfg)
    clone.load_state_dict(model.state_dict())
    model.eval(), clone.eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), clone(x))
    # the spatial kernel is recorded, so a checkpoint rebuilds the same model; old configs mean 7
    k3 = build_model(MID, cbam_kernel=3, spatial_dims=2)
    assert k3.config["cbam_kernel"] == 3
    assert model_from_config(k3.config).stages["stage2"][-1].spatial.conv.kernel_size == (3, 3)
    old = {k: v for k, v in model.config.items() if k != "cbam_kernel"}
    assert model_from_config(old).config["cbam_kernel"] == 7
    # so is the embedding; configs written before it existed mean the ReLU embedding they trained
    linear = build_model(MID, embedding="linear", spatial_dims=2)
    assert model_from_config(linear.config).config["embedding"] == "linear"
    older = {k: v for k, v in linear.config.items() if k != "embedding"}
    assert model_from_config(older).config["embedding"] == "relu"


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("attention", ["cbam", "none"])
def test_linear_embedding_drops_only_the_last_relu(dims: int, attention: str):
    """``embedding="linear"``: the last residual block returns its sum before the ReLU, every other block
    and every parameter is unchanged, so the same weights give ``relu(sum)`` vs ``sum`` at the end."""
    from naslung.models.blocks.residual import ResidualBlock

    torch.manual_seed(0)
    relu = build_model(MID, spatial_dims=dims, attention=attention)
    linear = build_model(MID, spatial_dims=dims, attention=attention, embedding="linear")
    linear.load_state_dict(relu.state_dict())  # same parameter names and shapes: no new parameter
    blocks = [m for m in linear.modules() if isinstance(m, ResidualBlock)]
    assert [b.relu_out for b in blocks] == [True] * (len(blocks) - 1) + [False]
    last = blocks[-1]
    with torch.no_grad():
        last.bn2.bias.fill_(-3.0)  # push the sum below zero
    relu.load_state_dict(linear.state_dict())
    relu.eval(), linear.eval()
    x = torch.randn(2, 1, *([16] * dims))
    with torch.no_grad():
        f_relu, f_linear = relu.forward_features(x), linear.forward_features(x)
    assert (f_relu >= 0).all()
    assert (f_linear < 0).any()  # the embedding can point out of the positive orthant
    # the stage-5 output before pooling: relu(sum) for one, sum for the other
    captured: dict[str, torch.Tensor] = {}
    last.register_forward_hook(lambda m, i, o: captured.__setitem__("sum", o.detach().clone()))
    with torch.no_grad():
        linear.forward_features(x)
    assert (captured["sum"] < 0).any()
    with pytest.raises(ValueError, match="linear, relu"):
        build_model(MID, embedding="gelu")


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"attention": "se"}, "cbam, cbam-spatial-first, none"),
        ({"head": "cosface"}, "angular, linear"),
        ({"spatial_dims": 1}, "spatial_dims must be one of"),
        ({"num_classes": 1}, "num_classes"),
        ({"cbam_kernel": 5}, "valid: 3, 7"),
        ({"spec": "[4,4,[4],[4]]"}, "3 stage lists"),
    ],
)
def test_bad_options_raise(kwargs: dict, fragment: str):
    args = {"spec": SMALL, **kwargs}
    with pytest.raises(ValueError, match=fragment):
        build_model(**args)


def test_bad_inputs_and_configs_raise():
    model = build_model(SMALL, spatial_dims=2)
    with pytest.raises(ValueError, match="divisible by 8"):
        model(torch.randn(1, 1, 20, 16))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        model(torch.randn(1, 1, 16, 16, 16))
    with pytest.raises(ValueError, match="unknown model config keys"):
        model_from_config({**model.config, "dropout": 0.1})
