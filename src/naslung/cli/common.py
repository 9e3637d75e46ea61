"""Small helpers shared by the CLI commands, and the CLI-wide error convention.

Every error of every command ends the same way: one line ``error: <file or option>: <problem>`` on stderr
and exit status 2, never a traceback. :class:`NaslungGroup` (the top-level command class) turns whatever a
command raises into that line (:func:`describe_error`); ``NASLUNG_DEBUG=1`` shows the traceback instead,
so that a real bug stays visible.
"""

from __future__ import annotations

import errno
import math
import os
import shlex
import sys
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup

#: Exit status of every error (the same across commands; ``click`` usage errors use it too).
EXIT_ERROR = 2
DEBUG_ENV = "NASLUNG_DEBUG"
_ERRNO_TEXT = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded (no space left on device)",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied (operation not permitted)",
    errno.EROFS: "permission denied (read-only file system)",
    errno.ENOENT: "no such file or directory",
    errno.EISDIR: "is a directory, expected a file",
    errno.ENOTDIR: "not a directory",
    errno.EEXIST: "already exists",
}


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) collapsed to one space."""
    return " ".join(str(text).split())


def describe_error(exc: BaseException) -> str:
    """The one-line message for ``exc``: names the file for OS errors, the type for unexpected ones."""
    if isinstance(exc, typer.TyperException):
        return exc.format_message()
    if isinstance(exc, OSError) and exc.errno in _ERRNO_TEXT and exc.filename is not None:
        where = f"{exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 else "")
        return f"{where}: {_ERRNO_TEXT[exc.errno]}"
    if isinstance(exc, OSError | ValueError) and str(exc):
        return str(exc)
    if isinstance(exc, RecursionError):
        return "input nested too deeply"
    if isinstance(exc, RuntimeError) and type(exc).__module__.startswith("naslung"):
        return str(exc)
    return (f"internal error, {type(exc).__name__}: {exc} (please report it; "
            f"{DEBUG_ENV}=1 shows the traceback)")


def print_error(message: str) -> None:
    typer.secho(f"error: {one_line(message)}", fg=typer.colors.RED, err=True)


def debug() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


class NaslungGroup(TyperGroup):
    """Top-level command group: maps every exception of a command to one line and exit status 2."""

    def invoke(self, ctx: Any) -> Any:
        from naslung.provenance import invoked_as

        try:
            with invoked_as(command_line()):
                return super().invoke(ctx)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except typer.TyperException as exc:
            if debug() or type(exc).__name__ == "NoArgsIsHelpError":  # `naslung data`: show the help
                raise
            path = exc.ctx.command_path if getattr(exc, "ctx", None) is not None else ""
            print_error(f"{path}: {exc.format_message()}" if path else exc.format_message())
            raise typer.Exit(EXIT_ERROR) from None
        except Exception as exc:
            if debug():
                raise
            print_error(describe_error(exc))
            raise typer.Exit(EXIT_ERROR) from None


def command_line() -> str:
    """This invocation as a shell command, ``naslung <arguments>``: the command recorded in provenance."""
    return shlex.join(["naslung", *sys.argv[1:]])


def fail(exc: Exception | str) -> NoReturn:
    """Print ``exc`` as a one-line error (no traceback) and exit with status 2."""
    print_error(exc if isinstance(exc, str) else describe_error(exc))
    raise typer.Exit(code=EXIT_ERROR)


def check_threads(threads: int | None, option: str = "--threads") -> None:
    """Raise ``typer.BadParameter`` unless ``threads`` is None or a positive count."""
    if threads is not None and threads < 1:
        raise typer.BadParameter(f"must be a positive number of threads, got {threads}", param_hint=option)


def pct(value: Any) -> str:
    """A rate in [0, 1] as a percentage with 2 decimals; ``-`` when undefined (None or NaN)."""
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"


def from_alias(value: Any, old_value: Any, name: str, old: str, default: Any = None) -> Any:
    """The value of option ``name``, also given under ``old``, its hidden former name (README, "What
    changed"): ``old_value`` when that was given (None: not given); both given and different is an error."""
    if old_value is None:
        return value
    if value != default and value != old_value:
        raise typer.BadParameter(f"{old} is the former name of {name}; give one of them", param_hint=name)
    return old_value
