"""`opsrun schema` and `opsrun version`: what opsrun knows about itself.
Imports nothing but the schema module, inside the command.
"""

from __future__ import annotations

from typing import Annotated

import typer

from runner.cli.output import out
from runner.errors import InvalidInput


def schema_cmd(
    name: Annotated[str, typer.Argument(help="playbook | inventory | gateway | steps")] = "playbook",
) -> None:
    """Print a JSON Schema (for editors and LLMs)."""
    from runner import schema

    if name not in schema.SCHEMA_NAMES:
        raise InvalidInput(f"no schema '{name}'", hint="use one of: " + ", ".join(schema.SCHEMA_NAMES))
    out(schema.schema_text(name))


def version() -> None:
    """Print the version."""
    from runner import __version__

    out(f"opsrun {__version__}\n")


def print_version(value: bool) -> None:
    """`opsrun --version`: the version, then exit before any command."""
    if value:
        version()
        raise typer.Exit(0)


def register(app: typer.Typer) -> None:
    app.command("schema")(schema_cmd)
    app.command()(version)
