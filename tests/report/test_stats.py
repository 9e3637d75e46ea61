"""Scan-grouped bootstrap, paired bootstrap, calibration and the phantom rule."""

from __future__ import annotations

import numpy as np
import pytest

from naslung.data.source import is_phantom
from naslung.metrics import binary_metrics
from naslung.report.stats import (
    METRICS,
    _replicates,
    bootstrap_ci,
    metric_values,
    paired_bootstrap,
    reliability,
)


def _data(seed=0, n=120):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.2, n), 0, 1)
    return y, p, np.repeat(np.arange(n // 3), 3).astype(str)


def test_metric_values_match_binary_metrics():
    y, p, _ = _data()
    ours = metric_values(y, p)
    ref = binary_metrics(y, (p >= 0.5).astype(int), p)
    for m in METRICS:
        assert ours[m] == pytest.approx(ref[m])


def test_replicates_draw_whole_scans():
    groups = np.array(["a", "a", "b", "c", "c", "c"])
    for idx in _replicates(groups, 50, seed=1):
        drawn = groups[idx]
        for g, size in (("a", 2), ("b", 1), ("c", 3)):
            assert np.sum(drawn == g) % size == 0  # a scan comes with all its nodules, or not at all


def test_grouping_widens_the_interval_for_correlated_nodules():
    y, p, _ = _data(n=60)
    # Each scan holds 10 copies of the same nodule: 6 independent units, not 60.
    y10, p10 = np.repeat(y[:6], 10), np.repeat(p[:6], 10)
    grouped = bootstrap_ci(y10, p10, np.repeat(np.arange(6), 10), 400, seed=0)["accuracy"]
    naive = bootstrap_ci(y10, p10, np.arange(60), 400, seed=0)["accuracy"]
    assert grouped["hi"] - grouped["lo"] > 1.5 * (naive["hi"] - naive["lo"])
    assert grouped["lo"] <= grouped["value"] <= grouped["hi"]


def test_paired_bootstrap():
    y, p, g = _data()
    same = paired_bootstrap(y, p, p, g, 200)
    assert all(same[m]["diff"] == 0 and same[m]["lo"] == same[m]["hi"] == 0 for m in METRICS)
    assert same["accuracy"]["p"] == 1.0
    coin = np.random.default_rng(5).random(y.size)
    better = paired_bootstrap(y, p, coin, g, 400)
    assert better["auc"]["lo"] > 0 and better["auc"]["p"] < 0.01
    with pytest.raises(ValueError, match="aligned"):
        paired_bootstrap(y, p, p[:-1], g)


def test_reliability_and_ece():
    y = np.array([1, 0, 0, 0, 0] * 4 + [1, 1, 1, 1, 0] * 4)
    p = np.array([0.2] * 20 + [0.8] * 20)
    rel = reliability(y, p, bins=10)
    assert rel["ece"] == pytest.approx(0.0, abs=1e-12)
    assert [b["n"] for b in rel["bins"]] == [0, 0, 20, 0, 0, 0, 0, 0, 20, 0]
    off = reliability(y, np.full(40, 0.9), bins=10)
    assert off["ece"] == pytest.approx(abs(0.5 - 0.9))


def test_phantom_only_from_explicit_provenance():
    assert not is_phantom(None)
    assert not is_phantom({"phantom": None, "source": "/data/phantom-like-name"})
    assert not is_phantom({"source": "phantom"})
    assert not is_phantom({"phantom": {}})
    assert is_phantom({"phantom": {"seed": 0, "disclaimer": "synthetic"}})
    assert is_phantom({"phantom": True})
