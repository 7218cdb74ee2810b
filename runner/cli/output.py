"""The CLI's one set of output helpers: text to stdout and stderr, errors as messages with exit
codes, rich consoles for tables. Imports only errors and secrets (rich loads when a table is drawn).
"""

from __future__ import annotations

import sys
import threading
import time
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


class Lines:
    """A run's event lines on stdout. On a terminal each is flushed as written; elsewhere (a CI
    log, a pipe, a file) they are flushed at most every FLUSH_S seconds, by the next line or a
    timer, so a line is never held longer than that (a flush per line was a write(2) per host
    and step, with every worker thread waiting on it). close() flushes the rest."""

    FLUSH_S = 0.2

    def __init__(self) -> None:
        self._each = sys.stdout.isatty()
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._last = 0.0

    def write(self, text: str) -> None:
        sys.stdout.write(text)
        if self._each:
            sys.stdout.flush()
            return
        now = time.monotonic()
        with self._lock:
            if now - self._last >= self.FLUSH_S:
                self._last = now
                self._flush()
            elif self._timer is None:
                self._timer = threading.Timer(self.FLUSH_S, self._tick)
                self._timer.daemon = True
                self._timer.start()

    def _tick(self) -> None:
        with self._lock:
            self._timer = None
            self._last = time.monotonic()
            self._flush()

    @staticmethod
    def _flush() -> None:
        try:
            sys.stdout.flush()
        except (OSError, ValueError):  # a closed pipe: the caller's next write says so
            pass

    def close(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        sys.stdout.flush()


def err(text: str) -> None:
    """A message on stderr, ended by a newline (after what stdout holds: the two stay in order
    where they share a log)."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
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
