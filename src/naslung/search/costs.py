"""Closed-form cost of a NAS-Lung network, computed from the spec alone (no model is built).

Building 42k models to count their MACs would take minutes; this walks the layers of
:mod:`naslung.models.factory` analytically instead. Per conv with kernel ``k``, ``C_in -> C_out`` and output
side ``r`` in ``d`` dimensions: ``MACs = C_in * C_out * k^d * r^d``; a linear layer costs ``in * out``.
A stride-2, padding-1 3^d conv and a stride-2 1^d conv both give side ``ceil(r / 2)``.

Conventions (equal to :func:`naslung.models.cost.count_macs` and ``activation_bytes``; a test checks):

- MACs count convolutions and linear layers (batch norm, ReLU, pooling and gating products are not MACs);
- activation bytes are the float32 bytes of every conv output for one sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from naslung.models.spec import ArchSpec, coerce_spec
from naslung.search.space import SearchSpace

#: CBAM settings of :mod:`naslung.models.blocks.cbam` (reduction 4, 7^d spatial kernel).
CBAM_REDUCTION = 4
CBAM_KERNEL = 7


COST_FIELDS: tuple[str, ...] = ("macs", "activation_bytes", "params", "depth")


@dataclass(frozen=True)
class Cost:
    """Analytic cost of one network for one sample."""

    macs: int
    activation_bytes: int
    params: int
    depth: int  # residual blocks L+M+N, a proxy for per-layer overhead (monotone under the order)


def _conv_side(side: int, stride: int) -> int:
    return -(-side // stride)


def analytic_cost(
    spec: ArchSpec | str,
    size: int = 32,
    spatial_dims: int = 3,
    attention: str = "cbam",
    head: str = "angular",
    in_channels: int = 1,
    num_classes: int = 2,
) -> Cost:
    """MACs, activation bytes and parameters of ``build_model(spec, attention, head, spatial_dims)`` on a
    ``size^d`` input."""
    spec = coerce_spec(spec)
    d = spatial_dims
    macs = acts = params = 0

    def conv(cin: int, cout: int, k: int, side: int, bias: bool = False, bn: bool = True) -> None:
        nonlocal macs, acts, params
        vol = side**d
        macs += cin * cout * k**d * vol
        acts += cout * vol
        params += cin * cout * k**d + (cout if bias else 0) + (2 * cout if bn else 0)

    def linear(fin: int, fout: int, bias: bool = True, calls: int = 1) -> None:
        nonlocal macs, params
        macs += fin * fout * calls
        params += fin * fout + (fout if bias else 0)

    def cbam(ch: int, side: int) -> None:
        if attention == "none":
            return
        hidden = max(1, ch // CBAM_REDUCTION)
        linear(ch, hidden, calls=2)  # the shared MLP runs on the avg- and on the max-pooled descriptor
        linear(hidden, ch, calls=2)
        conv(2, 1, CBAM_KERNEL, side, bias=True, bn=False)

    side = size
    c1, c2 = spec.stem
    conv(in_channels, c1, 3, side)
    conv(c1, c2, 3, side)
    cbam(c2, side)
    width = c2
    for widths in spec.stages:
        for i, out in enumerate(widths):
            stride = 2 if i == 0 else 1
            side_out = _conv_side(side, stride)
            conv(width, out, 3, side_out)
            conv(out, out, 3, side_out)
            if stride != 1 or width != out:
                conv(width, out, 1, side_out)
            width, side = out, side_out
        cbam(width, side)
    linear(width, num_classes, bias=head == "linear")
    return Cost(macs=macs, activation_bytes=4 * acts, params=params, depth=spec.depth)


def space_costs(space: SearchSpace, **options: object) -> dict[str, np.ndarray]:
    """``{"macs", "activation_bytes", "params", "depth"}``: int64 arrays ``(S,)`` over the whole space."""
    costs = [analytic_cost(spec, **options) for spec in space]  # type: ignore[arg-type]
    return {name: np.array([getattr(c, name) for c in costs], dtype=np.int64) for name in COST_FIELDS}
