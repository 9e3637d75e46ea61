"""Study prediction throughput (issue 24): scans per minute and candidates per second of
``naslung predict --model NAME --scans DIR --candidates CSV --out CSV`` with a bundled model, and where the
time goes: reading scans, cutting crops, or the models.

It writes a synthetic LUNA16-style tree (``subset0/<seriesuid>.mhd`` + ``.raw``, uncompressed int16, written
by :func:`naslung.data.phantom.metaimage.write_mhd`, the phantom's own writer) of ``--scans`` scans of
``--shape`` voxels (default 512 x 512 in-plane, 0.7 mm, and 160 slices of 2 mm: the size of a LUNA16 scan),
with small spheres at ``--candidates`` candidate positions per scan, and a ``seriesuid,coordX,coordY,coordZ``
table; then it runs :func:`naslung.serving.study.predict_study` over it for each model and prints the
figures from its :attr:`~naslung.serving.study.StudyReport.seconds`. It prints figures; it asserts nothing.

The scans are read back right after they are written, so they come from the page cache: "read" is decoding
and checking a scan from memory, a lower bound of reading it from a disk.

Run: ``PYTHONPATH=src python benchmarks/study_throughput.py [--scans 8] [--candidates 100]
[--models voi3d-default voi2d-ensemble] [--runtime torch] [--threads N]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

SPACING = (0.7, 0.7, 2.0)  # x, y, z mm
BACKGROUND_HU, NODULE_HU = -800, 60


def write_tree(root: Path, n_scans: int, shape_zyx: tuple[int, int, int], per_scan: int,
               seed: int = 0) -> tuple[Path, int]:
    """A LUNA16-style tree under ``root`` and its candidate table; returns ``(table, bytes of .raw)``."""
    from naslung.data.phantom.metaimage import write_mhd

    rng = np.random.default_rng(seed)
    rows, raw_bytes = ["seriesuid,coordX,coordY,coordZ"], 0
    nz, ny, nx = shape_zyx
    for s in range(n_scans):
        uid = f"1.3.6.1.4.1.14519.5.2.1.6279.6001.{900000 + s}"
        origin = (-0.35 * nx, -0.35 * ny, -2.0 * nz - 50.0 * s)
        image = np.full(shape_zyx, BACKGROUND_HU, dtype=np.int16)
        image += rng.integers(-40, 40, size=shape_zyx, dtype=np.int16)
        for _ in range(per_scan):
            k = int(rng.integers(12, nz - 12))
            j, i = (int(v) for v in rng.integers(40, (ny - 40, nx - 40)))
            r = int(rng.integers(2, 6))
            kk, jj, ii = np.ogrid[-r:r + 1, -r:r + 1, -r:r + 1]
            ball = (kk * SPACING[2]) ** 2 + (jj * SPACING[1]) ** 2 + (ii * SPACING[0]) ** 2 <= (r * 0.7) ** 2
            box = image[k - r:k + r + 1, j - r:j + r + 1, i - r:i + r + 1]
            box[ball] = NODULE_HU
            x, y, z = (origin[0] + i * SPACING[0], origin[1] + j * SPACING[1], origin[2] + k * SPACING[2])
            rows.append(f"{uid},{x:.3f},{y:.3f},{z:.3f}")
        path = write_mhd(root / "subset0" / f"{uid}.mhd", image, SPACING, origin)
        raw_bytes += path.with_suffix(".raw").stat().st_size
    table = root.parent / "candidates.csv"
    table.write_text("\n".join(rows) + "\n")
    return table, raw_bytes


def run_model(name: str, tree: Path, table: Path, out: Path, runtime: str, batch: int) -> dict[str, float]:
    from naslung.serving.predict import load_members, resolve_settings
    from naslung.serving.study import predict_study

    members = load_members(name)
    settings, _ = resolve_settings(members)
    report = predict_study(tree, table, members, settings, out, runtime=runtime, batch=batch)
    if report.errors:
        raise SystemExit(f"{name}: {len(report.errors)} errors, first: {report.errors[0]['error']}")
    return {"scans": report.scans, "rows": report.rows, "members": len(members), **report.seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scans", type=int, default=8)
    parser.add_argument("--candidates", type=int, default=100, help="candidates per scan")
    parser.add_argument("--shape", default="160,512,512", help="z,y,x voxels of each scan")
    parser.add_argument("--models", nargs="+", default=["voi3d-default", "voi2d-ensemble"])
    parser.add_argument("--runtime", default="torch", help="torch (predict's default) or onnx")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    shape = tuple(int(v) for v in args.shape.split(","))
    print(f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} logical CPUs, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"ISA {torch.backends.cpu.get_cpu_capability()}, load average {os.getloadavg()[0]:.1f} "
          f"(other processes share these cores)")
    with tempfile.TemporaryDirectory(prefix="naslung-study-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        table, raw = write_tree(tmp / "luna", args.scans, shape, args.candidates)  # type: ignore[arg-type]
        print(f"tree: {args.scans} scans of {shape[2]}x{shape[1]}x{shape[0]} voxels (x, y, z; "
              f"{raw / args.scans / 2**20:.0f} MiB each), {args.candidates} candidates per scan, written in "
              f"{time.perf_counter() - t0:.1f} s")
        print(f"load average before the models: {os.getloadavg()[0]:.1f}")
        print(f"{'model':16} {'members':>7} {'scans/min':>9} {'cand/s':>8} {'read':>6} {'crop':>6} "
              f"{'model':>6} {'other':>6}  (share of the wall time)")
        for name in args.models:
            r = run_model(name, tmp / "luna", table, tmp / f"{name}.csv", args.runtime, args.batch_size)
            total = r["total"]
            other = total - r["read"] - r["crop"] - r["model"]
            print(f"{name:16} {r['members']:>7} {60 * r['scans'] / total:>9.1f} {r['rows'] / total:>8.1f} "
                  + " ".join(f"{100 * v / total:>5.0f}%" for v in (r["read"], r["crop"], r["model"], other))
                  + f"  ({total:.1f} s, {r['rows']} candidates)")


if __name__ == "__main__":
    main()
