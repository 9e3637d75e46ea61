"""Cost of a model: parameters, multiply-accumulates and activation bytes (measured latency:
:mod:`naslung.models.latency`; the machine it ran on: :mod:`naslung.models.machine`).

What :func:`count_macs` counts: the multiply-accumulates of every convolution (``C_in/groups * k^d``
per output element), every ``nn.Linear`` and the angular head (``in_features`` per output element).
That includes the CBAM channel MLP and spatial conv, which are layers. Excluded: batch norm,
activations, pooling/mean/amax reductions, the CBAM elementwise gates and biases; on these small
networks they are memory traffic rather than arithmetic, which :func:`activation_bytes` tracks.

:func:`analytic_cost` gives the same MACs, activation bytes and parameters in closed form from the spec
alone (no model is built; the search walks 42k specs with it); a test pins it to :func:`profile`.

"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from naslung.models.blocks.cbam import DEFAULT_SPATIAL_KERNEL, direct_spatial_conv
from naslung.models.heads.angular import AngularHead
from naslung.models.spec import ArchSpec, coerce_spec


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def layer_macs(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> int:
    """The multiply-accumulates :func:`count_macs` counts for one call of ``module`` (0 for a layer it does
    not count), from a forward hook's arguments."""
    if isinstance(module, nn.modules.conv._ConvNd):
        k = 1
        for s in module.kernel_size:
            k *= s
        return output.numel() * (module.in_channels // module.groups) * k
    if isinstance(module, (nn.Linear, AngularHead)):
        return output.numel() * inputs[0].shape[-1]
    return 0


def profile(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """``{"params", "macs", "activation_bytes"}`` from one eval-mode forward of zeros.

    Args:
        input_shape: full input shape including the batch, e.g. ``(1, 1, 32, 32, 32)``; MACs and
            bytes are totals for that batch. The model's train/eval mode is restored afterwards.
    """
    shape = tuple(int(s) for s in input_shape)
    dims = getattr(model, "spatial_dims", None)
    if dims is not None and len(shape) != dims + 2:
        raise ValueError(f"input_shape must be (B, C, {'D, ' if dims == 3 else ''}H, W), got {shape}")
    totals = {"macs": 0, "activation_bytes": 0}

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        totals["macs"] += layer_macs(module, inputs, output)
        if isinstance(module, nn.modules.conv._ConvNd):
            totals["activation_bytes"] += output.numel() * output.element_size()

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear, AngularHead))
    ]
    was_training = model.training
    param = next(model.parameters(), None)
    x = torch.zeros(shape, device=param.device if param is not None else "cpu")
    try:
        model.eval()
        with torch.inference_mode(), direct_spatial_conv(model):  # the gate conv as a module call: hooked
            model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return {"params": count_parameters(model), **totals}


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Conv + linear multiply-accumulates for one forward of ``input_shape`` (batch included)."""
    return profile(model, input_shape)["macs"]


def activation_bytes(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Sum of the byte sizes of every conv layer's output for ``input_shape`` (batch included)."""
    return profile(model, input_shape)["activation_bytes"]


# ---------------------------------------------------------------------------------------- closed form
@dataclass(frozen=True)
class Cost:
    """Analytic cost of one network for one sample."""

    macs: int
    activation_bytes: int
    params: int
    depth: int  # residual blocks L+M+N, a proxy for per-layer overhead (monotone under the order)


def analytic_cost(
    spec: ArchSpec | str,
    size: int = 32,
    spatial_dims: int = 3,
    attention: str = "cbam",
    head: str = "angular",
    in_channels: int = 1,
    num_classes: int = 2,
    cbam_kernel: int = DEFAULT_SPATIAL_KERNEL,
) -> Cost:
    """MACs, activation bytes and parameters of ``build_model(spec, ...)`` on one ``size^d`` input.

    The closed form of :func:`profile` (same conventions; a test checks they agree). Per conv with kernel
    ``k``, ``C_in -> C_out`` and output side ``r`` in ``d`` dimensions: ``MACs = C_in * C_out * k^d * r^d``;
    a linear layer costs ``in * out``. A stride-2, padding-1 3^d conv and a stride-2 1^d conv both give
    side ``ceil(r / 2)``. Activation bytes are the float32 bytes of every conv output.
    """
    from naslung.models.blocks.cbam import CBAM
    from naslung.models.blocks.counting import LayerCost, conv_side, linear_cost
    from naslung.models.blocks.residual import ConvBNReLU, ResidualBlock
    from naslung.models.factory import layer_plan

    spec = coerce_spec(spec)
    d, side, total = spatial_dims, size, LayerCost()
    plan = layer_plan(spec, in_channels, attention)
    for layer in plan:
        if layer.kind == "conv":
            total = total + ConvBNReLU.closed_form(layer.in_ch, layer.out_ch, d, side)
        elif layer.kind == "residual":
            total = total + ResidualBlock.closed_form(layer.in_ch, layer.out_ch, d, side, layer.stride)
            side = conv_side(side, layer.stride)
        else:
            total = total + CBAM.closed_form(layer.in_ch, d, side, spatial_kernel=cbam_kernel)
    width = plan[-1].out_ch
    head_cost = (AngularHead.closed_form(width, num_classes) if head == "angular"
                 else linear_cost(width, num_classes, bias=True))
    total = total + head_cost
    return Cost(macs=total.macs, activation_bytes=4 * total.activations, params=total.params,
                depth=spec.depth)


#: Copies of the parameters a training run holds (weights, gradients, two Adam moments, EMA, best state).
TRAIN_PARAM_COPIES = 6
#: Bytes kept per conv-output byte through a training step (the output, BN and ReLU results kept for the
#: backward, and their gradients); a measured 3-4x on Model-1 and mid-size models, rounded up.
TRAIN_ACTIVATION_FACTOR = 4


def memory_estimate(cost: Cost, batch_size: int, eval_batch_size: int = 0, train: bool = True) -> int:
    """Bytes a model of ``cost`` needs at its peak: training steps of ``batch_size`` (parameters in
    :data:`TRAIN_PARAM_COPIES` copies) or, with ``train=False``, forwards of ``batch_size``; and forwards
    of ``eval_batch_size``. A floor, not a bound: the allocator and the framework add to it."""
    params = 4 * cost.params * (TRAIN_PARAM_COPIES if train else 2)
    step = cost.activation_bytes * batch_size * (TRAIN_ACTIVATION_FACTOR if train else 2)
    evaluation = cost.activation_bytes * eval_batch_size * 2
    return int(params + max(step, evaluation))


def check_memory(cost: Cost, what: str, batch_size: int, eval_batch_size: int = 0, train: bool = True,
                 available: int | None = None) -> None:
    """Refuse (``ValueError`` starting with ``what``) a model whose :func:`memory_estimate` exceeds the
    memory available now; no check where that is unknown."""
    from naslung.data.prepare_guards import _human, available_memory

    available = available_memory() if available is None else available
    need = memory_estimate(cost, batch_size, eval_batch_size, train)
    if available and need > available:
        doing = "training" if train else "running"
        raise ValueError(f"{what}: {doing} it needs about {_human(need)} of memory ({cost.params:,} "
                         f"parameters, {_human(cost.activation_bytes)} of activations per sample, batch "
                         f"{batch_size}), more than the {_human(available)} available; choose a smaller "
                         f"architecture or batch")
