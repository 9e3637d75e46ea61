"""Closed-form cost of every NAS-Lung network of a search space, computed from the spec alone.

Building 42k models to count their MACs would take minutes; :func:`naslung.models.cost.analytic_cost`
sums the closed-form cost each block reports (``closed_form``) over the factory's
:func:`naslung.models.factory.layer_plan`, the one place the layout is written (a test pins it to the measured
:func:`naslung.models.cost.profile`). Conventions:

- MACs count convolutions and linear layers (batch norm, ReLU, pooling and gating products are not MACs);
- activation bytes are the float32 bytes of every conv output for one sample;
- options (``attention``, ``head``, ``cbam_kernel``, ...) are those of ``build_model``.
"""

from __future__ import annotations

import numpy as np

from naslung.models.blocks.cbam import DEFAULT_REDUCTION, DEFAULT_SPATIAL_KERNEL
from naslung.models.cost import Cost, analytic_cost
from naslung.search.space import SearchSpace

__all__ = ["CBAM_KERNEL", "CBAM_REDUCTION", "COST_FIELDS", "Cost", "analytic_cost", "space_costs"]

#: CBAM defaults of :mod:`naslung.models.blocks.cbam`: reduction 4, 7^d spatial kernel (see ``cbam_kernel``).
CBAM_REDUCTION = DEFAULT_REDUCTION
CBAM_KERNEL = DEFAULT_SPATIAL_KERNEL

COST_FIELDS: tuple[str, ...] = ("macs", "activation_bytes", "params", "depth")


def space_costs(space: SearchSpace, **options: object) -> dict[str, np.ndarray]:
    """``{"macs", "activation_bytes", "params", "depth"}``: int64 arrays ``(S,)`` over the whole space."""
    costs = [analytic_cost(spec, **options) for spec in space]  # type: ignore[arg-type]
    return {name: np.array([getattr(c, name) for c in costs], dtype=np.int64) for name in COST_FIELDS}
