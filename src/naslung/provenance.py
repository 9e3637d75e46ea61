"""Provenance recorded in every file naslung writes: versions, date and the command that ran.

The library never reads ``sys.argv``. The command is either passed to :func:`provenance`, or set by the
entry point for the duration of one invocation with :func:`invoked_as` (the CLI does this once for every
command, see ``naslung.cli.common``); a library call outside any invocation records ``command: null``.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any

_COMMAND: ContextVar[str | None] = ContextVar("naslung_command", default=None)


@contextmanager
def invoked_as(command: str | None) -> Iterator[None]:
    """Record ``command`` (e.g. ``"naslung train --data d.h5 ..."``) as the command of the block's outputs."""
    token = _COMMAND.set(command)
    try:
        yield
    finally:
        _COMMAND.reset(token)


def current_command() -> str | None:
    """The command set by the innermost :func:`invoked_as`, or None."""
    return _COMMAND.get()


def provenance(command: str | None = None) -> dict[str, Any]:
    """naslung, python, numpy and torch versions, the UTC date (ISO 8601) and the command.

    ``command`` defaults to :func:`current_command`.
    """
    import numpy as np
    import torch

    import naslung

    return {
        "naslung": getattr(naslung, "__version__", "unknown"),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "command": command if command is not None else current_command(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
