"""CBAM attention maps on demand: forward hooks on the gates, registered only while they are needed.

CBAM keeps no state (see :mod:`naslung.models.blocks.cbam`): its channel gate returns the ``(B, C)`` map and
its spatial gate the ``(B, 1, *S)`` map, both in (0, 1). Training therefore stores nothing; explanations
capture the maps here::

    maps = attention_maps(model, x)            # {"stage2": {"channel": (B, C), "spatial": (B, 1, *S)}, ...}

    with capture_attention(model) as maps:     # the same, around a forward of one's own (logits too)
        logits = model(x)

``S`` is the stage's map size: the input size at stage 2, halved at each of stages 3-5.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from naslung.models.blocks.cbam import CBAM

GATES: tuple[str, ...] = ("channel", "spatial")


def cbam_modules(model: nn.Module) -> dict[str, CBAM]:
    """``{stage_name: CBAM}``: ``model.attention_modules()`` for a NASLungNet, else every CBAM by module name.

    Empty for a model without attention.
    """
    modules = getattr(model, "attention_modules", None)
    if callable(modules):
        return dict(modules())
    return {name: m for name, m in model.named_modules() if isinstance(m, CBAM)}


@contextmanager
def capture_attention(model: nn.Module, detach: bool = True) -> Iterator[dict[str, dict[str, Tensor]]]:
    """Hook every CBAM gate of ``model`` for the duration of the ``with`` block.

    Yields a dict that each forward inside the block fills (a later forward overwrites an earlier one):
    ``{stage: {"channel": (B, C), "spatial": (B, 1, *S)}}``. With ``detach=False`` the maps stay in the
    autograd graph (for gradients with respect to a map). The hooks are removed on exit, even on error.
    """
    maps: dict[str, dict[str, Tensor]] = {}
    handles = []

    def hook_for(stage: str, gate: str):  # noqa: ANN202 - a forward hook
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            maps.setdefault(stage, {})[gate] = output.detach() if detach else output

        return hook

    try:
        for stage, cbam in cbam_modules(model).items():
            for gate in GATES:
                handles.append(getattr(cbam, gate).register_forward_hook(hook_for(stage, gate)))
        yield maps
    finally:
        for h in handles:
            h.remove()


def attention_maps(model: nn.Module, x: Tensor) -> dict[str, dict[str, Tensor]]:
    """Run ``model`` once on ``x`` in eval mode, without gradients, and return its CBAM maps.

    Args:
        model: a NAS-Lung network (or any module holding :class:`CBAM` blocks); its train/eval mode is
            restored afterwards, and nothing is left registered on it.
        x: ``(B, C_in, *S)`` input, on the model's device.

    Returns:
        ``{"stage2": {"channel": (B, C2), "spatial": (B, 1, *S)}, "stage3": {..., (B, 1, *S / 2)}, ...}``,
        detached, values in (0, 1); ``{}`` for a model without attention.
    """
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), capture_attention(model) as maps:
            model(x)
    finally:
        model.train(was_training)
    return maps
