"""One training epoch and the bookkeeping around it: steps, class weights, early stopping."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from naslung.models.fast import autocast
from naslung.train.augment import augment_crops, augment_stored, center_crop, random_crop_flip
from naslung.train.config import TrainConfig
from naslung.train.ema import ModelEMA
from naslung.train.guards import check_finite_loss
from naslung.train.inference import format_input


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimiser steps in one epoch (the last batch may be smaller)."""
    return -(-int(n_train) // int(batch_size))


def class_weights(labels: torch.Tensor) -> torch.Tensor:
    """Inverse class frequency ``n / (K n_c)`` of the training labels, K the classes present (1 if absent)."""
    counts = torch.bincount(labels.cpu(), minlength=2).double()
    present = int((counts > 0).sum())
    weights = torch.where(counts > 0, counts.sum() / (present * counts.clamp_min(1)), torch.ones_like(counts))
    return weights.float()


def amp_applies(amp: bool, device: torch.device) -> bool:
    """Whether ``TrainConfig.amp`` takes effect: on CUDA only (where :func:`naslung.models.fast.autocast`
    runs bf16 when the GPU supports it). CPU training stays float32 whatever the CPU offers."""
    return bool(amp) and device.type == "cuda"


def train_epoch(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                 images: torch.Tensor, labels: torch.Tensor, size: int, config: TrainConfig,
                 generator: torch.Generator, np_rng: np.random.Generator,
                 on_batch: Callable[[], None], scheduler: Any = None,
                 ema: ModelEMA | None = None) -> tuple[float, float]:
    """One pass over the shuffled training rows; returns mean loss and accuracy (augmented inputs).

    With :func:`amp_applies`, the forward runs under bf16 autocast; the features ``(B, F)`` are cast back
    to float32 before the loss and the head's accuracy.
    """
    model.train()
    criterion.train()
    extra = config.extra_augment()
    amp = amp_applies(config.amp, images.device)
    order = torch.from_numpy(np_rng.permutation(images.shape[0])).to(images.device)
    total_loss, correct, seen = 0.0, 0, 0
    for start in range(0, order.numel(), config.batch_size):
        idx = order[start:start + config.batch_size]
        if config.augment:
            stored = augment_stored(images[idx], extra, generator)
            x = augment_crops(random_crop_flip(stored, size, generator, max_shift=config.max_shift), extra,
                              generator)
        else:
            x = center_crop(images[idx], size)
        x = format_input(x, config.channels_last)
        y = labels[idx]
        with autocast(images.device, enabled=amp):
            features = model.forward_features(x)
        features = features.float()
        loss = criterion(features, y)
        check_finite_loss(loss, start // config.batch_size + 1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if ema is not None:
            ema.update(model)
        with torch.no_grad():
            correct += int((model.forward_head(features).argmax(1) == y).sum())
        total_loss += float(loss.detach()) * y.numel()
        seen += y.numel()
        on_batch()
    return total_loss / seen, correct / seen


def stop_early(history: list[dict[str, Any]], chosen: int, patience: int | None) -> bool:
    """True when the chosen (best validation) epoch lies ``patience`` or more epochs in the past."""
    return patience is not None and len(history) - 1 - chosen >= patience
