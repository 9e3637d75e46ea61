"""Guards of ``naslung data prepare``, checked before any work: a writable output, enough memory, and one
writer per output file (a lock beside it; a killed writer's temporaries are cleaned up)."""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from naslung import schemas
from naslung.data.errors import DataError


class CropSettings(Protocol):
    """What the guards read of :class:`naslung.data.prepare.PrepareConfig` (typed here, so that this module,
    which prepare imports, does not import prepare back)."""

    size: int
    margin: int
    dims: int

    @property
    def side(self) -> int: ...


# Resource guard. Cutting one crop holds its sample coordinates (3 float64), their shifted copy and
# broadcast temporaries (about 6 float64 in all), the resampled float32 crop, masks and the int16 result:
# about 70 bytes per crop voxel at the peak (48^3: 8 MB; 432^3, i.e. --margin 200: 5.6 GB).
CROP_WORK_BYTES_PER_VOXEL = 70
# Training holds the whole dataset in memory as float32 (naslung.data.dataset.load_dataset): 4 bytes a voxel
# (432^3: 322 MB per nodule). The caps chosen: one crop's working memory may use at most PEAK_BUDGET (the
# design's 2 GB peak RSS for prepare; side <= 312 voxels in 3-D) and at most half of the memory available
# now, and the dataset in float32 at most all the available memory. Above that, prepare refuses before any
# work: the run would swap or be killed part-way, or give a file no training run can load.
DATASET_BYTES_PER_VOXEL = 4
PEAK_BUDGET = 2 << 30


def check_output(out: Path) -> None:
    """Refuse an output that cannot be written, before any work: a directory, a file that is not a naslung
    crop dataset (:mod:`naslung.outputs`), or an unwritable folder."""
    if out.is_dir():
        raise DataError(f"{out}: is a directory; --out must name the dataset file to write "
                        f"(e.g. {out / 'crops.h5'})")
    from naslung.outputs import CROP_DATASET, PREPARE_ERRORS, refuse_foreign_file
    from naslung.paths import check_creatable

    refuse_foreign_file(out, CROP_DATASET)  # never over a scan, a label table or any file not a dataset
    refuse_foreign_file(errors_path(out), PREPARE_ERRORS)
    check_creatable(out.parent, str(out))


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation now (``MemAvailable`` on Linux), None if unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def memory_estimate(config: CropSettings, n_nodules: int = 0) -> dict[str, int]:
    """Bytes: the working memory of cutting one crop, and the dataset in memory (float32) for training."""
    voxels = config.side ** config.dims
    return {"crop_work": voxels * CROP_WORK_BYTES_PER_VOXEL,
            "per_nodule": voxels * DATASET_BYTES_PER_VOXEL,
            "dataset": voxels * DATASET_BYTES_PER_VOXEL * n_nodules}


def check_memory(config: CropSettings, n_nodules: int = 0, available: int | None = None) -> None:
    """Refuse crop settings that would exhaust memory (``CROP_WORK_BYTES_PER_VOXEL``), with the estimate."""
    available = available_memory() if available is None else available
    est = memory_estimate(config, n_nodules)
    shape = "^".join((str(config.side), str(config.dims)))
    what = f"--size {config.size} --margin {config.margin} makes {shape} crops"
    if est["crop_work"] > PEAK_BUDGET:
        raise DataError(f"{what}: cutting one takes about {_human(est['crop_work'])} of memory (and "
                        f"{_human(est['per_nodule'])} per nodule once loaded to train), above prepare's "
                        f"{_human(PEAK_BUDGET)} budget; use a smaller --margin or --size")
    if not available:
        return
    if est["crop_work"] > available / 2:
        raise DataError(f"{what}: cutting one takes about {_human(est['crop_work'])} of memory, more than "
                        f"half of the {_human(available)} available; use a smaller --margin or --size")
    if est["dataset"] > available:
        raise DataError(f"{what}, {_human(est['per_nodule'])} per nodule in memory: the {n_nodules} nodules "
                        f"need about {_human(est['dataset'])} to train on, more than the {_human(available)} "
                        f"available; use a smaller --margin or --size")


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def errors_path(out: Path) -> Path:
    """The list of scans a prepare run refused, beside its dataset: ``OUT.errors.json``."""
    return out.with_name(f"{out.name}.errors.json")


def write_errors(out: Path, refused: list[dict[str, Any]]) -> Path | None:
    """Write the scans refused beside ``out`` (``OUT.errors.json``); with none, remove an older list."""
    from naslung.atomic import write_json_atomic

    path = errors_path(out)
    if not refused:
        path.unlink(missing_ok=True)  # check_output accepted it: it is an errors list of an older run
        return None
    return write_json_atomic(path, {"schema": schemas.PREPARE_ERRORS, "schema_version": 1,
                                    "dataset": str(out), "refused": refused})


def all_refused(out: Path, refused: list[dict[str, Any]]) -> DataError:
    """The error of a run whose every scan was refused; writes the errors file first."""
    write_errors(out, refused)
    first = refused[0]["reason"] if len(refused) == 1 else f"e.g. {refused[0]['reason']}"
    return DataError(f"{first} (every scan with labelled nodules refused: {len(refused)} listed in "
                     f"{errors_path(out)})")


def lock_path(out: Path) -> Path:
    """The lock file of a dataset being written: ``.OUT.lock`` beside it."""
    return out.with_name(f".{out.name}.lock")


@contextmanager
def writer_lock(out: Path, on_warning: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold ``.OUT.lock`` (pid and host) while ``out`` is written; then clean stale ``.OUT.*.tmp`` files.

    A second live writer is refused. A lock whose pid is dead on this host is taken over. While the lock is
    held no other prepare writes ``out``, so every temporary of ``out`` (``atomic_path``'s
    ``.OUT.<random>.tmp``) left behind is a killed run's and is deleted.
    """
    from naslung.lock import pid_alive, read_lock

    out.parent.mkdir(parents=True, exist_ok=True)
    path = lock_path(out)
    host = socket.gethostname()
    info = {"pid": os.getpid(), "host": host, "what": "naslung data prepare", "token": os.urandom(8).hex(),
            "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            held = read_lock(path)
            if held is None:
                continue
            if not held:
                raise DataError(f"{out}: the lock file {path} is unreadable (not naslung's lock record); "
                                f"delete it if no naslung data prepare is writing {out.name}") from None
            if held.get("host") == host and not pid_alive(held["pid"]):
                path.unlink(missing_ok=True)  # a killed writer's lock
                continue
            who = f"pid {held.get('pid')} on {held.get('host')}"
            raise DataError(f"{out}: being written by {who} (lock {path}); wait for it, or delete the lock "
                            f"if no such process runs") from None
        except OSError as exc:
            raise DataError(f"{out}: cannot create the lock file {path} ({exc.strerror or exc})") from exc
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(info) + "\n")
        break
    else:
        raise DataError(f"{out}: could not take the lock {path}")
    try:
        clean_stale_temporaries(out, on_warning)
        yield
    finally:
        held = read_lock(path)
        if held and held.get("token") == info["token"]:
            path.unlink(missing_ok=True)


def clean_stale_temporaries(out: Path, on_warning: Callable[[str], None] | None = None) -> list[Path]:
    """Delete the ``.OUT.*.tmp`` files a killed writer left beside ``out``; call with ``out``'s lock held."""
    removed = []
    for tmp in out.parent.glob(f".{out.name}.*.tmp"):
        try:
            tmp.unlink()
            removed.append(tmp)
        except FileNotFoundError:
            continue
        except OSError as exc:
            if on_warning is not None:
                on_warning(f"{tmp}: cannot remove a stale temporary file ({exc.strerror or exc})")
    if removed and on_warning is not None:
        on_warning(f"{out.parent}: removed {len(removed)} temporary file(s) left by an interrupted prepare "
                   f"of {out.name}")
    return removed
