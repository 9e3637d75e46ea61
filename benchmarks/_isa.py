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
from collections.abc import Callable

AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
CHOICES = ("native", "avx2", "both")


def add_isa_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--isa", choices=CHOICES, default="native",
                        help="native: this CPU's instruction set; avx2: dispatch as an AVX2-only CPU (a "
                        "child process with ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2); both: native, "
                        "then avx2")


def run_isa(isa: str, body: Callable[[], None]) -> None:
    """Run the benchmark ``body`` as ``--isa`` asks: here (``native``, or already capped), in an AVX2 child
    process (``avx2``), or here and then in the child (``both``)."""
    capped = all(os.environ.get(k) == v for k, v in AVX2_ENV.items())
    if isa in ("native", "both") or capped:
        body()
    if isa in ("avx2", "both") and not capped:
        argv = [a for a in sys.argv if not a.startswith("--isa")]
        if "--isa" in sys.argv:  # "--isa avx2" given as two words
            i = sys.argv.index("--isa")
            argv = sys.argv[:i] + sys.argv[i + 2:]
        print(f"--- rerunning with {' '.join(f'{k}={v}' for k, v in AVX2_ENV.items())}", flush=True)
        subprocess.run([sys.executable, *argv], env={**os.environ, **AVX2_ENV}, check=True)


def kernel_benchmark_main(doc: str, measure: Callable[[argparse.Namespace], None], threads: int,
                          rounds: int) -> None:
    """The command line of a per-kernel benchmark (``--threads``, ``--rounds``, ``--isa``; ``doc`` its
    help): parses it and runs ``measure(args)`` as ``--isa`` asks."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=threads)
    parser.add_argument("--rounds", type=int, default=rounds)
    add_isa_argument(parser)
    args = parser.parse_args()
    run_isa(args.isa, lambda: measure(args))
