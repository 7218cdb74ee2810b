"""The CLI's one set of output helpers: text to stdout and stderr, errors as messages with exit
codes, rich consoles for tables. Imports only errors and secrets (rich loads when a table is drawn).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from runner.errors import OpsrunError
from runner.secrets import redact

if TYPE_CHECKING:
    from rich.console import Console


class CommandExit(Exception):
    """A command ends with this exit code (raised where a plain return cannot reach)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def out(text: str) -> None:
    """Text on stdout, as it is."""
    sys.stdout.write(text)
    sys.stdout.flush()


def err(text: str) -> None:
    """A message on stderr, ended by a newline."""
    sys.stderr.write(text if text.endswith("\n") else text + "\n")
    sys.stderr.flush()


def error_text(exc: OpsrunError, prefix: str = "error: ") -> str:
    """An error as a person reads it: located diagnostics as they are, anything else after `prefix`."""
    return exc.render() if getattr(exc, "diagnostics", None) else prefix + exc.render()


@contextmanager
def user_errors(prefix: str = "error: ") -> Iterator[None]:
    """An OpsrunError inside a command becomes its message on stderr (redacted) and its exit
    code, never a traceback (for commands that also run outside `main`, as sub-apps)."""
    try:
        yield
    except OpsrunError as exc:
        import typer

        err(redact(error_text(exc, prefix)))
        raise typer.Exit(exc.exit_code) from None


def console() -> Console:
    """A rich console on stdout for tables (no highlighting, no wrapping)."""
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def markup_escape(text: str) -> str:
    """Text for rich markup: redacted, its brackets escaped."""
    from rich.markup import escape

    return escape(redact(text))
