"""Inference of a trained model: malignancy probabilities of centre crops, and the metrics of a split.

Used for the validation split after every epoch, for the single look at the test fold, and by explain and
predict, so that every consumer feeds the model exactly what evaluation does. Predictions run on the serving
path, :func:`naslung.models.fast.eval_model` (batch norm folded; ``channels_last_3d`` for a 3-D run that
trains in it, :func:`naslung.models.fast.serving_channels_last`): the eval-mode
model's function up to float rounding, and what the search times.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from naslung.data.dataset import NoduleDataset
from naslung.models.fast import eval_model, serving_channels_last
from naslung.train.augment import center_crop, flip_views
from naslung.train.predictions import Predictions


@torch.no_grad()
def predict_proba(model: nn.Module, images: torch.Tensor, size: int, batch_size: int,
                  channels_last: bool = False, tta: bool = False) -> np.ndarray:
    """Malignancy probability ``softmax(logits)[:, 1]`` of centre crops; ``images`` is ``(N, *S)``.

    For the angular head the logits are ``|x| cos(theta_j)``; ``p >= 0.5`` is the argmax decision. With
    ``tta`` the probability is the mean over the crop flipped along every subset of its axes (8 views in
    3-D, 4 in 2-D).

    ``model`` (any weights: the trained ones or an EMA shadow) is left as it is; a BN-folded eval copy
    (:func:`naslung.models.fast.eval_model`) runs every view of every batch, TTA included.
    """
    dims = int(getattr(model, "spatial_dims", images.dim() - 1))
    channels_last = serving_channels_last(channels_last, dims)
    net = eval_model(model, channels_last=channels_last)
    out = []
    for start in range(0, images.shape[0], batch_size):
        crop = center_crop(images[start:start + batch_size], size)
        views = flip_views(crop) if tta else [crop]
        prob = sum(torch.softmax(net(format_input(v, channels_last)).float(), dim=1)[:, 1] for v in views)
        out.append((prob / len(views)).cpu())
    if not out:
        return np.zeros(0, dtype=np.float64)
    return torch.cat(out).double().numpy()


def channels_last_applies(channels_last: bool, dims: int) -> bool:
    """Whether the channels-last option takes effect for ``dims`` spatial axes: 3-D only.

    2-D channels_last is never used. torch 2.13.0+cpu on AVX2-only x86 (no AVX-512) corrupts the heap in
    oneDNN's 2-D channels-last backward of strided 1x1 convolutions ("double free or corruption", SIGABRT,
    or a hang). Reproduction, repeated a few hundred times::

        m = nn.Conv2d(4, 8, 1, stride=2).to(memory_format=torch.channels_last)
        x = torch.rand(16, 4, 16, 16, requires_grad=True).contiguous(memory_format=torch.channels_last)
        m(x).sum().backward()

    It does not happen with ``torch.backends.mkldnn.enabled = False``, in contiguous format, or in 3-D with
    ``channels_last_3d``; it does with ``ATEN_CPU_CAPABILITY=default``. The 2-D models are tiny (32x32
    slices), so contiguous costs little; ``tests/train/test_default_path.py`` runs hundreds of steps on the
    default path in 2-D and 3-D.
    """
    return bool(channels_last) and dims == 3


def format_input(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``x`` contiguous in the memory format the model runs in (:func:`channels_last_applies`)."""
    if channels_last_applies(channels_last, x.dim() - 2):
        return x.contiguous(memory_format=torch.channels_last_3d)
    return x.contiguous()


def metrics_of(y: np.ndarray, prob: np.ndarray) -> dict[str, Any]:
    """``binary_metrics`` of labels ``y`` at the 0.5 threshold of probabilities ``prob`` (both ``(N,)``)."""
    from naslung.metrics import binary_metrics

    return binary_metrics(y, (prob >= 0.5).astype(np.int64), prob)


def predictions_of(dataset: NoduleDataset, rows: np.ndarray, prob: np.ndarray) -> Predictions:
    """Per-nodule predictions of dataset ``rows`` with probabilities ``prob`` (same length)."""
    return Predictions(nodule_id=np.asarray(dataset.nodule_id[rows]).astype(str),
                       seriesuid=np.asarray(dataset.seriesuid[rows]).astype(str),
                       fold=np.asarray(dataset.fold[rows], dtype=np.int64),
                       label=np.asarray(dataset.labels[rows], dtype=np.int64), prob=prob)
