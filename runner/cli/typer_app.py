"""The `opsrun` typer app: every command, by topic in this package, in the order `--help` lists
them. Imports typer and the commands' signatures (each imports its heavy modules inside).
"""

from __future__ import annotations

from typing import Annotated

import typer

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


def run(argv: list[str] | None) -> int:
    """The command line through typer: its exit code."""
    command = typer.main.get_command(app)
    code = command.main(args=argv, prog_name="opsrun", standalone_mode=False)
    return code if isinstance(code, int) else 0
