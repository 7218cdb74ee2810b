"""The `opsrun` command line: `app` (typer) with every command, by topic in this package, and
`main`, the only place that exits. Imports nothing heavy at start-up: commands import inside.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Annotated, NoReturn

import typer

try:  # typer >= 0.20 vendors click; older versions use the click package
    from typer._click.exceptions import ClickException, UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException, UsageError  # type: ignore[assignment]

from runner.cli import (
    apply,
    approve,
    author,
    do,
    gateway,
    info,
    init,
    inventory,
    jobs,
    mcp,
    plan,
    runs,
    serve,
    validate,
)
from runner.cli.output import err, error_text
from runner.errors import EXIT_ERROR, EXIT_INVALID, EXIT_OK, OpsrunError

EXIT_CODES_HELP = (
    "Exit codes: 0 success / no changes, 1 error, 2 changes present (plan --detailed-exitcode), "
    "3 stopped waiting for a human, 4 invalid input."
)

app = typer.Typer(
    name="opsrun",
    help="Run declarative YAML playbooks on servers (SSH), Proxmox VE and Android (ADB): "
    "validate, plan (exact previews), apply (with retry and escalation).\n\n" + EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (typer's, no heavy import)
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
# the order `--help` lists them
for topic in (init, validate, plan, apply, do, approve, jobs, inventory, info, author, runs, gateway, serve, mcp):
    topic.register(app)


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", "-V", is_eager=True, callback=info.print_version,
                           help="Print the version and exit.")
    ] = False,
) -> None:
    """Options before the command (`opsrun --version`)."""


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning our errors into messages and exit codes."""
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="opsrun", standalone_mode=False)
    except OpsrunError as exc:
        err(error_text(exc))
        _finish(exc.exit_code)
    except typer.Abort:
        err("aborted")
        _finish(EXIT_ERROR)
    except UsageError as exc:
        err(exc.format_message() if not exc.ctx else f"{exc.ctx.get_usage()}\nerror: {exc.format_message()}")
        _finish(EXIT_INVALID)
    except ClickException as exc:
        err(f"error: {exc.format_message()}")
        _finish(EXIT_INVALID)
    except KeyboardInterrupt:
        err("interrupted")
        _finish(130)
    except BrokenPipeError:
        _finish(EXIT_ERROR)
    except RecursionError:  # last resort: the loaders bound depth, this must never show a traceback
        err("error: the input is nested too deeply to process\n  hint: flatten the data "
             "(docs/playbooks.md, Input limits)")
        _finish(EXIT_INVALID)
    except MemoryError:
        err("error: out of memory while processing the input\n  hint: the input is too large "
             "(docs/playbooks.md, Input limits)")
        _finish(EXIT_INVALID)
    _finish(code if isinstance(code, int) else EXIT_OK)


def _finish(code: int) -> NoReturn:
    """Exit with `code`. When an abandoned LLM request thread is still running past its bound,
    leave without interpreter finalization (which could wait on it forever, see
    runner.gateway.adapter), after flushing what we printed."""
    adapter = sys.modules.get("runner.gateway.adapter")
    if adapter is not None and adapter.settle() > 0:
        import os

        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
    sys.exit(code)
