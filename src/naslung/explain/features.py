"""Penultimate features (the ``(B, F)`` embedding before the head) and probabilities over a dataset.

These are the features of Fig. 6 (t-SNE) and Table 4 (DBI, eq. 12-14): the output of stage 6's global
average pooling, ``model.forward_features``. Inputs are the centre ``size`` window of the stored crops,
exactly what evaluation feeds the model (:func:`naslung.train.engine.predict_proba`), through the same
serving path: the BN-folded eval copy :func:`naslung.models.fast.eval_model` (equal to the eval-mode model
within float rounding).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from naslung.data.dataset import NoduleDataset


@dataclass
class FeatureSet:
    """Features and predictions of ``N`` nodules, row-aligned with ``rows`` of the dataset.

    Attributes:
        features: ``(N, F)`` float32 penultimate features.
        prob: ``(N,)`` malignancy probability ``softmax(logits)[:, 1]``.
        labels: ``(N,)`` 0 benign / 1 malignant.
        rows: ``(N,)`` row indices into the dataset.
    """

    features: np.ndarray
    prob: np.ndarray
    labels: np.ndarray
    rows: np.ndarray


@torch.no_grad()
def extract_features(model: nn.Module, dataset: NoduleDataset, rows: np.ndarray | None = None,
                     batch_size: int = 64) -> FeatureSet:
    """Run ``model`` (eval mode, no grad) over ``dataset`` rows and keep features and probabilities.

    Args:
        model: a network with ``forward_features`` ``(B, 1, *S) -> (B, F)`` and ``forward_head``.
        dataset: crops ``(N, *S_stored)`` in [0, 1].
        rows: row indices (default: every row).
        batch_size: inference batch size.
    """
    from naslung.models.fast import eval_model
    from naslung.train.augment import center_crop

    if not hasattr(model, "forward_features"):
        raise ValueError(f"{type(model).__name__} has no forward_features; not a NAS-Lung network")
    rows = np.arange(len(dataset)) if rows is None else np.asarray(rows, dtype=np.int64)
    model = eval_model(model)
    device = next(model.parameters()).device
    feats, probs = [], []
    for start in range(0, rows.size, batch_size):
        idx = rows[start:start + batch_size]
        x = center_crop(torch.from_numpy(np.ascontiguousarray(dataset.images[idx], dtype=np.float32)),
                        dataset.size).to(device).contiguous()
        f = model.forward_features(x)
        feats.append(f.float().cpu())
        probs.append(torch.softmax(model.forward_head(f).float(), dim=1)[:, 1].cpu())
    width = int(getattr(model, "num_features", 0))
    features = torch.cat(feats).numpy() if feats else np.zeros((0, width), dtype=np.float32)
    prob = torch.cat(probs).double().numpy() if probs else np.zeros(0)
    return FeatureSet(features=features, prob=prob, labels=np.asarray(dataset.labels[rows], dtype=np.int64),
                      rows=rows)
