"""Where naslung caches generated data (phantom, label table, latency): the user cache directory."""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_cache_dir


def cache_dir(*parts: str) -> Path:
    """``$NASLUNG_CACHE`` if set, else the platform user cache dir, joined with ``parts`` and created."""
    root = Path(os.environ.get("NASLUNG_CACHE") or user_cache_dir("naslung"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_creatable(path: Path, name: str) -> None:
    """Raise :class:`~naslung.errors.DataError` unless ``path`` (a folder, existing or not) can be
    written in: its nearest existing ancestor must be a folder this process may write. ``name`` begins the
    message (e.g. ``"--out runs/x"``)."""
    from naslung.errors import DataError

    parent = path
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise DataError(f"{name}: cannot be created, {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DataError(f"{name}: cannot write in {parent} (permission denied or read-only)")
