"""Batched crop-and-flip augmentation (paper section 4.1.3) and the centre crop used for evaluation.

The paper pads 32^3 nodules to 36^3 and takes a random 32^3 crop (a shift of at most 2 voxels from the
centre), then flips along x, y and z. Our stored cubes already have side ``size + 2 * margin`` of real
context, so the random crop is taken out of that margin, by default within the paper's +-2 voxels.
Crop and flip of a whole batch is one gather with per-sample index vectors: a flip is a reversed index
vector, so no Python loop over samples is needed.

As in torchio, the random transform only draws parameters (from an explicit ``torch.Generator``) and
hands them to a deterministic twin, :func:`crop_flip`.
"""

from __future__ import annotations

import torch


def crop_flip(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, size: int) -> torch.Tensor:
    """Crop a side-``size`` window at per-sample ``offsets`` and flip the axes marked in ``flips``.

    Args:
        images: ``(B, *S)`` stored crops with ``d`` spatial axes (no channel axis).
        offsets: ``(B, d)`` integer start of the window on each axis, in ``[0, S_k - size]``.
        flips: ``(B, d)`` bool, reverse that axis of the window.
        size: side of the output window.

    Returns:
        ``(B, 1, size, ..., size)`` tensor on ``images.device``.
    """
    b, d = images.shape[0], images.ndim - 1
    device = images.device
    offsets = offsets.to(device=device, dtype=torch.long)
    flips = flips.to(device=device, dtype=torch.bool)
    base = torch.arange(size, device=device)
    index: list[torch.Tensor] = [torch.arange(b, device=device).view(b, *([1] * d))]
    for k in range(d):
        axis = torch.where(flips[:, k, None], size - 1 - base, base) + offsets[:, k, None]  # (B, size)
        shape = [b] + [1] * d
        shape[1 + k] = size
        index.append(axis.view(shape))
    return images[tuple(index)].unsqueeze(1)


def random_crop_flip(
    images: torch.Tensor, size: int, generator: torch.Generator, flip: bool = True,
    max_shift: int | None = None,
) -> torch.Tensor:
    """Random ``size`` crop out of the stored margin plus random flips on every spatial axis.

    ``images`` is ``(B, *S)``; returns ``(B, 1, size, ...)``. The window starts uniformly within
    ``max_shift`` voxels of the centred window on each axis (None: anywhere in the margin). Parameters come
    from ``generator`` (CPU), so the same generator state gives the same batch on any device.
    """
    b, d = images.shape[0], images.ndim - 1
    slack = [s - size for s in images.shape[1:]]
    if min(slack) < 0:
        raise ValueError(f"stored crops {tuple(images.shape[1:])} are smaller than the model input {size}")
    ranges = []
    for s in slack:
        lo, hi = 0, s
        if max_shift is not None:
            lo, hi = max(0, s // 2 - max_shift), min(s, s // 2 + max_shift)
        ranges.append((lo, hi))
    offsets = torch.stack([torch.randint(lo, hi + 1, (b,), generator=generator) for lo, hi in ranges], dim=1)
    flips = torch.rand((b, d), generator=generator) < 0.5
    if not flip:
        flips = torch.zeros_like(flips)  # still drawn, so the generator advances the same way
    return crop_flip(images, offsets, flips, size)


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """Centre ``size`` window of ``(B, *S)`` -> ``(B, 1, size, ...)`` (evaluation input)."""
    window = tuple(slice((s - size) // 2, (s - size) // 2 + size) for s in images.shape[1:])
    return images[(slice(None), *window)].unsqueeze(1)
