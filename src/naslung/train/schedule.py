"""Schedules tied to the planned length of a run: the learning rate and A-Softmax's lambda.

Both count optimiser iterations, and both are fixed by the run's plan (``epochs * steps_per_epoch``), so a
resumed run follows exactly the same curve (the iteration count travels in the checkpoint).

* **Learning rate** (``lr_schedule``): ``"constant"`` is the paper's Adam at a fixed 2e-4. ``"cosine"`` warms
  up linearly from ``lr / 10`` over ``warmup_epochs`` and then follows a half cosine down to ``lr / 100``
  at the last planned iteration.
* **Lambda** (``lambda_schedule``): SphereFace anneals ``lambda = max(5, 1000 (1 + 0.12 it)^-1)``, which
  reaches its floor after about 1,650 iterations. A 10-epoch search run on ~500 nodules has about 140, so
  lambda ends near 56 and the margin weighs ``1 / (1 + 56)``: the search would train plain normalised
  softmax. ``"run"`` keeps SphereFace's curve but rescales ``gamma`` so lambda reaches the floor at
  ``lambda_floor_at`` (default 0.5) of the planned iterations; ``"sphereface"`` keeps the constants.
"""

from __future__ import annotations

import math

from naslung.losses.asoftmax import DEFAULT_BASE, DEFAULT_GAMMA, DEFAULT_LAMBDA_MIN, DEFAULT_POWER

LR_SCHEDULES = ("constant", "cosine")
LAMBDA_SCHEDULES = ("run", "sphereface")

#: Cosine schedule: start of the warm-up and end of the decay, as fractions of the peak learning rate.
WARMUP_START = 0.1
FINAL_LR = 0.01


def lr_factor(iteration: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the peak learning rate at 0-based ``iteration`` of ``total`` planned iterations."""
    if schedule == "constant":
        return 1.0
    if schedule != "cosine":
        raise ValueError(f"unknown lr schedule {schedule!r}; valid: {', '.join(LR_SCHEDULES)}")
    if warmup > 0 and iteration < warmup:
        return WARMUP_START + (1.0 - WARMUP_START) * iteration / warmup
    span = max(1, total - warmup - 1)
    progress = min(1.0, (iteration - warmup) / span)
    return FINAL_LR + (1.0 - FINAL_LR) * 0.5 * (1.0 + math.cos(math.pi * progress))


def lambda_gamma(total: int, floor_at: float, schedule: str, base: float = DEFAULT_BASE,
                 lambda_min: float = DEFAULT_LAMBDA_MIN, power: float = DEFAULT_POWER) -> float:
    """``gamma`` of ``lambda = max(lambda_min, base (1 + gamma it)^-power)`` for the run.

    ``"run"``: lambda reaches ``lambda_min`` at iteration ``floor_at * total``, i.e.
    ``gamma = ((base / lambda_min)^(1/power) - 1) / (floor_at * total)``. ``"sphereface"``: 0.12.
    """
    if schedule == "sphereface":
        return DEFAULT_GAMMA
    if schedule != "run":
        raise ValueError(f"unknown lambda schedule {schedule!r}; valid: {', '.join(LAMBDA_SCHEDULES)}")
    if not 0.0 < floor_at <= 1.0:
        raise ValueError(f"lambda_floor_at must lie in (0, 1], got {floor_at}")
    reach = max(1.0, floor_at * total)
    return ((base / lambda_min) ** (1.0 / power) - 1.0) / reach
