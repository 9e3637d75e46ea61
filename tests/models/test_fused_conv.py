"""The direct few-channel 3-D convolution kernels (naslung.models.kernels.conv): outputs and both gradients
equal float64 references for every kernel size, stride and channel case they take; Conv3d uses them only
where they apply; the fallback and the switch; the same checks under AVX2 dispatch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from naslung.models import MODEL_1, build_model
from naslung.models.blocks.conv import Conv3d
from naslung.models.kernels import conv as conv_module
from naslung.models.kernels import conv_ops
from naslung.models.kernels.conv import direct_conv3d, direct_conv_applies
from naslung.models.kernels.switch import set_fused_kernels

pytestmark = pytest.mark.skipif(conv_ops() is None,
                                reason="the fused kernels could not be built here (a warning says why)")

CL = torch.channels_last_3d


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


# (batch, in, out, side, kernel, stride): Model-1's and the 3-D default's shapes, odd and tiny sides, 8 -> 4;
# rows of 16 and more voxels (w = side + 2) take the in-register transposes, the rest the scalar loops.
CASES = [(2, 4, 4, 8, 3, 1), (2, 4, 4, 9, 3, 1), (2, 4, 4, 8, 3, 2), (2, 4, 4, 9, 3, 2), (2, 4, 8, 10, 3, 2),
         (2, 8, 8, 5, 3, 1), (2, 1, 4, 8, 3, 1), (3, 1, 8, 7, 3, 1), (2, 4, 4, 8, 1, 2), (2, 4, 8, 9, 1, 2),
         (2, 8, 4, 17, 3, 1), (1, 4, 4, 3, 3, 2), (2, 4, 4, 6, 1, 1), (1, 4, 4, 16, 3, 2),
         (1, 4, 8, 15, 1, 2), (1, 4, 4, 30, 3, 1)]


@pytest.mark.parametrize("batch,c_in,c_out,side,kernel,stride", CASES)
def test_direct_conv_equals_float64(batch, c_in, c_out, side, kernel, stride):
    torch.manual_seed(side * 10 + c_in)
    shape = (batch, c_in, side, side + 1, side + 2)  # unequal sides: d, h and w are not mixed up
    x = torch.randn(shape).contiguous(memory_format=CL).requires_grad_()
    w = torch.randn(c_out, c_in, kernel, kernel, kernel)
    if side % 2:  # a channels-last weight, as in a model moved to channels_last_3d
        w = w.contiguous(memory_format=CL)
    w.requires_grad_()
    y = direct_conv3d(x, w, stride)
    xd, wd = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    ref = F.conv3d(xd, wd, stride=stride, padding=kernel // 2)
    assert y.shape == ref.shape and y.is_contiguous(memory_format=CL)
    assert _rel(y, ref) < 1e-5
    grad = torch.randn(ref.shape, dtype=torch.float64)
    ref.backward(grad)
    y.backward(grad.float())
    assert x.grad.shape == x.shape and x.grad.is_contiguous(memory_format=CL)
    assert _rel(x.grad, xd.grad) < 1e-5
    assert _rel(w.grad, wd.grad) < 1e-5


def test_an_input_without_gradient_gets_only_the_weight_gradient():
    x = torch.randn(2, 1, 8, 8, 8).contiguous(memory_format=CL)  # the image: no gradient wanted
    w = torch.randn(4, 1, 3, 3, 3, requires_grad=True)
    direct_conv3d(x, w, 1).square().sum().backward()
    wd = w.detach().double().requires_grad_()
    F.conv3d(x.double(), wd, padding=1).square().sum().backward()
    assert x.grad is None and _rel(w.grad, wd.grad) < 1e-5


@pytest.mark.parametrize("batch,c_in,c_out,side,stride", [(1, 4, 4, 9, 1), (3, 1, 8, 8, 1), (1, 8, 4, 7, 2),
                                                        (2, 4, 8, 16, 2), (3, 8, 8, 7, 1), (2, 4, 4, 5, 1),
                                                        (1, 8, 8, 4, 1), (1, 4, 4, 4, 1)])
def test_the_biased_inference_forward_equals_float64(batch, c_in, c_out, side, stride):
    torch.manual_seed(batch + side)
    x = torch.randn(batch, c_in, side, side + 2, side + 1).contiguous(memory_format=CL)
    w, b = torch.randn(c_out, c_in, 3, 3, 3), torch.randn(c_out)
    with torch.no_grad():
        y = direct_conv3d(x, w, stride, b)
        # the serving model's weights are channels-last: read through their strides, not copied
        assert torch.equal(direct_conv3d(x, w.contiguous(memory_format=CL), stride, b), y)
    assert _rel(y, F.conv3d(x.double(), w.double(), b.double(), stride=stride, padding=1)) < 1e-5
    # serving builds no planar copy (each thread's ring of planes instead): the same numbers, bit for bit
    kept, planar = conv_ops().forward(x, w, b, stride, True)
    ring, nothing = conv_ops().forward(x, w, b, stride, False)
    assert torch.equal(kept, y) and torch.equal(ring, y) and planar.numel() > 0 and nothing.numel() == 0
    with pytest.raises(ValueError, match="without a bias"):
        direct_conv3d(x.requires_grad_(), w, stride, b)


def _conv(c_in=4, c_out=4, kernel=3, stride=1, bias=False) -> Conv3d:
    return Conv3d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=bias)


def _input(c=4, side=16) -> torch.Tensor:
    return torch.randn(2, c, side, side, side).contiguous(memory_format=CL).requires_grad_()


def test_conv3d_takes_the_direct_kernels_only_where_they_apply():
    conv, x = _conv(), _input()
    assert direct_conv_applies(conv, x, conv.weight, conv.bias)
    shortcut = _conv(kernel=1, stride=2)
    assert direct_conv_applies(shortcut, x, shortcut.weight, None)
    with torch.no_grad():
        assert direct_conv_applies(conv, x, conv.weight, conv.bias)  # serving: 3^3 convs too
        assert not direct_conv_applies(shortcut, x, shortcut.weight, None)  # but oneDNN's 1^3 was faster
    wide, narrow, plain = _conv(16, 16), _input(side=8), x.detach().contiguous().requires_grad_()
    assert not direct_conv_applies(wide, _input(16), wide.weight, wide.bias)  # 16 channels: oneDNN wins
    assert not direct_conv_applies(conv, narrow, conv.weight, conv.bias)  # maps narrower than 16
    with torch.no_grad():  # serving: 8 wide for batches, 4 wide for one sample
        assert direct_conv_applies(conv, narrow, conv.weight, conv.bias)
        assert not direct_conv_applies(conv, _input(side=4), conv.weight, conv.bias)
        assert direct_conv_applies(conv, _input(side=4)[:1], conv.weight, conv.bias)
        assert not direct_conv_applies(conv, _input(side=3)[:1], conv.weight, conv.bias)
    assert not direct_conv_applies(conv, plain, conv.weight, conv.bias)  # not channels-last
    biased = _conv(bias=True)
    assert not direct_conv_applies(biased, x, biased.weight, biased.bias)  # training: BN follows, no bias
    with torch.no_grad():
        assert direct_conv_applies(biased, x, biased.weight, biased.bias)  # the BN-folded serving conv
    odd = Conv3d(4, 4, 3, padding=0, bias=False)
    assert not direct_conv_applies(odd, x, odd.weight, odd.bias)
    three = _conv(3, 4)
    assert not direct_conv_applies(three, _input(3), three.weight, three.bias)
    set_fused_kernels(torch.nn.Sequential(conv), False)
    assert not direct_conv_applies(conv, x, conv.weight, conv.bias)
    conv.fused = True
    conv.register_forward_hook(lambda *args: None)  # explanations hook modules: torch's ops then
    assert not direct_conv_applies(conv, x, conv.weight, conv.bias)


def test_conv3d_forward_and_backward_match_torch_path():
    torch.manual_seed(1)
    fused, plain = _conv(4, 8, stride=2), _conv(4, 8, stride=2)
    plain.load_state_dict(fused.state_dict())
    plain.fused = False
    x = _input(side=16)
    outs = []
    for conv in (fused, plain):
        xi = x.detach().clone().requires_grad_()
        y = conv(xi)
        y.square().sum().backward()
        outs.append((y, xi.grad, conv.weight.grad))
    for a, b in zip(outs[0], outs[1], strict=True):
        assert _rel(a, b) < 1e-5


def test_a_model1_training_step_runs_its_wide_convs_on_the_direct_kernels(monkeypatch):
    calls = []
    original = conv_module._DirectConv3d.apply

    def counted(x, w, stride):
        calls.append((x.shape[1], w.shape[0], x.shape[-1], stride))
        return original(x, w, stride)

    monkeypatch.setattr(conv_module._DirectConv3d, "apply", counted)
    model = build_model(MODEL_1).to(memory_format=CL).train()
    model.forward_features(torch.randn(2, 1, 32, 32, 32).contiguous(memory_format=CL)).sum().backward()
    # the stems (1 -> 4, 4 -> 4 at 32^3), the strided convs and shortcuts from 32^3 and from 16^3, the 16^3
    # convs; nothing narrower than 16
    for case in [(1, 4, 32, 1), (4, 4, 32, 1), (4, 4, 32, 2), (4, 4, 16, 1), (4, 4, 16, 2)]:
        assert case in calls
    assert all(side >= 16 for *_, side, _s in calls)


def test_without_the_kernels_conv3d_trains_on_torch_ops(monkeypatch):
    monkeypatch.setattr(conv_module, "conv_ops", lambda: None)
    conv, x = _conv(), _input()
    assert not direct_conv_applies(conv, x, conv.weight, conv.bias)
    conv(x).sum().backward()
    assert x.grad is not None and conv.weight.grad is not None


def test_the_kernels_refuse_what_they_cannot_compute():
    ops, x = conv_ops(), torch.randn(1, 4, 8, 8, 8).contiguous(memory_format=CL)
    with pytest.raises(RuntimeError, match="channels_last_3d"):
        ops.forward(torch.randn(1, 4, 8, 8, 8), torch.randn(4, 4, 3, 3, 3), None, 1)
    with pytest.raises(RuntimeError, match="multiple of 4"):
        ops.forward(x, torch.randn(3, 4, 3, 3, 3), None, 1)
    with pytest.raises(RuntimeError, match="kernel 1\\^3 or 3\\^3"):
        ops.forward(x, torch.randn(4, 4, 5, 5, 5), None, 1)


def test_a_nan_propagates_as_on_torch_path():
    """A non-finite input must reach the loss and the same gradients as through torch's ops."""
    x = _input()
    x.data[0, 1, 3, 3, 3] = float("nan")
    fused, plain = _conv(), _conv()
    plain.load_state_dict(fused.state_dict())
    plain.fused = False
    nans = []
    for conv in (fused, plain):
        xi = x.detach().clone().requires_grad_()
        y = conv(xi)
        y.sum().backward()
        nans.append([torch.isnan(t) for t in (y, xi.grad, conv.weight.grad)])
    assert nans[0][0].any() and not nans[0][0][1].any() and nans[0][2][:, 1].all()
    for a, b in zip(nans[0], nans[1], strict=True):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_the_same_checks_pass_under_avx2_dispatch(rerun_under_avx2):
    """Rerun this file's equivalence tests with the kernels built for AVX2 and torch capped to AVX2."""
    rerun_under_avx2(__file__, "float64 or torch_path or model1")


def test_the_serving_path_of_model1_runs_on_the_direct_kernels_and_equals_torch_path(monkeypatch):
    from naslung.models.blocks import conv as blocks_conv
    from naslung.models.fast import eval_model

    calls = []
    original = blocks_conv.direct_conv3d

    def counted(x, weight, stride, bias=None):
        calls.append(x.shape[-1])
        return original(x, weight, stride, bias)

    monkeypatch.setattr(blocks_conv, "direct_conv3d", counted)
    torch.manual_seed(5)
    model = build_model(MODEL_1).eval()
    direct, plain = eval_model(model, channels_last=True), eval_model(model, channels_last=True)
    set_fused_kernels(plain, False)
    for batch in (1, 3):
        x = torch.randn(batch, 1, 32, 32, 32).contiguous(memory_format=CL)
        with torch.no_grad():
            want = plain(x)
            calls.clear()
            got = direct(x)
        # the two stems, stage 3's strided conv and its three 16^3 convs, stage 4's strided conv (16 wide in);
        # stage 4's three 8^3 convs and stage 5's strided one (8 wide in: the 8-position blocks); stage 5's
        # three 4^3 convs for one sample only (a batch takes oneDNN there)
        if batch == 1:
            assert len(calls) == 14 and sorted(calls).count(8) == 4 and sorted(calls).count(4) == 3
        else:
            assert len(calls) == 11 and sorted(calls).count(8) == 4 and min(calls) == 8
        assert _rel(got, want) < 1e-5
