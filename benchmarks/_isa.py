"""``--isa native|avx2|both`` for the benchmarks: measure as an AVX2-only CPU dispatches, on any x86-64 CPU.

``ONEDNN_MAX_CPU_ISA=AVX2`` caps oneDNN's kernels (convolutions) and ``ATEN_CPU_CAPABILITY=avx2`` caps torch's
own vectorised kernels and naslung's fused kernels (:mod:`naslung.models.kernels` builds for the capability
torch reports). Both must be set before torch loads, so ``avx2`` reruns the script in a child process.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
CHOICES = ("native", "avx2", "both")


def add_isa_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--isa", choices=CHOICES, default="native",
                        help="native: this CPU's instruction set; avx2: dispatch as an AVX2-only CPU (a "
                        "child process with ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2); both: native, "
                        "then avx2")


def dispatched_isa() -> str:
    """What torch dispatches on now (``AVX512``, ``AVX2``, ...), for the benchmark's header line."""
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def run_for_isa(isa: str) -> bool:
    """Whether this process should run the benchmark itself. ``avx2`` and ``both`` start the AVX2 child here
    (after this process has run, for ``both``: call it again with ``isa="avx2"`` at the end)."""
    if isa == "native" or all(os.environ.get(k) == v for k, v in AVX2_ENV.items()):
        return True
    if isa == "both":
        return True
    argv = [a for a in sys.argv if not a.startswith("--isa")]
    if "--isa" in sys.argv:  # "--isa avx2" given as two words
        i = sys.argv.index("--isa")
        argv = sys.argv[:i] + sys.argv[i + 2:]
    print(f"--- rerunning with {' '.join(f'{k}={v}' for k, v in AVX2_ENV.items())}", flush=True)
    subprocess.run([sys.executable, *argv], env={**os.environ, **AVX2_ENV}, check=True)
    return False
