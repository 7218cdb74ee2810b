"""The `opsrun` command line: `main`, the only place that exits; the typer app (runner.cli.typer_app)
with every command, or `plan`/`apply` read straight (runner.cli.fast). Imports no typer itself.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any, NoReturn

from runner.cli.output import CommandExit, err, error_text
from runner.errors import EXIT_ERROR, EXIT_INVALID, EXIT_OK, OpsrunError


def __getattr__(name: str) -> Any:
    """`runner.cli.app` (the typer app) and its EXIT_CODES_HELP, built when first asked for."""
    if name in ("app", "EXIT_CODES_HELP"):
        from runner.cli import typer_app

        return getattr(typer_app, name)
    raise AttributeError(f"module 'runner.cli' has no attribute {name!r}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the command (typer's app, or the fast path for a plain `plan`/`apply`
    command line), turning our errors into messages and exit codes."""
    from runner.cli.fast import runner_for

    program = argv is None  # the `opsrun` program itself (in-process callers pass argv)
    try:
        fast = runner_for(list(sys.argv[1:] if argv is None else argv))
        if fast is not None:
            code = fast()
        else:
            from runner.cli import typer_app

            code = typer_app.run(argv)
    except CommandExit as stop:
        code = stop.code
    except BaseException as exc:  # each kind its message and exit code; the rest goes on
        _fail(exc, program)
    _finish(code if isinstance(code, int) else EXIT_OK, program)


def _fail(exc: BaseException, program: bool = False) -> NoReturn:
    """An exception out of a command as its message and exit code; an unknown one goes on."""
    if isinstance(exc, OpsrunError):
        err(error_text(exc))
        _finish(exc.exit_code, program)
    if "typer" in sys.modules:  # only typer raises these (its parser, its prompts)
        from typer import Abort

        try:  # typer >= 0.20 vendors click; older versions use the click package
            from typer._click.exceptions import ClickException, UsageError
        except ImportError:  # pragma: no cover
            from click.exceptions import ClickException, UsageError  # type: ignore[assignment]
        if isinstance(exc, Abort):
            err("aborted")
            _finish(EXIT_ERROR, program)
        if isinstance(exc, UsageError):
            err(exc.format_message() if not exc.ctx else f"{exc.ctx.get_usage()}\nerror: {exc.format_message()}")
            _finish(EXIT_INVALID, program)
        if isinstance(exc, ClickException):
            err(f"error: {exc.format_message()}")
            _finish(EXIT_INVALID, program)
    if isinstance(exc, KeyboardInterrupt):
        err("interrupted")
        _finish(130, program)
    if isinstance(exc, BrokenPipeError):
        _finish(EXIT_ERROR, program)
    if isinstance(exc, RecursionError):  # last resort: the loaders bound depth, never a traceback
        err("error: the input is nested too deeply to process\n  hint: flatten the data "
            "(docs/playbooks.md, Input limits)")
        _finish(EXIT_INVALID, program)
    if isinstance(exc, MemoryError):
        err("error: out of memory while processing the input\n  hint: the input is too large "
            "(docs/playbooks.md, Input limits)")
        _finish(EXIT_INVALID, program)
    raise exc


def _finish(code: int, program: bool = False) -> NoReturn:
    """Exit with `code`. When an abandoned LLM request thread is still running past its bound,
    leave without interpreter finalization (which could wait on it forever, see
    runner.gateway.adapter), after flushing what we printed. The program's own exit freezes
    the garbage collector first: finalization then does not search every object made for
    cycles (~25 ms of each start-to-exit; atexit handlers, flushes and closes still run)."""
    adapter = sys.modules.get("runner.gateway.adapter")
    if adapter is not None and adapter.settle() > 0:
        import os

        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
    if program:
        import gc

        gc.disable()
        gc.freeze()
    sys.exit(code)
