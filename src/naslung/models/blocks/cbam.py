"""Convolutional Block Attention Module (CBAM, Woo et al. 2018) as written in NAS-Lung eq. 1-3.

``F' = M_c(F) * F`` then ``F'' = M_s(F') * F'`` (eq. 1), with

* ``M_c(F) = sigmoid(MLP(AvgPool(F)) + MLP(MaxPool(F)))`` (eq. 2), a shared FC-ReLU-FC MLP;
* ``M_s(F) = sigmoid(Conv([AvgPool_c(F); MaxPool_c(F)]))`` (eq. 3), pooling across channels.

The order ``"spatial-first"`` swaps the two gates (the paper's Table 3 comparison). The pools are
``mean`` / ``amax`` reductions rather than pooling layers (cheaper on small 3-D maps).

The module keeps no state between forwards. Each gate is a submodule whose output *is* its map
(``CBAM.channel`` returns ``(B, C)``, ``CBAM.spatial`` returns ``(B, 1, *S)``, both in (0, 1)), so
explanations capture the maps with forward hooks when they need them
(:func:`naslung.models.attention.attention_maps`), and training pays nothing for them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache

import torch
from torch import Tensor, nn

from naslung.models.blocks.counting import LayerCost, conv_cost, linear_cost
from naslung.models.blocks.fft_conv import fft_conv, fft_length, plane_spectrum, weight_spectrum
from naslung.models.blocks.nd import check_dims, conv_nd
from naslung.models.kernels.cbam import fused_applies, fused_cbam, served_cbam, serving_applies

#: Default MLP reduction ratio. The original CBAM uses 16, but NAS-Lung's widths are as small as 4
#: channels, so we use 4 and never fewer than 1 hidden unit (4 channels -> 1 hidden unit). With one
#: hidden unit the ReLU can be off for a whole batch; then only the second FC's bias learns until it
#: switches on again. That is the paper's MLP at this width, so we keep it rather than drop the ReLU.
DEFAULT_REDUCTION = 4
#: Default spatial-gate kernel. 7 as in the original CBAM, for every stage: with zero padding it is
#: valid on any map size (a 4^3 stage-5 map is simply covered whole), and one size keeps the
#: parameter count independent of the input size, which the model cannot know when it is built.
#: The paper does not state the size; its reference code uses 3, which costs 27 instead of 343
#: MACs per voxel in 3-D (at 32^3 the 7^3 conv is about half of Model-1's MACs).
DEFAULT_SPATIAL_KERNEL = 7
#: The spatial-gate kernels that :func:`naslung.models.build_model` accepts (``cbam_kernel``).
SPATIAL_KERNELS: tuple[int, ...] = (3, 7)

ORDERS = ("channel-first", "spatial-first")


class ChannelAttention(nn.Module):
    """Channel gate of eq. 2: ``(B, C, *S) -> (B, C)`` weights in (0, 1).

    Args:
        channels: ``C``.
        reduction: hidden width is ``max(1, C // reduction)``.
    """

    def __init__(self, channels: int, reduction: int = DEFAULT_REDUCTION) -> None:
        super().__init__()
        if reduction < 1:
            raise ValueError(f"reduction must be >= 1, got {reduction}")
        hidden = max(1, channels // reduction)
        # FC-ReLU-FC, shared between the average- and the max-pooled descriptor.
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.gate(x.mean(dim=tuple(range(2, x.dim()))), spatial_max(x))

    def gate(self, avg: Tensor, peak: Tensor) -> Tensor:
        """``M_c`` of eq. 2 from the pooled descriptors: ``(B, C), (B, C) -> (B, C)``."""
        return torch.sigmoid(self.mlp(avg) + self.mlp(peak))


def spatial_max(x: Tensor) -> Tensor:
    """``MaxPool`` of eq. 2: ``(B, C, *S) -> (B, C)``, the maximum of each channel map.

    Runs ``max(dim)`` on a view of the maps as ``(B, C, prod(S))`` (contiguous) or ``(B, prod(S), C)``
    (channels-last), not ``amax`` over the spatial axes. Forward + backward on ``(32, 4, 32, 32, 32)``,
    one thread: 3.5 ms against 23 ms for ``amax`` in ``channels_last_3d`` (its forward alone took 11 ms) and
    7.9 ms contiguous. The backward sends the gradient to the returned position, as max pooling does (the
    original CBAM's ``MaxPool``); ``amax`` would share it among tied maxima, which on a 32^3 map happens only
    for a map that is all zeros.
    """
    b, c = x.shape[:2]
    if x.is_contiguous():
        return x.reshape(b, c, -1).max(dim=2).values
    return x.movedim(1, -1).reshape(b, -1, c).max(dim=1).values  # a view for channels-last memory


class SpatialAttention(nn.Module):
    """Spatial gate of eq. 3: ``(B, C, *S) -> (B, 1, *S)`` weights in (0, 1).

    The conv has a bias and no batch norm: eq. 3 is a bare conv inside the sigmoid (the original
    CBAM code adds a BN there; the paper does not).

    ``fft`` (default True): on CPU the conv runs through :func:`naslung.models.blocks.fft_conv.fft_conv`,
    the same cross-correlation several times faster for this 2 -> 1 channel conv (measured; see that
    module). On other devices, and with ``fft=False`` (the ONNX export sets it), ``self.conv`` runs as a
    module. The parameters are ``self.conv``'s either way, so checkpoints do not depend on it.

    When no gradient is needed (eval, inference), the FFT path keeps the kernel's spectrum
    (:func:`~naslung.models.blocks.fft_conv.weight_spectrum`) with a copy of the weights it came from, and
    reuses it while the weights are equal to that copy (a comparison of ``2 k^3`` numbers): half of the gate's
    forward transforms at batch 1. Training computes it in the graph on every forward.
    """

    def __init__(self, spatial_dims: int = 3, kernel_size: int = DEFAULT_SPATIAL_KERNEL,
                 fft: bool = True) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"spatial kernel_size must be a positive odd integer, got {kernel_size}")
        self.conv = conv_nd(spatial_dims)(2, 1, kernel_size, padding=kernel_size // 2, bias=True)
        self.fft = fft
        # The FFT path's mix on the fused kernel where it can (set_fused_kernels); not state.
        self.fused = True
        # (FFT lengths, the weights they came from, their spectrum): see _spectrum. Not state: a cache.
        self._spectrum_cache: tuple[tuple[str | int, ...], Tensor, Tensor] | None = None

    def _spectrum(self, sides: Sequence[int], planes: bool = False) -> Tensor | None:
        """The kernel's spectrum for maps of ``sides`` when no gradient flows to the weights, else None.

        ``planes``: the per-plane 2-D spectra that the serving kernel takes
        (:func:`~naslung.models.blocks.fft_conv.plane_spectrum`) instead of the full one."""
        weight = self.conv.weight
        if torch.is_grad_enabled() and weight.requires_grad:
            return None
        full = tuple(fft_length(s, k) for s, k in zip(sides, weight.shape[2:], strict=True))
        key = ("planes", *full[1:]) if planes else ("full", *full)
        cached = self._spectrum_cache
        if (cached is not None and cached[0] == key and cached[1].device == weight.device
                and cached[1].shape == weight.shape and torch.equal(cached[1], weight)):
            return cached[2]
        # Made outside inference mode so that the module can still be copied and used with autograd later.
        with torch.inference_mode(False), torch.no_grad():
            spectrum = plane_spectrum(weight, full[1:]) if planes else weight_spectrum(weight, full)
            self._spectrum_cache = (key, weight.detach().clone(), spectrum)
        return self._spectrum_cache[2]

    def forward(self, x: Tensor) -> Tensor:
        return self.gate(torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1))

    def gate(self, desc: Tensor) -> Tensor:
        """``M_s`` of eq. 3 from the descriptor ``[mean_c; max_c]``: ``(B, 2, *S) -> (B, 1, *S)``."""
        if self.fft and desc.device.type == "cpu":
            filters = self._spectrum(desc.shape[2:])
            fused = getattr(self, "fused", True)  # modules pickled before the attribute existed: on
            return torch.sigmoid(fft_conv(desc, self.conv.weight, self.conv.bias, filters, fused=fused))
        return torch.sigmoid(self.conv(desc))


class CBAM(nn.Module):
    """CBAM of eq. 1: ``(B, C, *S) -> (B, C, *S)``.

    Args:
        channels: ``C``.
        spatial_dims: 2 or 3.
        reduction: channel-MLP reduction ratio.
        spatial_kernel: kernel of the spatial-gate conv.
        order: ``"channel-first"`` (paper, eq. 1) or ``"spatial-first"`` (Table 3 variant).
    """

    def __init__(
        self,
        channels: int,
        spatial_dims: int = 3,
        reduction: int = DEFAULT_REDUCTION,
        spatial_kernel: int = DEFAULT_SPATIAL_KERNEL,
        order: str = "channel-first",
    ) -> None:
        super().__init__()
        check_dims(spatial_dims)
        if order not in ORDERS:
            raise ValueError(f"unknown CBAM order {order!r}; valid: {', '.join(ORDERS)}")
        self.order = order
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(spatial_dims, spatial_kernel)
        # The fused CPU kernels where they apply (naslung.models.kernels.cbam.fused_applies); not state.
        self.fused = True

    @staticmethod
    @cache  # pure, few distinct arguments: the search costs its whole space with it
    def closed_form(channels: int, spatial_dims: int, side: int, reduction: int = DEFAULT_REDUCTION,
                    spatial_kernel: int = DEFAULT_SPATIAL_KERNEL) -> LayerCost:
        """Cost on a ``side^d`` map: the shared MLP runs twice (avg- and max-pooled descriptor), plus the
        ``2 -> 1`` spatial conv with bias and no BN (gating products are not MACs)."""
        hidden = max(1, channels // reduction)
        return (linear_cost(channels, hidden, calls=2) + linear_cost(hidden, channels, calls=2)
                + conv_cost(2, 1, spatial_kernel, side, spatial_dims, bias=True, bn=False))

    def forward(self, x: Tensor) -> Tensor:
        if self.fused and fused_applies(self, x):
            return fused_cbam(self, x)
        if self.fused and serving_applies(self, x):
            return served_cbam(self, x)
        view = (x.shape[0], x.shape[1]) + (1,) * (x.dim() - 2)
        if self.order == "channel-first":
            x = x * self.channel(x).view(view)
            return x * self.spatial(x)
        x = x * self.spatial(x)
        return x * self.channel(x).view(view)


def set_spatial_fft(model: nn.Module, on: bool | Sequence[bool]) -> list[bool]:
    """Switch the spatial gates of ``model`` to the FFT path or to their conv module, in place.

    ``on``: one setting for every gate, or one per gate in module order (what this returns: the previous
    settings, so that a later call can restore them).
    """
    gates = [m for m in model.modules() if isinstance(m, SpatialAttention)]
    settings = [on] * len(gates) if isinstance(on, bool) else list(on)
    saved = [gate.fft for gate in gates]
    for gate, fft in zip(gates, settings, strict=True):
        gate.fft = fft
    return saved


@contextmanager
def direct_spatial_conv(model: nn.Module) -> Iterator[nn.Module]:
    """Run every spatial gate of ``model`` through its conv module (not the FFT) inside the block.

    For what needs the conv as a module call: MAC counting by forward hooks
    (:func:`naslung.models.cost.profile`) and the ONNX export (which has no ``rfftn``).
    """
    saved = set_spatial_fft(model, False)
    try:
        yield model
    finally:
        set_spatial_fft(model, saved)
