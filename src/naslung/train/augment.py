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

from dataclasses import dataclass

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


# --- CT-aware augmentation beyond the paper (issue: a recipe that beats size) ---------------------------
#
# Each transform follows the same pattern as crop+flip: ``draw_*`` takes parameters from the seeded CPU
# generator, and a deterministic twin applies them to a whole batch without a Python loop over samples
# (loops run over the few distinct parameter values only). Inputs are model-ready ``(B, 1, *S)`` tensors
# in window units (0 = window low, 1 = window high).


@dataclass(frozen=True)
class ExtraAugment:
    """Which extra transforms a run uses (``TrainConfig`` fields of the same names).

    Attributes:
        rot90: random multiples of 90 degrees in the axial plane (the last two axes, y and x).
        permute_axes: random axis permutation (3-D only; the crops are resampled to isotropic 1 mm).
        affine_deg: random in-plane rotation in ``[-deg, deg]`` degrees (0: off), applied to the stored cube
            before the crop, so the corners come from real context.
        affine_scale: random isotropic zoom in ``[1 - s, 1 + s]`` (0: off), with the rotation.
        intensity: HU gain and offset jitter: ``x * (1 + g) + o`` with ``g, o ~ U(-a, a)`` in window units
            (``a = 0.05`` on the default 1,400 HU window is +-5 % gain and +-70 HU offset).
        noise_std: Gaussian noise std in window units (0.02 is 28 HU, below the phantom's 20-60 HU noise).
    """

    rot90: bool = False
    permute_axes: bool = False
    affine_deg: float = 0.0
    affine_scale: float = 0.0
    intensity: float = 0.0
    noise_std: float = 0.0

    @property
    def active(self) -> bool:
        return (self.rot90 or self.permute_axes or self.affine_deg > 0 or self.affine_scale > 0
                or self.intensity > 0 or self.noise_std > 0)


def rotate90(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Rotate each sample of ``(B, C, ..., H, W)`` by ``k[b] * 90`` degrees in the (H, W) plane."""
    out = x.clone()
    for turns in range(1, 4):
        rows = (k % 4 == turns).nonzero().flatten()
        if rows.numel():
            out[rows] = torch.rot90(x[rows], turns, dims=(-2, -1))
    return out


#: The six orders of the three spatial axes of a 3-D batch.
PERMUTATIONS_3D = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))


def permute_axes(x: torch.Tensor, perm_id: torch.Tensor) -> torch.Tensor:
    """Permute the spatial axes of each sample of ``(B, C, D, H, W)`` by ``PERMUTATIONS_3D[perm_id[b]]``."""
    if x.dim() != 5:
        raise ValueError("axis permutation needs a 3-D batch (B, C, D, H, W) with a cubic crop")
    out = x.clone()
    for pid in range(1, len(PERMUTATIONS_3D)):
        rows = (perm_id == pid).nonzero().flatten()
        if rows.numel():
            order = (0, 1, *(2 + a for a in PERMUTATIONS_3D[pid]))
            out[rows] = x[rows].permute(order)
    return out


def affine(images: torch.Tensor, angle_deg: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """In-plane rotation by ``angle_deg[b]`` and isotropic zoom ``scale[b]`` of stored crops ``(B, *S)``.

    Trilinear (bilinear in 2-D) resampling about the cube centre with border padding; returns ``(B, *S)``.
    A zoom > 1 magnifies (the sampling grid shrinks by ``1 / scale``).
    """
    b, d = images.shape[0], images.ndim - 1
    theta = torch.deg2rad(angle_deg.to(torch.float32))
    cos, sin = torch.cos(theta) / scale, torch.sin(theta) / scale
    mat = torch.zeros(b, d, d + 1, dtype=torch.float32)
    # affine_grid orders output coordinates (x, y[, z]); the axial plane is (x, y).
    mat[:, 0, 0], mat[:, 0, 1], mat[:, 1, 0], mat[:, 1, 1] = cos, -sin, sin, cos
    if d == 3:
        mat[:, 2, 2] = 1.0 / scale
    x = images.unsqueeze(1).to(torch.float32)
    grid = torch.nn.functional.affine_grid(mat.to(x.device), list(x.shape), align_corners=False)
    out = torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border",
                                          align_corners=False)
    return out.squeeze(1).to(images.dtype)


def intensity(x: torch.Tensor, gain: torch.Tensor, offset: torch.Tensor,
              noise: torch.Tensor | None) -> torch.Tensor:
    """``x * (1 + gain[b]) + offset[b] (+ noise)`` on ``(B, C, *S)``; ``noise`` has ``x``'s shape."""
    view = (-1,) + (1,) * (x.dim() - 1)
    out = x * (1.0 + gain.to(x).view(view)) + offset.to(x).view(view)
    return out + noise.to(x) if noise is not None else out


def augment_stored(images: torch.Tensor, extra: ExtraAugment, generator: torch.Generator) -> torch.Tensor:
    """The transforms that act on stored cubes ``(B, *S)`` before the crop: rotation and zoom."""
    if extra.affine_deg <= 0 and extra.affine_scale <= 0:
        return images
    b = images.shape[0]
    angle = (torch.rand(b, generator=generator) * 2 - 1) * extra.affine_deg
    scale = 1.0 + (torch.rand(b, generator=generator) * 2 - 1) * extra.affine_scale
    return affine(images, angle, scale)


def augment_crops(x: torch.Tensor, extra: ExtraAugment, generator: torch.Generator) -> torch.Tensor:
    """The transforms that act on model-ready crops ``(B, 1, *S)`` after crop+flip.

    Parameters are drawn for every enabled transform in a fixed order, on CPU, so the same generator state
    gives the same batch on any device.
    """
    b, d = x.shape[0], x.dim() - 2
    if extra.rot90:
        x = rotate90(x, torch.randint(0, 4, (b,), generator=generator).to(x.device))
    if extra.permute_axes and d == 3:
        x = permute_axes(x, torch.randint(0, len(PERMUTATIONS_3D), (b,), generator=generator).to(x.device))
    if extra.intensity > 0 or extra.noise_std > 0:
        a = extra.intensity
        gain = (torch.rand(b, generator=generator) * 2 - 1) * a
        offset = (torch.rand(b, generator=generator) * 2 - 1) * a
        noise = None
        if extra.noise_std > 0:
            noise = torch.randn(x.shape, generator=generator) * extra.noise_std
        x = intensity(x, gain, offset, noise)
    return x


def flip_views(x: torch.Tensor) -> list[torch.Tensor]:
    """Test-time views of ``(B, C, *S)``: the identity and a flip of every non-empty subset of axes."""
    d = x.dim() - 2
    views = []
    for mask in range(1 << d):
        axes = [2 + k for k in range(d) if mask >> k & 1]
        views.append(torch.flip(x, axes) if axes else x)
    return views
