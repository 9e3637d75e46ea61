"""Atomic file writes: write a temporary sibling, then rename, so a crash never leaves half a file."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target`` atomically.

    On any exception the temporary file is removed and ``target`` is left untouched. A failure to write
    (disk full, no permission, read-only file system) is raised as an ``OSError`` that names ``target``
    and carries the errno, whatever library did the writing (see :func:`write_error`).
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        mapped = write_error(exc, target)
        if mapped is None:
            raise
        raise mapped from exc
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600; give the final file the usual permissions (0666 minus the umask).
        umask = os.umask(0)
        os.umask(umask)
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, target)
    except Exception as exc:
        mapped = write_error(exc, target)
        if mapped is None:
            raise
        raise mapped from exc
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


#: errno values that mean "this output cannot be written" (reported as one line by the CLI).
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS)
_TEXT_ERRNOS = (("no space left", errno.ENOSPC), ("errno = 28", errno.ENOSPC), ("quota", errno.EDQUOT),
                ("read-only file system", errno.EROFS), ("errno = 30", errno.EROFS),
                ("permission denied", errno.EACCES), ("errno = 13", errno.EACCES))
#: Messages of C++ writers (torch.save, h5py) that lose the errno; a nearly full disk explains them.
_SHORT_WRITE = ("iostream error", "requested and", "write failed", "can't write data", "unable to write",
                "pytorchstreamwriter failed", "unexpected pos")


def write_error(exc: BaseException, target: str | os.PathLike[str]) -> OSError | None:
    """``exc`` raised while writing ``target`` as an ``OSError(errno, strerror, target)``, or ``None``.

    Recognises an ``OSError`` with a write errno, a message that spells one out, and a short write from a
    C++ library (torch, HDF5) while the disk holding ``target`` is (nearly) full.
    """
    code = getattr(exc, "errno", None) if isinstance(exc, OSError) else None
    text = str(exc).lower()
    if code not in WRITE_ERRNOS:
        code = next((c for key, c in _TEXT_ERRNOS if key in text), None)
    if code is None and any(key in text for key in _SHORT_WRITE):
        try:
            if shutil.disk_usage(Path(target).parent).free < 1 << 20:
                code = errno.ENOSPC
        except OSError:
            pass
    if code is None:
        return None
    return OSError(code, os.strerror(code), str(target))


def write_text_atomic(target: str | os.PathLike[str], text: str) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def write_png_atomic(fig: Any, target: str | os.PathLike[str], dpi: float | None = None) -> Path:
    """Save a matplotlib figure as PNG atomically, then close it (frees its memory); returns the path."""
    import matplotlib.pyplot as plt

    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", **({} if dpi is None else {"dpi": dpi}))
    plt.close(fig)
    return Path(target)


def write_json_atomic(target: str | os.PathLike[str], data: Any) -> Path:
    return write_text_atomic(target, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def append_jsonl(target: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Append one JSON line and fsync, so a killed process loses at most the line being written."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        mapped = write_error(exc, target)
        if mapped is None:
            raise
        raise mapped from exc


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a JSONL log, ignoring a torn last line left by a kill."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path}: line {i + 1} is not valid JSON") from None
    return records


def read_json(path: str | os.PathLike[str], what: str = "JSON file") -> Any:
    """Parse a JSON file; a truncated or garbled one raises ``ValueError`` naming the file (and ``what``)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a valid {what} (truncated or corrupt: {exc})") from None
