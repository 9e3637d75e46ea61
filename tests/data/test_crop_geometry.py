"""The axis-aligned crop path (three 1-D linear interpolations) equals the general trilinear path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from naslung.data import geometry
from naslung.data.geometry import CTVolume, Geometry, extract_crop_coverage


def _volume(rng: np.random.Generator, direction: np.ndarray) -> CTVolume:
    shape = (int(rng.integers(20, 40)), int(rng.integers(30, 50)), int(rng.integers(30, 50)))  # (z, y, x)
    array = rng.integers(-1000, 600, size=shape).astype(np.int16)
    spacing = np.array([rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.0), rng.uniform(0.7, 2.5)])
    size = (shape[2], shape[1], shape[0])
    return CTVolume(array, Geometry(origin=rng.uniform(-200, 0, 3), spacing=spacing, direction=direction,
                                    size=size), Path("synthetic.mhd"))


def _general(volume: CTVolume, center: np.ndarray, side: int, dims: int) -> tuple[np.ndarray, float]:
    """extract_crop_coverage through the map_coordinates path, whatever the direction."""
    def oblique(array, base, scale, *rest):
        return geometry._oblique_crop(array, base, np.diag(scale), *rest)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(geometry, "_axis_aligned_crop", oblique)
        return extract_crop_coverage(volume, center, side, 1.0, dims)


@pytest.mark.parametrize("direction", [np.eye(3), np.diag([-1.0, -1.0, 1.0]), np.diag([1.0, -1.0, -1.0])])
@pytest.mark.parametrize("dims", [3, 2])
def test_axis_aligned_crop_equals_the_general_path(direction: np.ndarray, dims: int) -> None:
    rng = np.random.default_rng(int(10 * np.abs(direction.diagonal() + 2).sum()) + dims)
    for _ in range(6):
        volume = _volume(rng, direction)
        g = volume.geometry
        extent = g.direction @ (np.asarray(g.size) * g.spacing)
        lo, hi = np.minimum(g.origin, g.origin + extent), np.maximum(g.origin, g.origin + extent)
        # Centres inside, across the edges and entirely outside the scan.
        centers = (rng.uniform(lo, hi), lo + rng.uniform(-8, 8, 3), hi + rng.uniform(-8, 8, 3), hi + 60.0)
        for center in centers:
            got, got_cov = extract_crop_coverage(volume, center, 17, 1.0, dims)
            want, want_cov = _general(volume, center, 17, dims)
            assert got.dtype == want.dtype == np.float32 and got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-3)
            assert got_cov == pytest.approx(want_cov, abs=1e-12)


def test_an_oblique_direction_takes_the_general_path(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    angle = 0.2
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    volume = _volume(rng, rot)
    calls = []
    monkeypatch.setattr(geometry, "_axis_aligned_crop", lambda *a: calls.append(a))
    center = volume.geometry.origin + rot @ (np.asarray(volume.geometry.size) * volume.geometry.spacing / 2)
    crop, coverage = extract_crop_coverage(volume, center, 9)
    assert not calls and crop.shape == (9, 9, 9) and coverage == 1.0
