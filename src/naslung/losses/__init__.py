"""naslung.losses: ``build_criterion(loss, model, **kw)`` -> ``criterion(features, target)``."""

from __future__ import annotations

from typing import Any

from torch import nn

from naslung.losses.asoftmax import AngularSoftmaxLoss, cos_m_theta, psi
from naslung.losses.softmax import SoftmaxLoss
from naslung.options import LOSSES, check_option

__all__ = ["LOSSES", "AngularSoftmaxLoss", "SoftmaxLoss", "build_criterion", "cos_m_theta", "psi"]


def build_criterion(loss: str, model: nn.Module, **kwargs: Any) -> nn.Module:
    """Criterion over ``model.forward_features(x)``.

    ``"asoftmax"``: :class:`AngularSoftmaxLoss` on ``model.head`` (needs the angular head; keyword
    arguments ``m``, ``base``, ``gamma``, ``power``, ``lambda_min``, ``class_weight``). ``"softmax"``:
    cross-entropy on ``model.head(features)`` (keyword argument ``class_weight`` only).
    """
    check_option("loss", loss, LOSSES)
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Module):
        raise ValueError("the model has no 'head' module")
    if loss == "softmax":
        unknown = sorted(set(kwargs) - {"class_weight"})
        if unknown:
            raise ValueError(f"the softmax loss takes only class_weight, got {unknown}")
        return SoftmaxLoss(head, **kwargs)
    from naslung.models.heads.angular import AngularHead

    if not isinstance(head, AngularHead):
        raise ValueError(
            "the asoftmax loss needs head='angular' (normalised, bias-free weights), "
            f"got {type(head).__name__}"
        )
    valid = {"m", "base", "gamma", "power", "lambda_min", "class_weight"}
    unknown = sorted(set(kwargs) - valid)
    if unknown:
        raise ValueError(f"unknown asoftmax options {unknown}; valid: {', '.join(sorted(valid))}")
    return AngularSoftmaxLoss(head, **kwargs)
