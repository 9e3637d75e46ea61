"""Exponential moving average (EMA) of a model's weights, evaluated in place of the raw weights.

``ema = d * ema + (1 - d) * w`` after every optimiser step, for every floating-point parameter and buffer
(BatchNorm running statistics included, so the averaged network stays self-consistent); integer buffers
such as ``num_batches_tracked`` are copied. The decay warms up as ``d_n = min(decay, (1 + n) / (10 + n))``
so that the first steps, when the average would mostly hold the random initialisation, weigh little.
Our choice, stated: the warm-up form is the common one for EMA of CNN weights; it makes a short search run
(a few hundred steps) usable with the same decay as a long final run.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class ModelEMA:
    """Holds ``shadow``, an eval-mode copy of ``model`` whose weights are the running average."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
        self.decay = float(decay)
        self.updates = 0
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One step of the average towards ``model``'s current weights."""
        d = self.current_decay()
        self.updates += 1
        live = model.state_dict()
        for name, avg in self.shadow.state_dict().items():
            w = live[name]
            if avg.dtype.is_floating_point:
                avg.mul_(d).add_(w.detach(), alpha=1.0 - d)
            else:
                avg.copy_(w)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay = float(state["decay"])
        self.updates = int(state["updates"])
        self.shadow.load_state_dict(state["shadow"])
