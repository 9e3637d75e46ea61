"""The one factory of the NAS-Lung family (paper section 3.1, Fig. 1): spec + options -> model.

Layout for ``[c1, c2, [C3...], [C4...], [C5...]]``:

* stage 1: 3^d conv-BN-ReLU, ``in_channels -> c1``; stage 2: 3^d conv-BN-ReLU, ``c1 -> c2``, then CBAM;
* stages 3-5: residual blocks of the listed widths, then CBAM. Each stage halves the resolution.
  We halve it with stride 2 in the first conv of the stage's first block, whose shortcut then becomes
  a strided 1^d projection (the paper does not say how the resolution is halved; a strided conv
  adds no layer and keeps the block of Fig. 2);
* stage 6: global average pooling -> ``(B, F)`` embedding -> head.

The input side must be divisible by 8 (three halvings).

The embedding (``embedding`` option). Read literally, Fig. 2 ends every block with a ReLU, so the pooled
embedding lies in the positive orthant. At initialisation the embeddings of all nodules then lie within
about 10-25 degrees of each other (cosine to their mean 0.90-0.99, Model-1 on phantom crops), every nodule
falls on one side of the head's angular boundary, and under A-Softmax's margin (eq. 4, m = 4) shrinking the
norm of the wrong-side embeddings can lower the loss faster than turning them: a degenerate state in which
every nodule is called benign (seen with the 3^3 CBAM kernel; docs/explanation.md, "The recipe and the
embedding"). SphereFace
puts its margin on an FC embedding with no ReLU. ``"linear"`` does the same at no cost: the network's last
residual block returns its sum before the ReLU (no new parameter or MAC; CBAM's gates are positive, so the
closing CBAM keeps the sign). ``"relu"`` is Fig. 2 as written.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from naslung.models.blocks.cbam import CBAM, DEFAULT_SPATIAL_KERNEL, SPATIAL_KERNELS
from naslung.models.blocks.nd import check_dims
from naslung.models.blocks.residual import ConvBNReLU, ResidualBlock
from naslung.models.heads.angular import AngularHead
from naslung.models.spec import ArchSpec, coerce_spec
from naslung.options import ATTENTION_ORDERS, ATTENTIONS, EMBEDDINGS, HEADS, check_option

STAGES: tuple[str, ...] = ("stage1", "stage2", "stage3", "stage4", "stage5")
ATTENTION_STAGES: tuple[str, ...] = ("stage2", "stage3", "stage4", "stage5")


class Layer(NamedTuple):
    """One block of a NAS-Lung network, in order: ``kind`` is ``"conv"`` (3^d conv-BN-ReLU), ``"residual"``
    (Fig. 2 block, ``stride`` 2 opens stages 3-5) or ``"cbam"`` (closes stages 2-5). A named tuple: the
    search plans every architecture of its space (tens of thousands) to cost them."""

    stage: str
    kind: str
    in_ch: int
    out_ch: int
    stride: int = 1


def layer_plan(spec: ArchSpec | str, in_channels: int = 1, attention: str = "cbam") -> list[Layer]:
    """The blocks of ``spec`` in order: the one place the layout above is written (the model is built from
    it, and :func:`naslung.models.cost.analytic_cost` sums the blocks' closed-form costs over it)."""
    spec = coerce_spec(spec)
    with_cbam = ATTENTION_ORDERS[check_option("attention", attention, ATTENTIONS)] is not None
    c1, c2 = spec.stem
    plan = [Layer("stage1", "conv", in_channels, c1), Layer("stage2", "conv", c1, c2)]
    plan += [Layer("stage2", "cbam", c2, c2)] if with_cbam else []
    width = c2
    for name, widths in zip(STAGES[2:], spec.stages, strict=True):
        for i, out in enumerate(widths):
            plan.append(Layer(name, "residual", width, out, stride=2 if i == 0 else 1))
            width = out
        plan += [Layer(name, "cbam", width, width)] if with_cbam else []
    return plan


class NASLungNet(nn.Module):
    """A NAS-Lung network. ``(B, C_in, *S) -> (B, num_classes)`` logits, ``S`` divisible by 8.

    Build it with :func:`build_model`. For the angular head the logits are ``|x| cos(theta_j)``.
    """

    def __init__(
        self,
        spec: ArchSpec | str | dict[str, Any],
        attention: str = "cbam",
        head: str = "angular",
        spatial_dims: int = 3,
        in_channels: int = 1,
        num_classes: int = 2,
        cbam_kernel: int = DEFAULT_SPATIAL_KERNEL,
        embedding: str = "relu",
    ) -> None:
        super().__init__()
        spec = coerce_spec(spec)
        check_option("attention", attention, ATTENTIONS)
        check_option("head", head, HEADS)
        check_option("embedding", embedding, EMBEDDINGS)
        check_dims(spatial_dims)
        if cbam_kernel not in SPATIAL_KERNELS:
            raise ValueError(
                f"unknown cbam_kernel {cbam_kernel!r}; valid: {', '.join(map(str, SPATIAL_KERNELS))}"
            )
        if in_channels < 1 or num_classes < 2:
            raise ValueError(f"need in_channels >= 1 and num_classes >= 2, got {in_channels}, {num_classes}")
        self.spec = spec
        self.spatial_dims = spatial_dims
        self._config = {
            "spec": str(spec),
            "attention": attention,
            "head": head,
            "spatial_dims": spatial_dims,
            "in_channels": in_channels,
            "num_classes": num_classes,
            "cbam_kernel": int(cbam_kernel),
            "embedding": embedding,
        }
        order = ATTENTION_ORDERS[attention] or "channel-first"
        blocks: dict[str, list[nn.Module]] = {name: [] for name in STAGES}
        plan = layer_plan(spec, in_channels, attention)
        last_residual = max(i for i, layer in enumerate(plan) if layer.kind == "residual")
        for i, layer in enumerate(plan):
            if layer.kind == "conv":
                module: nn.Module = ConvBNReLU(layer.in_ch, layer.out_ch, spatial_dims)
            elif layer.kind == "residual":
                relu_out = embedding == "relu" or i != last_residual
                module = ResidualBlock(layer.in_ch, layer.out_ch, spatial_dims, stride=layer.stride,
                                       relu_out=relu_out)
            else:
                module = CBAM(layer.in_ch, spatial_dims, spatial_kernel=cbam_kernel, order=order)
            blocks[layer.stage].append(module)
        self.stages = nn.ModuleDict({name: nn.Sequential(*mods) for name, mods in blocks.items()})
        width = plan[-1].out_ch
        self.num_features = width
        self.head: nn.Module = (
            AngularHead(width, num_classes) if head == "angular" else nn.Linear(width, num_classes)
        )

    @property
    def config(self) -> dict[str, Any]:
        """JSON-able init arguments (spec as its notation string); see :func:`model_from_config`."""
        return dict(self._config)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, C_in, *S) -> (B, F)`` embedding after global average pooling."""
        if x.dim() != self.spatial_dims + 2:
            layout = "(B, C, D, H, W)" if self.spatial_dims == 3 else "(B, C, H, W)"
            raise ValueError(f"expected a {layout} input, got shape {tuple(x.shape)}")
        if any(s % 8 for s in x.shape[2:]):
            raise ValueError(f"every spatial side must be divisible by 8, got {tuple(x.shape[2:])}")
        for stage in self.stages.values():
            x = stage(x)
        return x.mean(dim=tuple(range(2, x.dim())))

    def forward_head(self, features: Tensor) -> Tensor:
        """``(B, F) -> (B, num_classes)`` logits."""
        return self.head(features)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def attention_modules(self) -> dict[str, CBAM]:
        """``{"stage2": CBAM, ...}``: the CBAM closing each stage (empty with attention ``"none"``)."""
        out: dict[str, CBAM] = {}
        for name in ATTENTION_STAGES:
            last = self.stages[name][-1]
            if isinstance(last, CBAM):
                out[name] = last
        return out


def build_model(
    spec: ArchSpec | str | dict[str, Any],
    attention: str = "cbam",
    head: str = "angular",
    spatial_dims: int = 3,
    in_channels: int = 1,
    num_classes: int = 2,
    cbam_kernel: int = DEFAULT_SPATIAL_KERNEL,
    embedding: str = "relu",
) -> NASLungNet:
    """Build a NAS-Lung network; unknown option names raise ``ValueError`` listing the valid ones.

    ``cbam_kernel`` is the side of CBAM's spatial-gate conv (3 or 7; ignored with attention ``"none"``
    but recorded in :attr:`NASLungNet.config` all the same). ``embedding`` is ``"relu"`` (Fig. 2 as
    written) or ``"linear"`` (the last residual block without its ReLU; see the module docstring).
    """
    return NASLungNet(spec, attention, head, spatial_dims, in_channels, num_classes, cbam_kernel, embedding)


def model_from_config(config: dict[str, Any]) -> NASLungNet:
    """Rebuild a model from :attr:`NASLungNet.config` (weights are loaded separately).

    Configs written before ``cbam_kernel`` existed rebuild with the 7^d kernel they were trained with, and
    those written before ``embedding`` existed with the ReLU embedding they were trained with.
    """
    known = {"spec", "attention", "head", "spatial_dims", "in_channels", "num_classes", "cbam_kernel",
             "embedding"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"unknown model config keys {unknown}; valid: {', '.join(sorted(known))}")
    if "spec" not in config:
        raise ValueError("model config has no 'spec'")
    return build_model(**config)


def example_input(spatial_dims: int = 3, size: int = 32, batch_size: int = 1, in_channels: int = 1) -> Tensor:
    """A zero input ``(B, C, *[size] * spatial_dims)`` for shape and cost probes."""
    return torch.zeros(batch_size, in_channels, *([size] * check_dims(spatial_dims)))
