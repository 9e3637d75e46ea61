"""The one exception type for bad input data (files, tables, coordinates), at the base of the package.

It lives here, below every package, so that base modules (``paths``, ``fingerprint``) can raise it without
importing ``naslung.data``; ``naslung.data.errors`` re-exports it for older imports.
"""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data. The message names the file and the problem; the CLI prints it without a
    traceback and exits with status 2."""
