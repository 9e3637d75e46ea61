"""Stage-2 spatial attention over the nodule (paper section 4.4, Fig. 5).

The spatial gate of CBAM (eq. 3) gives ``M_s`` of shape ``(B, 1, *S)`` in (0, 1) at the resolution of its
stage. Stage 2 has the smallest receptive field, so each value weighs a small region of the CT; it is also
at the input's resolution (stages 1-2 do not downsample), and later stages are upsampled back to it here
(trilinear in 3-D, bilinear in 2-D). Maps are captured with forward hooks at explain time
(:func:`naslung.models.attention_maps`); the model keeps no attention state.

Fig. 5 shows one axial slice: for a ``(D, H, W)`` cube (``z, y, x``, world-aligned) the central slice is
``z = D // 2`` (the nodule centre lies between ``D/2 - 1`` and ``D/2`` for even ``D``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

DEFAULT_STAGE = "stage2"


def _maps_with_hooks(model: nn.Module, x: Tensor) -> dict[str, dict[str, Tensor]]:
    """Fallback when ``naslung.models.attention_maps`` is absent: hook every spatial gate ourselves."""
    from naslung.models.blocks.cbam import CBAM

    maps: dict[str, dict[str, Tensor]] = {}
    handles = []
    modules = model.attention_modules() if hasattr(model, "attention_modules") else {
        n: m for n, m in model.named_modules() if isinstance(m, CBAM)}
    for stage, cbam in modules.items():
        def hook(_m: nn.Module, _inp: tuple[Tensor, ...], out: Tensor, stage: str = stage) -> None:
            maps.setdefault(stage, {})["spatial"] = out.detach()

        handles.append(cbam.spatial.register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return maps


def capture_maps(model: nn.Module, x: Tensor) -> dict[str, dict[str, Tensor]]:
    """``{stage: {"spatial": (B, 1, *S_stage), ...}}`` for input ``x`` ``(B, 1, *S)``."""
    try:
        from naslung.models import attention_maps
    except ImportError:
        return _maps_with_hooks(model, x)
    return attention_maps(model, x)


def upsample(maps: Tensor, size: tuple[int, ...]) -> Tensor:
    """``(B, 1, *S_stage) -> (B, *size)``: trilinear (3-D) or bilinear (2-D), clamped to [0, 1]."""
    mode = "trilinear" if maps.dim() == 5 else "bilinear"
    if tuple(maps.shape[2:]) != tuple(size):
        maps = F.interpolate(maps.float(), size=size, mode=mode, align_corners=False)
    return maps[:, 0].clamp(0.0, 1.0)


def spatial_attention(model: nn.Module, x: Tensor, stage: str = DEFAULT_STAGE) -> Tensor:
    """The ``stage`` spatial attention of ``x`` ``(B, 1, *S)``, upsampled to ``(B, *S)``, in [0, 1].

    Raises ``ValueError`` when the model has no attention at ``stage`` (e.g. ``--attention none``).
    """
    maps = capture_maps(model, x)
    if stage not in maps or "spatial" not in maps[stage]:
        have = sorted(maps) or "none"
        raise ValueError(f"model has no spatial attention at {stage} (attention stages: {have}); "
                         f"was it trained with --attention none?")
    return upsample(maps[stage]["spatial"], tuple(x.shape[2:]))


def central_slice(volume: np.ndarray) -> np.ndarray:
    """The central axial slice ``(H, W)`` of a ``(D, H, W)`` cube; a 2-D ``(H, W)`` input is returned."""
    volume = np.asarray(volume)
    return volume[volume.shape[0] // 2] if volume.ndim == 3 else volume


def display_range(attention: np.ndarray, stretch: bool = True) -> tuple[float, float]:
    """Colour range of a map: its own min..max when ``stretch`` (and not flat), else the full [0, 1]."""
    lo, hi = float(np.min(attention)), float(np.max(attention))
    return (lo, hi) if stretch and hi - lo > 1e-6 else (0.0, 1.0)


def draw_pair(axes: tuple, ct: np.ndarray, attention: np.ndarray, title: str = "",
              stretch: bool = True) -> None:
    """Fig. 5 layout on two matplotlib axes: CT slice (grey, [0, 1] window) | attention (jet).

    ``stretch``: colour the map over its own range (printed above it), since trained gates often vary
    within a narrow band; otherwise over the full [0, 1].
    """
    left, right = axes
    lo, hi = display_range(attention, stretch)
    left.imshow(ct, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    right.imshow(attention, cmap="jet", vmin=lo, vmax=hi, interpolation="nearest")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        left.set_title(title, fontsize=7, loc="left")
    right.set_title(f"{lo:.2f}-{hi:.2f}", fontsize=6, loc="right")


def save_pair_png(path: str | Path, ct: np.ndarray, attention: np.ndarray, title: str = "",
                  overlay: bool = False) -> Path:
    """One PNG: CT slice beside its attention map (``overlay``: a third panel, map over the CT)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from naslung.atomic import write_png_atomic

    n = 3 if overlay else 2
    fig, axes = plt.subplots(1, n, figsize=(2.2 * n, 2.5))
    draw_pair((axes[0], axes[1]), ct, attention, title)
    if overlay:
        axes[2].imshow(ct, cmap="gray", vmin=0.0, vmax=1.0)
        lo, hi = display_range(attention)
        axes[2].imshow(attention, cmap="jet", vmin=lo, vmax=hi, alpha=0.4)
        axes[2].set_xticks([])
        axes[2].set_yticks([])
        axes[2].set_title("overlay", fontsize=7)
    fig.tight_layout()
    return write_png_atomic(fig, path, dpi=110)
