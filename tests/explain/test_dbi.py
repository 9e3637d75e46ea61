"""Davies-Bouldin index per eq. 12-14 against sklearn and a hand-computed case."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import davies_bouldin_score

from naslung.explain.dbi import davies_bouldin


@pytest.mark.parametrize("seed", range(5))
def test_equals_sklearn_for_two_classes(seed):
    rng = np.random.default_rng(seed)
    n, f = 40 + seed * 7, 3 + seed
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    x = rng.normal(size=(n, f)) * rng.uniform(0.5, 2, f) + y[:, None] * rng.normal(size=f)
    ours = davies_bouldin(x, y)
    assert ours["DBI"] == pytest.approx(davies_bouldin_score(x, y), rel=1e-10)
    assert ours["n0"] + ours["n1"] == n
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    unit = davies_bouldin(x, y, normalize=True)
    assert unit["DBI"] == pytest.approx(davies_bouldin_score(xn, y), rel=1e-10)


def test_hand_computed():
    # class 0 around (0, 0) at distance 1, class 1 around (4, 0) at distance 2 (eq. 12); M01 = 4 (eq. 13).
    x = np.array([[1, 0], [-1, 0], [4, 2], [4, -2]], dtype=float)
    y = np.array([0, 0, 1, 1])
    out = davies_bouldin(x, y)
    assert (out["S0"], out["S1"], out["M01"]) == (1.0, 2.0, 4.0)
    assert out["DBI"] == 0.75  # eq. 14: (1 + 2) / 4


def test_undefined_cases_raise():
    with pytest.raises(ValueError, match="both classes"):
        davies_bouldin(np.ones((3, 2)), np.zeros(3))
    with pytest.raises(ValueError, match="coincide"):
        davies_bouldin(np.array([[1.0, 0], [-1, 0], [0, 1], [0, -1]]), np.array([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="features must be"):
        davies_bouldin(np.ones((3, 2)), np.array([0, 1]))


def test_tsne_of_collapsed_features_does_not_crash():
    """Identical feature rows (a collapsed model) once overflowed sklearn's quad tree: a segfault."""
    import numpy as np

    from naslung.explain.tsne import embed

    y = embed(np.zeros((40, 8)))
    assert y.shape == (40, 2) and np.isfinite(y).all()
    with pytest.raises(ValueError, match="NaN"):
        embed(np.full((10, 4), np.nan))
