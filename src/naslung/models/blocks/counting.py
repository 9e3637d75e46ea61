"""Closed-form cost terms that every block adds up for its own cost (one sample, no batch).

Conventions (the same as :func:`naslung.models.cost.profile`, which a test compares with): MACs count
convolutions and linear layers only (batch norm, ReLU, pooling and gating products are not MACs);
``activations`` counts the elements of every conv output; ``params`` counts every learned parameter.
"""

from __future__ import annotations

from typing import NamedTuple


class LayerCost(NamedTuple):
    """MACs, conv-output elements and parameters of one layer or block for one sample.

    A named tuple rather than a frozen dataclass: the search sums millions of these over its space, and a
    frozen dataclass's ``__init__`` made that 3x slower. ``+`` adds field by field (not tuple concatenation).
    """

    macs: int = 0
    activations: int = 0
    params: int = 0

    def __add__(self, other: tuple[int, ...]) -> LayerCost:  # type: ignore[override]
        return LayerCost(self[0] + other[0], self[1] + other[1], self[2] + other[2])


def conv_side(side: int, stride: int) -> int:
    """Output side of a ``k^d`` conv with padding ``k // 2`` (or a 1^d conv): ``ceil(side / stride)``."""
    return -(-side // stride)


def conv_cost(cin: int, cout: int, kernel: int, side_out: int, spatial_dims: int, bias: bool = False,
              bn: bool = True) -> LayerCost:
    """A ``kernel^d`` conv ``cin -> cout`` with output side ``side_out``: ``cin * cout * k^d * r^d`` MACs."""
    volume = side_out**spatial_dims
    params = cin * cout * kernel**spatial_dims + (cout if bias else 0) + (2 * cout if bn else 0)
    return LayerCost(cin * cout * kernel**spatial_dims * volume, cout * volume, params)


def linear_cost(fin: int, fout: int, bias: bool = True, calls: int = 1) -> LayerCost:
    """A linear layer ``fin -> fout`` run ``calls`` times: ``fin * fout`` MACs per call."""
    return LayerCost(fin * fout * calls, 0, fin * fout + (fout if bias else 0))
