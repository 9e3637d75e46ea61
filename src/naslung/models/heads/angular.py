"""Angular head of A-Softmax (SphereFace; NAS-Lung eq. 4): logits ``|x| cos(theta_j)``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from naslung.models.blocks.counting import LayerCost, linear_cost


class AngularHead(nn.Module):
    """Bias-free FC layer with unit-norm class weights: ``(B, F) -> (B, num_classes)``.

    ``logit_j = W_j . x / |W_j| = |x| cos(theta_j)``, the inference logits of eq. 4. The
    A-Softmax criterion reads ``weight`` (``(num_classes, F)``) to build its margin logits.
    """

    def __init__(self, in_features: int, num_classes: int = 2) -> None:
        super().__init__()
        self.in_features = in_features
        self.num_classes = num_classes
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    @staticmethod
    def closed_form(in_features: int, num_classes: int = 2) -> LayerCost:
        """Cost of the head: one bias-free ``F -> num_classes`` product."""
        return linear_cost(in_features, num_classes, bias=False)

    def normalized_weight(self) -> Tensor:
        """Rows of ``weight`` scaled to unit norm: ``(num_classes, F)``."""
        return F.normalize(self.weight, dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.normalized_weight().t()

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, num_classes={self.num_classes}, bias=False"
