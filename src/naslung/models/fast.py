"""Fast execution paths the training and prediction code can opt into (measured in ``benchmarks/``).

* :func:`bf16_supported` / :func:`autocast`: bfloat16 autocast on a CUDA GPU with bf16 or a CPU with
  native bf16 (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slower than fp32, so :func:`autocast`
  returns a no-op context. Training uses it on CUDA only (``TrainConfig.amp``,
  ``naslung.train.epoch.amp_applies``); CPU training stays float32.
* :func:`to_channels_last`: ``channels_last_3d`` for 3-D models and inputs; 2-D stays contiguous (see
  ``naslung.train.engine.channels_last_applies``: oneDNN's 2-D channels-last backward corrupts the heap on
  AVX2-only CPUs with torch 2.13).
* :func:`eval_model`: the inference path, a BN-folded eval copy (:func:`naslung.models.fuse.fold_batchnorm`),
  in ``channels_last_3d`` for 3-D when asked (:func:`serving_channels_last`: a 3-D run that trains in it, on
  CPU and GPU). Every prediction runs on it (validation and test in
  ``naslung.train.inference.predict_proba``, ``naslung predict --runtime torch``), and the search times it
  (``LatencyConfig.path = "folded"``).

On CPU, bf16 must be used together with ``channels_last_3d`` in 3-D: with contiguous tensors oneDNN reorders
every bf16 activation and the step is about half as fast as fp32 (``benchmarks/train_throughput.py``).
``benchmarks/gpu_check.py`` measures these paths on a GPU.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

from naslung.allocator import keep_freed_memory
from naslung.models.fuse import fold_batchnorm
from naslung.models.machine import cpu_isa


def bf16_supported(device: str | torch.device = "cpu") -> bool:
    """Whether bf16 autocast runs natively: a CUDA GPU with bf16, or a CPU with AVX512-BF16 or AMX-BF16."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if not torch.backends.mkldnn.is_available():
        return False
    flags = set(cpu_isa().split(","))
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def autocast(device: str | torch.device = "cpu", enabled: bool = True) -> AbstractContextManager[object]:
    """``torch.autocast(device, bfloat16)`` when ``enabled`` and :func:`bf16_supported`, else a no-op.

    Use it around the forward only; compute the loss in float32 (``features.float()``).
    """
    device = torch.device(device)
    if enabled and bf16_supported(device):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def to_channels_last(t: nn.Module | torch.Tensor, spatial_dims: int) -> nn.Module | torch.Tensor:
    """A model or a ``(B, C, D, H, W)`` tensor in ``channels_last_3d`` for 3-D; unchanged for 2-D."""
    if spatial_dims != 3:
        return t
    if isinstance(t, nn.Module):
        return t.to(memory_format=torch.channels_last_3d)
    return t.contiguous(memory_format=torch.channels_last_3d)


def serving_channels_last(channels_last: bool, spatial_dims: int) -> bool:
    """Whether the serving path (:func:`eval_model`) runs in ``channels_last_3d``: for a 3-D run that trains
    in it, on every device.

    Measured on the current code (folded model, FFT gates, 2 threads, this project's 2-core VM, 12 interleaved
    rounds, ms per nodule, contiguous vs ``channels_last_3d``). Under AVX2 dispatch, as most users' CPUs run:
    Model-1 2.30 vs 1.93 at batch 128, 2.31 vs 2.05 at batch 32, 4.64 vs 4.60 at batch 1; the 3-D default
    ``[8,8,[8,8],[16,16],[32,32]]`` 3.78 vs 3.02, 3.85 vs 3.16, 6.78 vs 6.02. On AVX-512: Model-1 2.07 vs
    2.02, 2.10 vs 2.13, 4.97 vs 5.38; the default 3.37 vs 3.10, 3.38 vs 3.15, 6.40 vs 6.32. Channels-last
    wins or ties everywhere but Model-1 at batch 1 on AVX-512 (8 % slower). Until this round the CPU path was
    contiguous, a choice measured just before the channel gate's max pooling (``blocks.cbam.spatial_max``)
    stopped reducing a channels-last map axis by axis: the likely reason the order changed.
    """
    return bool(channels_last) and spatial_dims == 3


def eval_model(model: nn.Module, channels_last: bool = False) -> nn.Module:
    """The inference path: an eval-mode, BN-folded copy of ``model`` (``channels_last_3d`` in 3-D if asked).

    Inputs ``(B, C_in, *S)`` and outputs ``(B, num_classes)`` are those of ``model``; feed it inputs in the
    same memory format (:func:`to_channels_last`) to avoid a reorder per call. Keeps freed memory in the
    process (:func:`naslung.allocator.keep_freed_memory`).
    """
    keep_freed_memory()
    folded = fold_batchnorm(model)
    if channels_last:
        folded = to_channels_last(folded, int(getattr(model, "spatial_dims", 3)))  # type: ignore[assignment]
    return folded
