"""A-Softmax loss (SphereFace, Liu et al. 2017), NAS-Lung eq. 4, with lambda annealing.

With unit-norm class weights ``W_j`` (no bias) and ``cos(theta_j) = W_j . x / |x|``:

* non-target logits: ``|x| cos(theta_j)``;
* target logit: ``f_y = (lambda |x| cos(theta_y) + |x| psi(theta_y)) / (1 + lambda)``, where
  ``psi(theta) = (-1)^k cos(m theta) - 2k`` on ``[k pi/m, (k+1) pi/m]`` (monotone, ``psi <= cos``);
* loss: cross-entropy of those logits.

Eq. 4 writes ``cos(m theta)`` directly; SphereFace's ``psi`` makes it monotone on ``[0, pi]``, and the
lambda blend is SphereFace's training schedule, which the paper follows. ``cos(m theta)`` is computed
as a Chebyshev polynomial of ``cos(theta)``, so no ``acos`` enters the gradient (``acos`` has an
infinite derivative at ``cos = +-1``); ``k`` is piecewise constant and needs no gradient.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: SphereFace's schedule: ``lambda = max(lambda_min, base * (1 + gamma * it) ** -power)``. With
#: these values lambda falls from 1000 to its floor of 5 after about 1,650 training iterations.
DEFAULT_BASE = 1000.0
DEFAULT_GAMMA = 0.12
DEFAULT_POWER = 1.0
DEFAULT_LAMBDA_MIN = 5.0


def cos_m_theta(cos: Tensor, m: int) -> Tensor:
    """``cos(m theta)`` from ``cos(theta)`` via the Chebyshev polynomial ``T_m`` (m = 1..4)."""
    if m == 1:
        return cos
    if m == 2:
        return 2 * cos**2 - 1
    if m == 3:
        return 4 * cos**3 - 3 * cos
    if m == 4:
        return 8 * cos**4 - 8 * cos**2 + 1
    raise ValueError(f"margin m must be 1, 2, 3 or 4, got {m!r}")


def psi(cos: Tensor, m: int) -> Tensor:
    """SphereFace's monotone ``psi(theta) = (-1)^k cos(m theta) - 2k``, as a function of ``cos(theta)``."""
    with torch.no_grad():
        theta = torch.acos(cos.clamp(-1.0, 1.0))
        k = torch.floor(m * theta / math.pi).clamp(max=m - 1)  # theta = pi belongs to the last piece
        sign = 1.0 - 2.0 * torch.remainder(k, 2)  # (-1)^k
    return sign * cos_m_theta(cos, m) - 2.0 * k


class AngularSoftmaxLoss(nn.Module):
    """A-Softmax criterion: ``criterion(features (B, F), target (B,)) -> scalar``.

    Reads the class weights ``(num_classes, F)`` of the angular head it was built with (not registered
    here, so the model owns them). ``lambda_`` and ``iteration`` are buffers, so ``state_dict()``
    carries the schedule into checkpoints. Each call in training mode advances the iteration and
    anneals lambda; eval mode uses the current lambda and advances nothing.
    """

    lambda_: Tensor
    iteration: Tensor

    def __init__(
        self,
        head: nn.Module,
        m: int = 4,
        base: float = DEFAULT_BASE,
        gamma: float = DEFAULT_GAMMA,
        power: float = DEFAULT_POWER,
        lambda_min: float = DEFAULT_LAMBDA_MIN,
        class_weight: Tensor | None = None,
    ) -> None:
        super().__init__()
        weight = getattr(head, "weight", None)
        if not isinstance(weight, Tensor) or weight.dim() != 2:
            raise ValueError("A-Softmax needs a head with a 2-D 'weight' of shape (num_classes, F)")
        cos_m_theta(torch.zeros(1), m)  # validates m
        if lambda_min < 0 or base < 0:
            raise ValueError(f"lambda base and floor must be >= 0, got base={base}, lambda_min={lambda_min}")
        self._head = (head,)  # a tuple, so the head's weight is not registered twice
        self.m = int(m)
        self.base, self.gamma, self.power, self.lambda_min = (
            float(base),
            float(gamma),
            float(power),
            float(lambda_min),
        )
        self.register_buffer("lambda_", torch.tensor(max(self.lambda_min, self.base), dtype=torch.float32))
        self.register_buffer("iteration", torch.tensor(0, dtype=torch.long))
        self.class_weight: Tensor | None
        self.register_buffer("class_weight", None if class_weight is None else class_weight.float())

    @property
    def weight(self) -> Tensor:
        return self._head[0].weight

    def scheduled_lambda(self, iteration: int) -> float:
        """``max(lambda_min, base * (1 + gamma * iteration) ** -power)``."""
        return max(self.lambda_min, self.base * (1.0 + self.gamma * iteration) ** (-self.power))

    def step(self) -> None:
        """Advance the schedule by one training iteration."""
        self.iteration += 1
        self.lambda_.fill_(self.scheduled_lambda(int(self.iteration)))

    def cosine(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """``(|x| (B, 1), cos(theta) (B, num_classes))``."""
        w = F.normalize(self.weight, dim=1)
        norm = features.norm(dim=1, keepdim=True).clamp_min(1e-12)
        cos = (features @ w.t()) / norm
        return norm, cos.clamp(-1.0, 1.0)

    def margin_logits(self, features: Tensor, target: Tensor, lam: float | None = None) -> Tensor:
        """Training logits ``(B, num_classes)``: ``|x| cos(theta_j)``, target entry replaced by ``f_y``."""
        lam = float(self.lambda_) if lam is None else float(lam)
        norm, cos = self.cosine(features)
        cos_y = cos.gather(1, target.view(-1, 1))
        psi_y = psi(cos_y, self.m)
        # (lam cos + psi) / (1 + lam) written as cos + (psi - cos) / (1 + lam): exact as lam -> inf.
        f_y = norm * (cos_y + (psi_y - cos_y) / (1.0 + lam))
        logits = norm * cos
        return logits.scatter(1, target.view(-1, 1), f_y)

    def forward(self, features: Tensor, target: Tensor) -> Tensor:
        if self.training:
            self.step()
        return F.cross_entropy(self.margin_logits(features, target.long()), target.long(),
                               weight=self.class_weight)

    def extra_repr(self) -> str:
        return (
            f"m={self.m}, base={self.base}, gamma={self.gamma}, power={self.power}, "
            f"lambda_min={self.lambda_min}, iteration={int(self.iteration)}, lambda={float(self.lambda_):.4g}"
        )
