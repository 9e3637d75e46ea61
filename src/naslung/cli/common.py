"""Small helpers shared by the CLI commands."""

from __future__ import annotations

import math
from typing import Any, NoReturn

import typer


def fail(exc: Exception) -> NoReturn:
    """Print ``exc`` as a one-line error (no traceback) and exit with status 1."""
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


def pct(value: Any) -> str:
    """A rate in [0, 1] as a percentage with 2 decimals; ``-`` when undefined (None or NaN)."""
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"
