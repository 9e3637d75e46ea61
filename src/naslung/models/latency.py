"""Measured latency of a model: the median of repeated, warmed-up forward passes, cached.

Never one un-warmed timing: :func:`time_forward` warms up, then times repeated forwards under
``torch.inference_mode``. :func:`measure_latency` caches per (spec, options, input size, batch, device name,
CPU instruction set, threads, torch version) in ``naslung.paths.cache_dir("latency")``; each record keeps the
1-minute load average at measurement time, and ``refresh=True`` measures again and replaces the record.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from naslung.atomic import write_json_atomic
from naslung.models.blocks.cbam import DEFAULT_SPATIAL_KERNEL
from naslung.models.machine import load_average, machine_key
from naslung.models.spec import ArchSpec, coerce_spec

#: Version 3: on CPU, CBAM's spatial gates run through the FFT (``models/blocks/fft_conv.py``), so latencies
#: cached by earlier versions (the gate as a conv module) are measured again. Version 4: the FFT gate's
#: transform length and the allocator settings (:mod:`naslung.allocator`) changed what the serving path costs.
#: Version 5: the serving path runs contiguous on CPU, one-sample 3-D convs on oneDNN
#: (:mod:`naslung.models.blocks.conv`), and eval gates keep their kernel's spectrum. Version 6: the CPU
#: serving path runs 3-D models in ``channels_last_3d`` (:func:`naslung.models.fast.serving_channels_last`).
#: Version 7: its few-channel 3^3 convs run on naslung's direct kernels (:mod:`naslung.models.kernels.conv`).
#: Version 8: those convs build no planar copy when serving and take maps from 8 wide, CBAM's serving passes
#: are vectorised and the FFT gate's mix is one fused pass. Version 9: a serving CBAM is one kernel call
#: (pooling, MLP, FFT gate and product: ``serve`` in ``cbam_cpu.cpp``). Version 10: its gate transforms each
#: depth plane in 2-D and sums the depth taps in the frequency domain (``plane_fft_gate``). Version 11: those
#: 2-D transforms are naslung's own (``kernels/plane_fft.h``), not torch's. Version 12: one sample's 4^3
#: convs run on the direct kernels, and those read channels-last weights without a copy.
LATENCY_SCHEMA = "naslung-latency/12"
#: Execution paths :func:`measure_latency` can time: the eager eval model, or the serving path
#: (:func:`naslung.models.fast.eval_model`: BN folded; ``channels_last_3d`` in 3-D).
LATENCY_PATHS: tuple[str, ...] = ("eager", "folded")


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

            channels_last = serving_channels_last(True, spatial_dims)
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
