"""Keep freed tensor memory in the process (glibc ``mallopt``): no page fault storm in every CPU step.

A training step of these networks allocates and frees many buffers of 1-70 MB (a batch of 32 feature maps of
4-16 channels at 32^3). glibc serves blocks above its mmap threshold with fresh ``mmap`` pages and gives them
back on free, so every step touches new pages again: about 19,000 minor page faults per Model-1 step (about
75 MB of zeroed pages), and trimming returns heap tops to the kernel the same way. With the mmap threshold and
the trim threshold raised to 1 GiB, freed blocks stay in the heap and the next step reuses them: about 1,500
faults per step. Measured on this project's 2-core CPU VM, each figure from separate processes with and
without ``NASLUNG_MALLOC=default`` (so noisier than an interleaved ratio): Model-1 training steps (batch 32,
one thread; ``benchmarks/train_throughput.py``) eager 21.3 -> 23.5 samples/s and on the default path (FFT
gates, ``channels_last_3d``) 100 -> 104 on a quiet machine, 408 -> 345 ms per step on a loaded one; batched
inference (``benchmarks/inference.py``, 2 threads) eager 178 -> 281 nodules/s, the serving path 424 -> 595.

The cost is that the process keeps its peak heap until it exits (its resident size does not fall back after a
peak), which is what a training or serving process wants anyway. :func:`keep_freed_memory` is called by
training (:func:`naslung.train.engine.fit`) and by the serving path (:func:`naslung.models.fast.eval_model`),
not by data preparation, whose peak resident size is a goal of its own. It does nothing off glibc (macOS,
musl) and when ``NASLUNG_MALLOC=default`` is set; it is idempotent.
"""

from __future__ import annotations

import ctypes
import os
import platform

#: glibc's ``mallopt`` parameter numbers (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
THRESHOLD = 1 << 30
#: Set to ``default`` to leave glibc's allocator settings alone.
ENV = "NASLUNG_MALLOC"

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds to 1 GiB once per process; True when they are set."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get(ENV, "").strip().lower() == "default" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    mmap_set = bool(libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD))
    _applied = mmap_set and bool(libc.mallopt(M_TRIM_THRESHOLD, THRESHOLD))
    return _applied
