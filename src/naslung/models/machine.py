"""The machine a timing ran on: device name, CPU instruction set, the dispatch torch and oneDNN use, load.

Part of every latency cache key (:mod:`naslung.models.latency`) and of the benchmarks' header lines.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

#: CPU flags that decide which kernels oneDNN / the ONNX Runtime pick (part of the latency cache key).
ISA_FLAGS: tuple[str, ...] = (
    "sse4_2", "avx", "avx2", "fma", "avx_vnni", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
    "amx_tile", "amx_bf16", "asimd", "sve",
)


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


def cpu_capability() -> str:
    """The instruction set torch dispatches its CPU kernels on: ``"AVX512"``, ``"AVX2"``, ``"DEFAULT"``..."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # noqa: BLE001 - very old torch
        return "DEFAULT"


def dispatch_capped() -> bool:
    """Whether an environment variable caps the dispatch (``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``)."""
    return bool(os.environ.get("ATEN_CPU_CAPABILITY") or os.environ.get("ONEDNN_MAX_CPU_ISA")
                or os.environ.get("DNNL_MAX_CPU_ISA"))


def dispatch_isa() -> str:
    """The instruction set the CPU kernels run on, e.g. ``"AVX512"`` or ``"AVX2 (capped)"``.

    torch's own kernels follow ``torch.backends.cpu.get_cpu_capability()`` (``ATEN_CPU_CAPABILITY`` caps it)
    and oneDNN's follow ``ONEDNN_MAX_CPU_ISA``; naslung's fused kernels build for torch's capability. With
    ``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` an AVX-512 machine runs as an AVX2-only CPU does.
    """
    capability = cpu_capability()
    onednn = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    text = capability + (" (capped)" if dispatch_capped() else "")
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
        if dispatch_capped():
            isa += f" [dispatch {dispatch_isa()}]"
    return {"device": device_name(device), "isa": isa, "torch": torch.__version__}


def load_average() -> float | None:
    """The 1-minute load average (``None`` where the OS has none); recorded with every measurement."""
    try:
        return float(os.getloadavg()[0])
    except (OSError, AttributeError):
        return None
