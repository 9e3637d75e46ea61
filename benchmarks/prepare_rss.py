"""Preparation cost: time per scan and peak RSS of ``naslung data prepare`` (DESIGN.md section 5).

``prepare`` runs in a child process that reports its own peak RSS (``VmHWM`` of ``/proc/self/status`` at
exit). Not ``ru_maxrss``: Linux carries the forking parent's high-water mark over ``fork`` + ``exec``, so a
child's ``ru_maxrss`` is never below the RSS of this script when it forked. Run::

    python benchmarks/prepare_rss.py                      # the cached full LIDC phantom (built if needed)
    python benchmarks/prepare_rss.py --luna DIR           # any LUNA16-layout tree (real LUNA16 too)
    python benchmarks/prepare_rss.py --synthetic 12       # 12 full-size synthetic scans (512 x 512 x ~300)

The phantom's volumes are small (64 mm fields of view, one nodule each), so its RSS says little about
real scans; ``--synthetic`` writes LUNA16-sized int16 scans to a temporary folder to measure that.
``--fractions 0.1,1`` also runs on the first 10 % of the scans, to show that RSS does not grow with them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# The child writes its VmHWM (KiB; per address space, so reset by exec) to $NASLUNG_BENCH_HWM at exit.
PREPARE = """
import atexit, os


def _hwm():
    with open("/proc/self/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    with open(os.environ["NASLUNG_BENCH_HWM"], "w") as out:
        out.write(str(kib))


atexit.register(_hwm)
from naslung.cli.app import main
main()
"""


def run_prepare(luna: Path, out: Path, extra: list[str]) -> dict[str, object]:
    """Run ``naslung data prepare --json`` in a child; its report, wall time and peak RSS (MiB)."""
    cmd = [sys.executable, "-c", PREPARE, "data", "prepare", "--luna", str(luna), "--out", str(out), "--json",
           *extra]
    hwm = out.with_suffix(".hwm")
    start = time.perf_counter()
    env = {**os.environ, "NASLUNG_BENCH_HWM": str(hwm)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"prepare failed ({proc.returncode}):\n{proc.stderr}")
    return {"report": json.loads(proc.stdout), "wall_s": seconds, "peak_rss_mib": int(hwm.read_text()) / 1024}


def subtree(luna: Path, fraction: float, dest: Path) -> Path:
    """The first ``fraction`` of the scans of ``luna`` (by subset, name) as a tree of symlinks."""
    scans = sorted(luna.glob("subset[0-9]/**/*.mhd"))
    keep = scans[: max(1, round(len(scans) * fraction))]
    for mhd in keep:
        target = dest / mhd.parent.relative_to(luna)
        target.mkdir(parents=True, exist_ok=True)
        for f in (mhd, mhd.with_suffix(".raw")):
            (target / f.name).symlink_to(f.resolve())
    for name in ("labels.csv", "annotations.csv", "phantom.json"):
        if (luna / name).exists():
            (dest / name).symlink_to((luna / name).resolve())
    return dest


def write_synthetic(root: Path, n_scans: int, seed: int = 0) -> Path:
    """``n_scans`` LUNA16-sized scans (512 x 512 x 250-400, int16) with 1-3 spheres each, in LUNA16 layout."""
    import pandas as pd
    import SimpleITK as sitk  # noqa: N813

    from naslung.data.luna16 import load_subset_table

    rng = np.random.default_rng(seed)
    uids = list(load_subset_table().items())
    labels, z_index = [], np.arange(512)
    for s in range(n_scans):
        uid, subset = uids[s * 7 % len(uids)]
        nz, spacing = int(rng.integers(250, 400)), (0.7, 0.7, 1.25)
        image = rng.normal(-820, 40, size=(nz, 512, 512)).astype(np.int16)
        for n in range(int(rng.integers(1, 4))):
            c = np.array([rng.uniform(120, 390), rng.uniform(120, 390), rng.uniform(30, nz - 30)])  # x, y, z
            r = rng.uniform(2, 12)  # mm
            zs = slice(int(c[2] - r / 1.25) - 1, int(c[2] + r / 1.25) + 2)
            k, j, i = np.meshgrid(np.arange(nz)[zs], z_index, z_index, indexing="ij")
            ball = ((i - c[0]) * 0.7) ** 2 + ((j - c[1]) * 0.7) ** 2 + ((k - c[2]) * 1.25) ** 2 <= r * r
            image[zs][ball] = 60
            world = (-180 + c[0] * 0.7, -180 + c[1] * 0.7, -300 + c[2] * 1.25)
            rating = 4.0 if r > 6 else 2.0
            labels.append({"seriesuid": uid, "subset": subset, "nodule_id": n, "n_readers": 4,
                           "malignancy_mean": rating, "malignancy_median": rating,
                           "malignancy_ratings": "", "label": int(r > 6), "diameter_mm": 2 * r,
                           "centroid_x_vox": c[0], "centroid_y_vox": c[1], "centroid_z_vox": c[2],
                           "coordX": world[0], "coordY": world[1], "coordZ": world[2]})
        img = sitk.GetImageFromArray(image)
        img.SetSpacing(spacing)
        img.SetOrigin((-180.0, -180.0, -300.0))
        (root / f"subset{subset}").mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(img, str(root / f"subset{subset}" / f"{uid}.mhd"))
    table = pd.DataFrame(labels)
    table.to_csv(root / "labels.csv", index=False)
    annotations = table[["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"]]
    annotations.to_csv(root / "annotations.csv", index=False)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--luna", type=Path, help="LUNA16-layout tree (default: the cached full phantom)")
    source.add_argument("--synthetic", type=int, metavar="N", help="use N full-size synthetic scans")
    parser.add_argument("--limit", type=int, default=None, help="phantom: its first N nodules only")
    parser.add_argument("--fractions", default="1", help="comma-separated fractions of the scans to run on")
    parser.add_argument("--dims", default="3", help="passed to prepare")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="naslung-bench-") as tmp:
        tmp_path = Path(tmp)
        if args.synthetic:
            luna = write_synthetic(tmp_path / "synthetic", args.synthetic)
            what = f"{args.synthetic} synthetic scans"
        elif args.luna:
            luna, what = args.luna, str(args.luna)
        else:
            from naslung.data.phantom import ensure_phantom

            luna, what = ensure_phantom(limit=args.limit, progress=True), "LIDC phantom"
        print(f"prepare on {what} ({luna}), {os.cpu_count()} CPU cores, dims {args.dims}", flush=True)
        for fraction in (float(f) for f in args.fractions.split(",")):
            tree = luna if fraction >= 1 else subtree(luna, fraction, tmp_path / f"sub{fraction}")
            result = run_prepare(tree, tmp_path / f"out{fraction}.h5", ["--dims", args.dims])
            report = result["report"]
            scans = max(int(report["n_scans"]), 1)
            print(f"  {fraction:>5.0%} of scans: {report['n_scans']} scans, {report['n_nodules']} nodules, "
                  f"prepare {report['seconds']:.1f} s ({1000 * report['seconds'] / scans:.0f} ms/scan; "
                  f"process wall {result['wall_s']:.1f} s), peak RSS {result['peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
