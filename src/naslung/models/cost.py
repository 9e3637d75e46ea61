"""Cost of a model: parameters, multiply-accumulates, activation bytes, and measured latency.

What :func:`count_macs` counts: the multiply-accumulates of every convolution (``C_in/groups * k^d``
per output element), every ``nn.Linear`` and the angular head (``in_features`` per output element).
That includes the CBAM channel MLP and spatial conv, which are layers. Excluded: batch norm,
activations, pooling/mean/amax reductions, the CBAM elementwise gates and biases; on these small
networks they are memory traffic rather than arithmetic, which :func:`activation_bytes` tracks.

:func:`analytic_cost` gives the same MACs, activation bytes and parameters in closed form from the spec
alone (no model is built; the search walks 42k specs with it); a test pins it to :func:`profile`.

Latency (never one un-warmed timing) is the median of repeated, warmed-up forward
passes under ``torch.inference_mode``, cached per (spec, options, input size, batch, device name, CPU
instruction set, threads, torch version) in ``naslung.paths.cache_dir("latency")``. Each record keeps the
1-minute load average at measurement time; ``refresh=True`` measures again and replaces the record.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from naslung.atomic import write_json_atomic
from naslung.models.blocks.cbam import DEFAULT_SPATIAL_KERNEL, direct_spatial_conv
from naslung.models.heads.angular import AngularHead
from naslung.models.spec import ArchSpec, coerce_spec

#: Version 3: on CPU, CBAM's spatial gates run through the FFT (``models/blocks/fft_conv.py``), so latencies
#: cached by earlier versions (the gate as a conv module) are measured again. Version 4: the FFT gate's
#: transform length and the allocator settings (:mod:`naslung.allocator`) changed what the serving path costs.
#: Version 5: the serving path runs contiguous on CPU, one-sample 3-D convs on oneDNN
#: (:mod:`naslung.models.blocks.conv`), and eval gates keep their kernel's spectrum.
LATENCY_SCHEMA = "naslung-latency/5"
#: Execution paths :func:`measure_latency` can time: the eager eval model, or the serving path
#: (:func:`naslung.models.fast.eval_model`: BN folded; contiguous on CPU, ``channels_last_3d`` on a GPU).
LATENCY_PATHS: tuple[str, ...] = ("eager", "folded")
#: CPU flags that decide which kernels oneDNN / the ONNX Runtime pick (part of the latency cache key).
ISA_FLAGS: tuple[str, ...] = (
    "sse4_2", "avx", "avx2", "fma", "avx_vnni", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
    "amx_tile", "amx_bf16", "asimd", "sve",
)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _layer_macs(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> int:
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
        totals["macs"] += _layer_macs(module, inputs, output)
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


# ---------------------------------------------------------------------------------------------- latency
def device_name(device: str | torch.device) -> str:
    """A readable name of the device that runs the timing: the GPU model or the CPU model."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def cpu_isa() -> str:
    """The :data:`ISA_FLAGS` this CPU has, comma-separated (``""`` when /proc/cpuinfo is unreadable)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith(("flags", "Features")):
                have = set(line.split(":", 1)[1].split())
                return ",".join(f for f in ISA_FLAGS if f in have)
    except OSError:
        pass
    return ""


def dispatch_isa() -> str:
    """The instruction set the CPU kernels run on, e.g. ``"AVX512"`` or ``"AVX2 (capped)"``.

    torch's own kernels follow ``torch.backends.cpu.get_cpu_capability()`` (``ATEN_CPU_CAPABILITY`` caps it)
    and oneDNN's follow ``ONEDNN_MAX_CPU_ISA``; naslung's fused kernels build for torch's capability. With
    ``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` an AVX-512 machine runs as an AVX2-only CPU does.
    """
    try:
        capability = str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # noqa: BLE001 - old torch
        capability = "?"
    onednn = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    capped = bool(os.environ.get("ATEN_CPU_CAPABILITY") or onednn)
    text = capability + (" (capped)" if capped else "")
    if onednn and onednn.upper() != capability.upper():
        text += f", oneDNN {onednn}"
    return text


def machine_key(device: str | torch.device) -> dict[str, str]:
    """``{"device", "isa", "torch"}``: what decides a timing besides the model (threads excepted).

    For a GPU, ``isa`` is its compute capability; for a CPU, the instruction-set flags of :func:`cpu_isa`,
    plus the capped dispatch (:func:`dispatch_isa`) when an environment variable caps it, so that
    AVX2-dispatch timings on an AVX-512 machine are kept apart from its native ones.
    """
    device = torch.device(device)
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        isa = f"sm_{major}{minor}"
    else:
        isa = cpu_isa()
        if "capped" in dispatch_isa():
            isa += f" [dispatch {dispatch_isa()}]"
    return {"device": device_name(device), "isa": isa, "torch": torch.__version__}


def load_average() -> float | None:
    """The 1-minute load average (``None`` where the OS has none); recorded with every measurement."""
    try:
        return float(os.getloadavg()[0])
    except (OSError, AttributeError):
        return None


def time_forward(model: nn.Module, x: Tensor, warmup: int = 5, repeats: int = 20) -> dict[str, float | int]:
    """Warm up, then time ``repeats`` forward passes of ``x`` (model and ``x`` on the same device).

    Returns ``median_ms`` (the figure to use), ``mean_ms``, ``min_ms``, ``max_ms``, ``p90_ms``.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    cuda = x.device.type == "cuda"
    times: list[float] = []
    model.eval()
    with torch.inference_mode():
        for i in range(warmup + repeats):
            if cuda:
                torch.cuda.synchronize(x.device)
            t0 = time.perf_counter()
            model(x)
            if cuda:
                torch.cuda.synchronize(x.device)
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1000.0)
    ordered = sorted(times)
    return {
        "median_ms": statistics.median(times),
        "mean_ms": statistics.fmean(times),
        "min_ms": ordered[0],
        "max_ms": ordered[-1],
        "p90_ms": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
    }


def latency_key(
    spec: ArchSpec | str,
    attention: str,
    head: str,
    spatial_dims: int,
    input_size: int,
    batch_size: int,
    device: str | torch.device,
    threads: int,
    cbam_kernel: int = DEFAULT_SPATIAL_KERNEL,
    path: str = "eager",
) -> dict[str, Any]:
    """The cache key of a latency measurement: the model, the input, and the machine (CPU/GPU model,
    instruction set, threads, torch version)."""
    return {
        "spec": str(coerce_spec(spec)),
        "attention": attention,
        "head": head,
        "cbam_kernel": int(cbam_kernel),
        "path": path,
        "spatial_dims": int(spatial_dims),
        "input_size": int(input_size),
        "batch_size": int(batch_size),
        **machine_key(device),
        "threads": int(threads),
    }


def _cache_file(key: dict[str, Any]) -> Path:
    from naslung.paths import cache_dir

    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    # One small file per key: parallel search workers never overwrite each other's entries.
    return cache_dir("latency") / f"{digest}.json"


def measure_latency(
    spec: ArchSpec | str,
    attention: str = "cbam",
    head: str = "angular",
    spatial_dims: int = 3,
    input_size: int = 32,
    device: str = "cpu",
    threads: int | None = None,
    batch_size: int = 1,
    warmup: int = 5,
    repeats: int = 20,
    use_cache: bool = True,
    seed: int = 0,
    cbam_kernel: int = DEFAULT_SPATIAL_KERNEL,
    refresh: bool = False,
    path: str = "eager",
) -> dict[str, Any]:
    """Median forward latency of a freshly built model on ``device``, cached.

    ``threads`` sets ``torch.set_num_threads`` for the timing and restores it afterwards (``None``:
    the current setting, which is recorded). ``use_cache=False`` neither reads nor writes the cache;
    ``refresh=True`` measures again and replaces the cached record. ``path`` is one of
    :data:`LATENCY_PATHS` (``"folded"``: the BN-folded serving path). Returns the :func:`time_forward`
    figures plus ``per_sample_ms``, ``throughput_per_s`` (samples/s at this batch size), ``warmup``,
    ``repeats``, ``load_1min`` (load average when measured), ``measured_at`` (Unix time), ``key`` and
    ``cached`` (True when read from the cache).
    """
    from naslung.models.factory import build_model

    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    if batch_size < 1 or input_size < 8:
        raise ValueError(f"need batch_size >= 1 and input_size >= 8, got {batch_size}, {input_size}")
    if path not in LATENCY_PATHS:
        raise ValueError(f"unknown latency path {path!r}; valid: {', '.join(LATENCY_PATHS)}")
    previous = torch.get_num_threads()
    n_threads = previous if threads is None else int(threads)
    key = latency_key(
        spec, attention, head, spatial_dims, input_size, batch_size, dev, n_threads, cbam_kernel, path
    )
    cache_file = _cache_file(key)
    if use_cache and not refresh and cache_file.exists():
        try:
            record = json.loads(cache_file.read_text(encoding="utf-8"))
            if record.get("schema") == LATENCY_SCHEMA and record.get("key") == key:
                return {**record["result"], "key": key, "cached": True}
        except (OSError, json.JSONDecodeError):
            pass  # a damaged entry is measured again and overwritten
    try:
        torch.set_num_threads(n_threads)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_model(
                spec, attention=attention, head=head, spatial_dims=spatial_dims, cbam_kernel=cbam_kernel
            ).to(dev)
            x = torch.randn(batch_size, 1, *([input_size] * spatial_dims)).to(dev)
        if path == "folded":
            from naslung.models.fast import eval_model, serving_channels_last, to_channels_last

            channels_last = serving_channels_last(True, spatial_dims, dev)
            model = eval_model(model, channels_last=channels_last)
            if channels_last:
                x = to_channels_last(x, spatial_dims)  # type: ignore[assignment]
        load = load_average()
        timing = time_forward(model, x, warmup=warmup, repeats=repeats)
    finally:
        torch.set_num_threads(previous)
    result: dict[str, Any] = {
        **timing,
        "per_sample_ms": timing["median_ms"] / batch_size,
        "throughput_per_s": 1000.0 * batch_size / timing["median_ms"],
        "warmup": warmup,
        "repeats": repeats,
        "load_1min": load,
        "measured_at": time.time(),
    }
    if use_cache:
        write_json_atomic(cache_file, {"schema": LATENCY_SCHEMA, "key": key, "result": result})
    return {**result, "key": key, "cached": False}
