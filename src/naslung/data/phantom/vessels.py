"""Pulmonary vessels for the phantom: random trees of tapered tubes, rasterised as a soft occupancy map.

Each tree enters through a face of the volume with a radius of 0.6-2.5 mm (1.2-5 mm wide), walks in 3-6 mm
segments with a slowly wandering direction, tapers by 6 % per segment, and branches (radius x 0.7 for the
child) with probability 0.2 per segment, until it is thinner than 0.4 mm or leaves the volume.
"""

from __future__ import annotations

import numpy as np

MAX_SEGMENTS = 400


def vessel_map(shape: tuple[int, ...], spacing: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Occupancy in [0, 1], float32 ``(z, y, x)``; ``spacing`` is ``(z, y, x)`` mm."""
    out = np.zeros(shape, dtype=np.float32)
    extent = np.asarray(shape) * spacing
    segments = []
    for _ in range(int(rng.integers(3, 7))):
        segments += _tree(extent, rng, MAX_SEGMENTS - len(segments))
    for p0, p1, r0, r1 in segments:
        _draw_segment(out, spacing, p0, p1, r0, r1)
    return out


def _tree(extent: np.ndarray, rng: np.random.Generator, budget: int) -> list[tuple]:
    """Segments ``(p0, p1, r0, r1)`` in mm of one branching, tapering tree."""
    axis, side = int(rng.integers(3)), int(rng.integers(2))
    start = rng.uniform(0.0, 1.0, 3) * extent
    start[axis] = side * extent[axis]
    target = extent * rng.uniform(0.3, 0.7, 3)
    stack = [(start, _unit(target - start), float(rng.uniform(0.6, 2.5)))]
    segments: list[tuple] = []
    while stack and len(segments) < budget:
        point, direction, radius = stack.pop()
        if radius < 0.4 or np.any(point < -3.0) or np.any(point > extent + 3.0):
            continue
        direction = _unit(direction + rng.normal(0.0, 0.25, 3))
        end = point + direction * rng.uniform(3.0, 6.0)
        thinner = radius * 0.94
        segments.append((point, end, radius, thinner))
        if rng.random() < 0.2:
            stack.append((end, _unit(direction + rng.normal(0.0, 0.8, 3)), thinner * 0.7))
            thinner *= 0.9
        stack.append((end, direction, thinner))
    return segments


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


def _draw_segment(
    out: np.ndarray, spacing: np.ndarray, p0: np.ndarray, p1: np.ndarray, r0: float, r1: float
) -> None:
    """Max-composite a tapered tube with a one-voxel soft edge into ``out`` (voxel centre = index*spacing)."""
    reach = max(r0, r1) + float(spacing.max())
    lo = np.maximum(np.floor((np.minimum(p0, p1) - reach) / spacing).astype(int), 0)
    hi = np.minimum(np.ceil((np.maximum(p0, p1) + reach) / spacing).astype(int) + 1, out.shape)
    if np.any(hi <= lo):
        return
    axes = [np.arange(a, b) * s for a, b, s in zip(lo, hi, spacing, strict=True)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1)
    axis = p1 - p0
    t = np.clip(((grid - p0) @ axis) / max(float(axis @ axis), 1e-9), 0.0, 1.0)
    dist = np.linalg.norm(grid - (p0 + t[..., None] * axis), axis=-1)
    value = np.clip((r0 + t * (r1 - r0) - dist) / float(spacing.min()) + 0.5, 0.0, 1.0)
    view = out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    np.maximum(view, value.astype(np.float32), out=view)
