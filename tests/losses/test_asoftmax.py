"""A-Softmax (eq. 4, SphereFace): limits, the margin, gradients at the poles, m=1, annealing."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from naslung.losses import AngularSoftmaxLoss, build_criterion, cos_m_theta, psi
from naslung.models import build_model
from naslung.models.heads import AngularHead


def _setup(m: int = 4, seed: int = 0, **kw):
    torch.manual_seed(seed)
    head = AngularHead(6, 2)
    crit = AngularSoftmaxLoss(head, m=m, **kw)
    x = torch.randn(16, 6)
    y = torch.randint(0, 2, (16,))
    return head, crit, x, y


def _plain_ce(head: AngularHead, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on |x| cos(theta_j), written independently of the criterion."""
    w = head.weight / head.weight.norm(dim=1, keepdim=True)
    return F.cross_entropy(x @ w.t(), y)


def test_psi_matches_definition():
    theta = torch.linspace(0, math.pi, 181, dtype=torch.float64)
    for m in (1, 2, 3, 4):
        got = psi(torch.cos(theta), m)
        k = torch.clamp(torch.floor(m * theta / math.pi), max=m - 1)
        want = (-1) ** k * torch.cos(m * theta) - 2 * k
        assert torch.allclose(got, want, atol=1e-9), m
        assert torch.allclose(cos_m_theta(torch.cos(theta), m), torch.cos(m * theta), atol=1e-9)
        # psi is monotone decreasing on [0, pi] and never above cos(theta)
        assert (got[1:] <= got[:-1] + 1e-12).all()
        assert (got <= torch.cos(theta) + 1e-12).all()


def test_large_lambda_equals_normalised_cross_entropy():
    head, crit, x, y = _setup(base=1e12, lambda_min=1e12)
    crit.train()
    assert torch.allclose(crit(x, y), _plain_ce(head, x, y), atol=1e-6)
    assert torch.allclose(crit.margin_logits(x, y, lam=math.inf), head(x), atol=1e-6)


def test_margin_lowers_target_logit_and_raises_loss():
    head, crit, x, y = _setup(m=4)
    logits = crit.margin_logits(x, y, lam=5.0)
    plain = head(x)
    _, cos = crit.cosine(x)
    theta_y = torch.acos(cos.gather(1, y.view(-1, 1))).squeeze(1)
    assert (theta_y > 0).all()
    rows = torch.arange(len(y))
    assert (logits[rows, y] < plain[rows, y]).all()
    # non-target logits are untouched
    other = 1 - y
    assert torch.allclose(logits[rows, other], plain[rows, other])
    crit.eval()
    crit.lambda_.fill_(5.0)
    assert crit(x, y) > _plain_ce(head, x, y) + 1e-3


@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_gradients_finite_at_the_poles(sign: float, m: int):
    head = AngularHead(4, 2)
    crit = AngularSoftmaxLoss(head, m=m).eval()
    crit.lambda_.fill_(5.0)
    # features exactly parallel (cos = 1) or antiparallel (cos = -1) to the target class weight
    x = (sign * 3.0 * head.weight[0].detach()).repeat(2, 1).requires_grad_(True)
    y = torch.zeros(2, dtype=torch.long)
    crit(x, y).backward()
    assert torch.isfinite(x.grad).all()
    assert torch.isfinite(head.weight.grad).all()


@pytest.mark.parametrize("lam", [0.0, 5.0, 100.0])
def test_m1_is_the_normalised_linear_head(lam: float):
    head, crit, x, y = _setup(m=1)
    crit.eval()
    crit.lambda_.fill_(lam)
    assert torch.allclose(crit(x, y), _plain_ce(head, x, y), atol=1e-6)


def test_lambda_annealing_and_state_dict():
    head, crit, x, y = _setup()
    assert float(crit.lambda_) == 1000.0
    crit.train()
    for _ in range(3):
        crit(x, y)
    assert int(crit.iteration) == 3
    assert float(crit.lambda_) == pytest.approx(1000.0 / (1 + 0.12 * 3))
    crit.eval()
    crit(x, y)
    assert int(crit.iteration) == 3  # eval does not advance
    state = crit.state_dict()
    assert set(state) == {"lambda_", "iteration"}  # the head's weight belongs to the model
    fresh = AngularSoftmaxLoss(head)
    fresh.load_state_dict(state)
    assert int(fresh.iteration) == 3 and float(fresh.lambda_) == float(crit.lambda_)
    assert crit.scheduled_lambda(10**6) == 5.0


def test_build_criterion_on_model():
    model = build_model("[4,4,[4],[4],[8]]", spatial_dims=2)
    x, y = torch.randn(4, 1, 16, 16), torch.tensor([0, 1, 0, 1])
    for loss, head in (("asoftmax", "angular"), ("softmax", "linear")):
        model = build_model("[4,4,[4],[4],[8]]", spatial_dims=2, head=head)
        crit = build_criterion(loss, model).train()
        out = crit(model.forward_features(x), y)
        out.backward()
        assert out.ndim == 0 and torch.isfinite(out)
        assert model.head.weight.grad is not None
        assert list(crit.parameters()) == []


def test_build_criterion_errors():
    model = build_model("[4,4,[4],[4],[8]]", spatial_dims=2)
    with pytest.raises(ValueError, match="asoftmax, softmax"):
        build_criterion("arcface", model)
    with pytest.raises(ValueError, match="head='angular'"):
        build_criterion("asoftmax", build_model("[4,4,[4],[4],[8]]", spatial_dims=2, head="linear"))
    with pytest.raises(ValueError, match="margin"):
        build_criterion("asoftmax", model, m=5)
    with pytest.raises(ValueError, match="unknown asoftmax options"):
        build_criterion("asoftmax", model, margin=4)
