"""Davies-Bouldin index of two classes of features (paper section 4.5, eq. 12-14; Table 4).

* eq. 12, intra-class distance: ``S_i = 1/T_i * sum_j ||X_ij - mean_i||_2`` (the paper's sum index reads
  ``i``; it runs over the ``T_i`` samples ``j`` of class ``i``);
* eq. 13, inter-class distance: ``M_01 = ||mean_0 - mean_1||_2``;
* eq. 14, ``DBI = (S_0 + S_1) / M_01`` (the paper prints ``M_01 =`` on the left, a typo).

For two classes this equals ``sklearn.metrics.davies_bouldin_score`` (whose per-cluster maximum has a single
candidate). Lower is better: compact classes far apart. Class 0 is benign, class 1 malignant.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def davies_bouldin(features: np.ndarray, labels: np.ndarray, normalize: bool = False) -> dict[str, Any]:
    """``{"S0", "S1", "M01", "DBI", "n0", "n1"}`` of ``(N, F)`` features with 0/1 ``labels``.

    ``normalize=True`` scales every feature vector to unit length first (A-Softmax decides by angle, so
    this compares the two losses on the geometry their decisions use; the paper does not say which).
    Raises ``ValueError`` when a class is missing or the class means coincide (``M01 = 0``).
    """
    x = np.asarray(features, dtype=np.float64)
    if normalize and x.ndim == 2:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    y = np.asarray(labels).reshape(-1)
    if x.ndim != 2 or x.shape[0] != y.size:
        raise ValueError(f"features must be (N, F) with N = {y.size} labels, got shape {x.shape}")
    out: dict[str, Any] = {}
    means = []
    for k in (0, 1):
        xk = x[y == k]
        if xk.shape[0] == 0:
            raise ValueError(f"DBI needs both classes; no sample of class {k}")
        mean = xk.mean(axis=0)
        means.append(mean)
        out[f"S{k}"] = float(np.linalg.norm(xk - mean, axis=1).mean())  # eq. 12
        out[f"n{k}"] = int(xk.shape[0])
    m01 = float(np.linalg.norm(means[0] - means[1]))  # eq. 13
    if m01 == 0.0:
        raise ValueError("DBI is undefined: the two class means coincide (M01 = 0)")
    out["M01"] = m01
    out["DBI"] = (out["S0"] + out["S1"]) / m01  # eq. 14
    return out
