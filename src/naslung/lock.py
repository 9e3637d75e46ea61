"""One writer per output folder: a lock file that names its holder (pid and host).

``with output_lock(out):`` creates ``out/.naslung.lock`` exclusively (``O_CREAT | O_EXCL``) and removes it on
exit. A second writer on the same folder gets :class:`LockError` naming the holder. A lock left behind by a
killed process (its pid is dead on this host) is stale: it is taken over with a warning. A lock held from
another host cannot be checked and is never taken over; the message says which file to delete.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

LOCK_NAME = ".naslung.lock"
#: Locks this process holds, by resolved folder, with a nesting count (re-entrant within one process).
_HELD: dict[Path, tuple[dict[str, Any], int]] = {}


class LockError(RuntimeError):
    """Another live process holds the output folder's lock."""


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (a zombie counts as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:  # a killed child that its parent has not reaped yet is a zombie: dead for our purpose
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def read_lock(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The holder recorded in a lock file (``None`` when there is no lock; ``{}`` when unreadable).

    Unreadable means anything but naslung's JSON record: garbage bytes, text that is not JSON, a folder or a
    file this user may not read. Its holder cannot be checked, so callers refuse it and name the file.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return {}
    # a record without an integer pid names no holder that could be checked
    ok = isinstance(data, dict) and isinstance(data.get("pid"), int) and not isinstance(data["pid"], bool)
    return data if ok else {}


def _holder(info: dict[str, Any]) -> str:
    what = f" ({info['what']})" if info.get("what") else ""
    return f"pid {info.get('pid')} on {info.get('host')}{what} since {info.get('since')}"


def _try_create(path: Path, info: dict[str, Any]) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(fd, (json.dumps(info) + "\n").encode())
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
    return True


def acquire(folder: str | os.PathLike[str], what: str = "",
            on_warning: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Take the lock of ``folder`` (created if missing); returns the holder record written.

    Raises :class:`LockError` when a live process (or one on another host) holds it.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    host = socket.gethostname()
    info = {"pid": os.getpid(), "host": host, "what": what, "token": uuid.uuid4().hex,
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    warn = on_warning or _warn
    for _ in range(3):
        if _try_create(path, info):
            return info
        held = read_lock(path)
        if held is None:  # released between our two calls: try again
            continue
        if not held:
            raise LockError(f"{folder}: the lock file {path} is unreadable (not naslung's lock record); "
                            f"delete it if no naslung command is writing to {folder}")
        stale = held.get("host") == host and not pid_alive(held["pid"])
        if not stale:
            raise LockError(f"{folder}: in use by {_holder(held)}; wait for it to finish, or delete "
                            f"{path} if no such process is running")
        warn(f"{path}: taking over a stale lock of {_holder(held)} (that process is gone)")
        path.unlink(missing_ok=True)
    raise LockError(f"{folder}: could not take the lock {path} (another process keeps taking it)")


def release(folder: str | os.PathLike[str], info: dict[str, Any]) -> None:
    """Remove the lock of ``folder`` if it is still the one ``info`` describes."""
    path = Path(folder) / LOCK_NAME
    held = read_lock(path)
    if held and held.get("token") == info.get("token"):
        path.unlink(missing_ok=True)


@contextmanager
def output_lock(folder: str | os.PathLike[str], what: str = "",
                on_warning: Callable[[str], None] | None = None) -> Iterator[dict[str, Any]]:
    """Hold the lock of ``folder`` for the ``with`` block (see the module docstring)."""
    key = Path(folder).resolve()
    if key in _HELD:
        info, depth = _HELD[key]
        _HELD[key] = (info, depth + 1)
    else:
        info = acquire(folder, what, on_warning)
        _HELD[key] = (info, 1)
    try:
        yield info
    finally:
        info, depth = _HELD[key]
        if depth > 1:
            _HELD[key] = (info, depth - 1)
        else:
            del _HELD[key]
            release(folder, info)
