"""`opsrun init [DIR]`: a ready playbook repo (runner.scaffold's files, with the JSON Schemas).
Imports only scaffold and schema, inside the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from runner.cli.output import out


def init(
    directory: Annotated[Path, typer.Argument(help="The folder to create the repo in (made when missing).")] = Path(),
    force: Annotated[bool, typer.Option("--force", help="Overwrite the files init writes if they exist.")] = False,
) -> None:
    """Create a ready playbook repo: inventory, a site playbook, gateway.yaml, .gitignore,
    a pre-commit hook and a CI workflow, each with its schema line for editors."""
    import shlex

    from runner import scaffold, schema

    name = directory.resolve().name or "opsrun-site"
    contents = scaffold.files(name, {kind: schema.schema_text(kind) for kind in schema.SCHEMA_NAMES})
    written = scaffold.write(directory, contents, force=force)
    shown = "" if directory == Path() else f"cd {shlex.quote(str(directory))} && "
    out(
        f"Created {len(written)} files in {directory}:\n"
        + "".join(f"  {rel}\n" for rel in written)
        + f"Next: {shown}opsrun validate . && opsrun plan site.yaml\n"
    )


def register(app: typer.Typer) -> None:
    app.command()(init)
