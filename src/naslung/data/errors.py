"""The one exception type for bad input data (files, tables, coordinates)."""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data. The message names the file and the problem; the CLI prints it without a
    traceback and exits with status 2."""
