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
