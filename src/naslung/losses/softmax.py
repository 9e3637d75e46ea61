"""Plain softmax cross-entropy on the model's head, with the same ``(features, target)`` interface."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class SoftmaxLoss(nn.Module):
    """``criterion(features (B, F), target (B,)) -> CE(head(features), target)``.

    The head is referenced, not registered, so the model alone owns its parameters.
    """

    def __init__(self, head: nn.Module, class_weight: Tensor | None = None) -> None:
        super().__init__()
        self._head = (head,)
        self.class_weight: Tensor | None
        self.register_buffer("class_weight", None if class_weight is None else class_weight.float())

    def forward(self, features: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(self._head[0](features), target.long(), weight=self.class_weight)
