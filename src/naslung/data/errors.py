"""Re-export of :class:`naslung.errors.DataError`, the one exception type for bad input data."""

from __future__ import annotations

from naslung.errors import DataError

__all__ = ["DataError"]
