"""Fused few-channel CPU kernels, compiled on first use; torch's own ops when they cannot be.

torch runs CBAM (eq. 1-3) as a chain of one-op-at-a-time passes over the feature map: the channel gate's mean
and max, the product with ``M_c``, the channel mean and max of that product, the product with ``M_s``, and as
many again backward. With 4-8 channels each pass does little arithmetic per byte, so the chain is bound by
memory traffic (docs/performance.md). ``cbam_cpu.cpp`` does the same work in three forward and three backward
passes (:mod:`naslung.models.kernels.cbam`), and ``bn_relu_cpu.cpp`` runs a training batch norm and the ReLU
after it in two passes each way (:mod:`naslung.models.kernels.bn_relu`).

The C++ sources ship with the package; ``torch.utils.cpp_extension`` (g++ and ninja) compiles each the first
time a machine needs it, into the user cache (:func:`kernel_cache`; one build per torch version, source and
instruction set; about 10-20 s once, then every process loads the library). The instruction set is the one
torch dispatches on (``torch.backends.cpu.get_cpu_capability()``), so ``ATEN_CPU_CAPABILITY=avx2`` builds and
runs AVX2 code on an AVX-512 machine, as an AVX2 user's CPU would. They are built with OpenMP, so that their
``at::parallel_for`` loops use torch's threads (:data:`OPENMP_FLAG`).

``conv_cpu.cpp`` runs few-channel 3-D convolutions directly, in training and serving
(:mod:`naslung.models.kernels.conv`).

Switches: ``NASLUNG_FUSED=0`` turns every fused kernel off for the process (``NASLUNG_FUSED=0 naslung train
...``); :func:`naslung.models.kernels.switch.set_fused_kernels` for one model.
When the build or the load fails, one warning line says why (logger ``naslung``) and torch's ops run.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from naslung.models.machine import cpu_capability

LOG = logging.getLogger("naslung")
#: Environment switch: any of these values turns the fused kernels off.
OFF_VALUES = frozenset({"0", "off", "false", "no"})

#: g++ flags per torch CPU capability (x86-64). Other capabilities and machines build portable code.
ISA_FLAGS: dict[str, list[str]] = {
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma"],
    "AVX2": ["-mavx2", "-mfma"],
}


def fused_enabled() -> bool:
    """Whether ``NASLUNG_FUSED`` leaves the fused kernels on (the default)."""
    return os.environ.get("NASLUNG_FUSED", "1").strip().lower() not in OFF_VALUES


#: ``-fno-trapping-math``: the kernels' selects (the ReLU's mask, amax's ties) vectorise only when the
#: compiler may evaluate both sides; without it g++ 12 kept a branch per element for AVX2 (3-4x slower). It
#: changes no result: floating-point exceptions are not trapped in torch either.
BASE_FLAGS = ["-O3", "-fno-trapping-math"]
#: ``at::parallel_for`` is an inline OpenMP loop in ATen's headers: compiled without ``-fopenmp`` it runs on
#: one thread whatever ``torch.set_num_threads`` says (the kernels did until the direct-conv round). With it
#: the library needs ``libgomp.so.1``, which the loader resolves to the copy torch has already loaded, so one
#: OpenMP runtime and one thread pool serve both. Where the compiler has no OpenMP the build is retried
#: without it (serial kernels, one log line).
OPENMP_FLAG = "-fopenmp"


def _build_flags(capability: str, openmp: bool = True) -> list[str]:
    base = [*BASE_FLAGS, OPENMP_FLAG] if openmp else list(BASE_FLAGS)
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return base
    return [*base, *ISA_FLAGS.get(capability, [])]


def kernel_cache() -> Path:
    """Where the builds live: ``$NASLUNG_KERNEL_CACHE``, else ``kernels/`` in naslung's cache
    (``naslung.paths``).

    A build depends only on the source, the flags and torch, so one folder can serve every run and test."""
    override = os.environ.get("NASLUNG_KERNEL_CACHE")
    if override:
        Path(override).mkdir(parents=True, exist_ok=True)
        return Path(override)
    from naslung.paths import cache_dir

    return cache_dir("kernels")


def _put_ninja_on_path() -> None:
    """cpp_extension runs ``ninja`` from ``PATH``; the PyPI ``ninja`` package installs it beside the venv's
    Python, which is not on ``PATH`` when the venv is not activated (``.venv/bin/naslung ...``)."""
    import shutil
    import sys

    if shutil.which("ninja"):
        return
    folders = [str(Path(sys.executable).parent)]
    try:
        import ninja

        folders.insert(0, str(ninja.BIN_DIR))
    except (ImportError, AttributeError):
        pass
    os.environ["PATH"] = os.pathsep.join([*folders, os.environ.get("PATH", "")])


def _build(kernel: str, source_file: Path, flags: list[str], folder: Path, name: str) -> None:
    """Compile and load into a private folder, then rename it into place: a build killed half-way leaves no
    lock or partial library behind for the next process (torch's own build lock would wait for ever)."""
    import shutil
    import tempfile

    from torch.utils import cpp_extension

    _put_ninja_on_path()
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        LOG.info("naslung: compiling the fused %s kernels (first use on this machine, about 10-20 s)", kernel)
        ldflags = [OPENMP_FLAG] if OPENMP_FLAG in flags else []
        cpp_extension.load(name=name, sources=[str(source_file)], extra_cflags=flags, extra_ldflags=ldflags,
                           build_directory=str(work), is_python_module=False, verbose=False)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    try:
        os.replace(work, folder)
    except OSError:  # another process finished first: keep its build
        shutil.rmtree(work, ignore_errors=True)


def _build_target(kernel: str, capability: str, source: bytes, openmp: bool) -> tuple[list[str], str, Path]:
    """``(flags, name, library path)`` of one build: the name hashes the source, torch's version and the
    flags, so a change to any of them builds anew."""
    flags = _build_flags(capability, openmp)
    stamp = source + torch.__version__.encode() + " ".join(flags).encode()
    name = f"naslung_{kernel}_{capability.lower()}_{hashlib.sha256(stamp).hexdigest()[:12]}"
    return flags, name, kernel_cache() / name / f"{name}.so"


@cache
def load_ops(kernel: str) -> Any | None:
    """``torch.ops.naslung_<kernel>`` from ``<kernel>_cpu.cpp`` (built on first use), or None when the fused
    kernels are off or it cannot be built or loaded (one warning line says why)."""
    if not fused_enabled():
        return None
    capability = cpu_capability()
    source_file = Path(__file__).with_name(f"{kernel}_cpu.cpp")
    try:
        # the headers it may include (simd8.h) are part of the build: a change to one builds anew
        headers = sorted(source_file.parent.glob("*.h"))
        source = source_file.read_bytes() + b"".join(h.read_bytes() for h in headers)
        flags, name, library = _build_target(kernel, capability, source, openmp=True)
        serial_flags, serial_name, serial_library = _build_target(kernel, capability, source, openmp=False)
        no_openmp = library.parent.with_name(name + ".no-openmp")  # this compiler failed the OpenMP build
        if library.is_file():
            torch.ops.load_library(str(library))
        elif no_openmp.is_file() and serial_library.is_file():
            torch.ops.load_library(str(serial_library))
        else:  # cpp_extension.load has loaded the library it built
            try:
                _build(kernel, source_file, flags, library.parent, name)
            except Exception as exc:  # noqa: BLE001 - e.g. a compiler without OpenMP: build it serial
                LOG.info("naslung: the %s kernels did not build with OpenMP (%s); building them serial",
                         kernel, " ".join(str(exc).split())[:200])
                _build(kernel, source_file, serial_flags, serial_library.parent, serial_name)
                no_openmp.touch()
        return getattr(torch.ops, f"naslung_{kernel}")
    except Exception as exc:  # noqa: BLE001 - any build or load failure falls back, with its reason
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        LOG.warning("naslung: fused %s kernels unavailable (%s); using torch's ops", kernel, reason)
        return None


def runs_eagerly(*modules: nn.Module) -> bool:
    """Whether a fused kernel may replace these modules' forward: not while tracing, scripting, exporting to
    ONNX or compiling (they need torch's ops), and no forward hooks on them or globally (explanations capture
    the attention maps with hooks on the gates)."""
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export():
        return False
    if torch.compiler.is_compiling():
        return False
    hooks = nn.modules.module
    if hooks._global_forward_hooks or hooks._global_forward_pre_hooks:
        return False
    return not any(m._forward_hooks or m._forward_pre_hooks for m in modules)


def cbam_ops() -> Any | None:
    """The fused CBAM kernels (``cbam_cpu.cpp``), or None."""
    return load_ops("cbam")


def bn_relu_ops() -> Any | None:
    """The fused batch norm + ReLU kernels (``bn_relu_cpu.cpp``), or None."""
    return load_ops("bn_relu")


def conv_ops() -> Any | None:
    """The direct few-channel 3-D convolution kernels (``conv_cpu.cpp``), or None."""
    return load_ops("conv")
