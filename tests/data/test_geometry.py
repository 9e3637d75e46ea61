"""geometry: world <-> voxel transforms (flipped and oblique directions, checked against SimpleITK)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813
from luna_synth import FLIPPED

from naslung.data.errors import DataError
from naslung.data.geometry import Geometry, index_to_world, world_to_index

ORIGIN, SPACING = (10.0, 20.0, 30.0), (0.7, 0.7, 2.5)


@pytest.mark.parametrize(("direction", "world", "index"), [
    # identity: world = origin + index * spacing
    ((1, 0, 0, 0, 1, 0, 0, 0, 1), (10 + 0.7 * 5, 20 + 0.7 * 6, 30 + 2.5 * 7), (5, 6, 7)),
    # LUNA16's flipped matrix: x and y run backwards from the origin
    (FLIPPED, (10 - 0.7 * 5, 20 - 0.7 * 6, 30 + 2.5 * 7), (5, 6, 7)),
    # z flipped too, and a fractional index
    ((-1, 0, 0, 0, 1, 0, 0, 0, -1), (10 - 0.7 * 2.5, 20 + 0.7 * 3, 30 - 2.5 * 1.5), (2.5, 3, 1.5)),
    # axes permuted: index x runs along world y, index y along world x
    ((0, 1, 0, 1, 0, 0, 0, 0, 1), (10 + 0.7 * 6, 20 + 0.7 * 5, 30 + 2.5 * 7), (5, 6, 7)),
])
def test_world_to_index_hand_computed(direction, world, index) -> None:
    np.testing.assert_allclose(world_to_index(world, ORIGIN, SPACING, direction), index, atol=1e-9)
    np.testing.assert_allclose(index_to_world(index, ORIGIN, SPACING, direction), world, atol=1e-9)
    image = sitk.Image(8, 8, 8, sitk.sitkInt16)
    image.SetOrigin(ORIGIN)
    image.SetSpacing(SPACING)
    image.SetDirection([float(v) for v in direction])
    np.testing.assert_allclose(image.TransformPhysicalPointToContinuousIndex(world), index, atol=1e-9)


def test_world_to_index_matches_simpleitk_for_oblique_directions() -> None:
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    image = sitk.Image(4, 4, 4, sitk.sitkInt16)
    image.SetOrigin(ORIGIN)
    image.SetSpacing(SPACING)
    image.SetDirection(q.ravel().tolist())
    points = rng.uniform(-50, 50, size=(5, 3))
    ours = world_to_index(points, ORIGIN, SPACING, q)  # vectorised over points
    for p, idx in zip(points, ours, strict=True):
        np.testing.assert_allclose(idx, image.TransformPhysicalPointToContinuousIndex(p.tolist()), atol=1e-9)


def test_geometry_contains_and_flipped() -> None:
    direction = np.array(FLIPPED, dtype=float).reshape(3, 3)
    g = Geometry(np.array(ORIGIN), np.array(SPACING), direction, (10, 10, 4))
    assert g.flipped
    assert g.contains(g.index_to_world([0, 0, 0])) and g.contains(g.index_to_world([9.4, 9.4, 3.4]))
    assert not g.contains(g.index_to_world([-0.6, 0, 0])) and not g.contains(g.index_to_world([0, 0, 3.6]))


@pytest.mark.parametrize(("spacing", "origin", "direction", "match"), [
    ((0.7, 0.0, 1.0), (0, 0, 0), np.eye(3), "spacing"),
    ((0.7, 0.7, np.nan), (0, 0, 0), np.eye(3), "spacing"),
    ((0.7, 0.7, 1.0), (0, np.inf, 0), np.eye(3), "origin"),
    ((0.7, 0.7, 1.0), (0, 0, 0), np.zeros((3, 3)), "singular"),
])
def test_checked_geometry_names_the_file(spacing, origin, direction, match) -> None:
    g = Geometry(np.array(origin, dtype=float), np.array(spacing), np.asarray(direction, float), (2, 2, 2))
    with pytest.raises(DataError, match=rf"^scan\.nii: .*{match}"):
        g.checked("scan.nii")
    ok = Geometry(np.zeros(3), np.ones(3), np.eye(3), (2, 2, 2))
    assert ok.checked("scan.nii") is ok
