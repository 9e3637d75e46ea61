"""naslung.models.blocks.batchnorm: the channels-last CPU training path equals batch norm (float64)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from naslung.models import build_model
from naslung.models.blocks.batchnorm import MAX_CHANNELS, BatchNorm2d, BatchNorm3d, fast_path_applies


def _reference(x, g, weight, bias, running_mean, running_var, momentum):
    """float64 F.batch_norm in training mode: output, gradients, and the running statistics it leaves."""
    rm, rv = running_mean.double().clone(), running_var.double().clone()
    xd = x.detach().double().contiguous().requires_grad_()
    wd, bd = weight.detach().double().requires_grad_(), bias.detach().double().requires_grad_()
    y = F.batch_norm(xd, rm, rv, wd, bd, True, momentum, 1e-5)
    grads = torch.autograd.grad(y, (xd, wd, bd), g.double())
    return y, grads, rm, rv


@pytest.mark.parametrize("shape", [(8, 4, 16, 16, 16), (3, 2, 5, 6, 7), (5, 6, 8, 8, 8), (6, 4, 9, 10),
                                   (2, 2, 1, 3, 5)])
def test_fast_path_equals_batch_norm_forward_backward_and_running_stats(shape):
    gen = torch.Generator().manual_seed(sum(shape))
    layout = torch.channels_last_3d if len(shape) == 5 else torch.channels_last
    x = (3 * torch.randn(shape, generator=gen) + 1.5).contiguous(memory_format=layout).requires_grad_()
    g = torch.randn(shape, generator=gen).contiguous(memory_format=layout)
    bn = (BatchNorm3d if len(shape) == 5 else BatchNorm2d)(shape[1], momentum=0.3)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(shape[1], generator=gen) + 0.5)
        bn.bias.copy_(torch.randn(shape[1], generator=gen))
        bn.running_var.fill_(2.0)
    ref_y, ref_grads, ref_rm, ref_rv = _reference(x, g, bn.weight, bn.bias, bn.running_mean, bn.running_var,
                                                  0.3)
    assert fast_path_applies(bn, x)
    y = bn(x)
    assert y.is_contiguous(memory_format=layout)
    grads = torch.autograd.grad(y, (x, bn.weight, bn.bias), g)
    torch.testing.assert_close(y.double(), ref_y, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(bn.running_mean.double(), ref_rm, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(bn.running_var.double(), ref_rv, rtol=1e-5, atol=1e-6)
    assert int(bn.num_batches_tracked) == 1


def test_cumulative_average_when_momentum_is_none():
    x = torch.randn(4, 3, 4, 4, 4).contiguous(memory_format=torch.channels_last_3d)
    fast, plain = BatchNorm3d(3, momentum=None), nn.BatchNorm3d(3, momentum=None)
    for _ in range(3):
        fast(x * 2 + 1)
        plain((x * 2 + 1).contiguous())
    torch.testing.assert_close(fast.running_mean, plain.running_mean)
    torch.testing.assert_close(fast.running_var, plain.running_var, rtol=1e-5, atol=1e-6)
    assert int(fast.num_batches_tracked) == int(plain.num_batches_tracked) == 3


def test_other_cases_take_batch_norms_own_path():
    bn = BatchNorm3d(4)
    cl = torch.randn(2, 4, 4, 4, 4).contiguous(memory_format=torch.channels_last_3d)
    assert fast_path_applies(bn, cl)
    assert not fast_path_applies(bn, cl.contiguous())  # contiguous
    assert not fast_path_applies(bn, cl.double())  # float64
    wide = BatchNorm3d(MAX_CHANNELS + 1)
    assert not fast_path_applies(wide, torch.randn(2, MAX_CHANNELS + 1, 4, 4, 4).contiguous(
        memory_format=torch.channels_last_3d))  # torch's kernel is faster from 8 channels
    bn.eval()
    assert not fast_path_applies(bn, cl)  # eval: running statistics, nn.BatchNorm's forward
    assert not fast_path_applies(BatchNorm3d(4, affine=False), cl)


def test_models_use_it_and_keep_their_state_dict_and_folding():
    model = build_model("[4,4,[4,4],[4,8],[8,8]]")
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm3d)]
    assert norms and all(isinstance(m, BatchNorm3d) for m in norms)
    keys = set(model.state_dict())
    assert any(k.endswith("running_mean") for k in keys)
    assert any(k.endswith("num_batches_tracked") for k in keys)


def test_a_channels_last_training_step_matches_the_contiguous_one():
    """A whole Model-1 step in channels_last_3d (fast BN path for the 4-channel layers) against the same
    step on contiguous memory (torch's BN kernel): the loss, every gradient and the running statistics."""
    from naslung.losses import build_criterion

    torch.manual_seed(0)
    a = build_model("[4,4,[4,4],[4,8],[8,8]]").double()
    b = build_model("[4,4,[4,4],[4,8],[8,8]]")
    b.load_state_dict(a.state_dict())
    b = b.float().to(memory_format=torch.channels_last_3d)
    crit_a, crit_b = build_criterion("asoftmax", a).double(), build_criterion("asoftmax", b)
    crit_b.load_state_dict(crit_a.state_dict())
    x = torch.randn(6, 1, 16, 16, 16, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    loss_a = crit_a(a.forward_features(x.double()), y)
    loss_b = crit_b(b.forward_features(x.contiguous(memory_format=torch.channels_last_3d)), y)
    loss_a.backward()
    loss_b.backward()
    torch.testing.assert_close(loss_b.double(), loss_a, rtol=1e-4, atol=1e-5)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pb.grad.double(), pa.grad, rtol=2e-3, atol=2e-4, msg=name)
    for (name, ba), bb in zip(a.named_buffers(), b.buffers(), strict=True):
        torch.testing.assert_close(bb.double(), ba.double(), rtol=1e-4, atol=1e-5, msg=name)
