"""`opsrun runs list|show`: past runs recorded in .opsrun/runs/ (a typer sub-app).
Reads the journal only; imports no apply, transport or llm module.
"""

from __future__ import annotations

from typing import Annotated

import typer

from runner import formats
from runner.cli.options import JsonOpt
from runner.cli.output import out

app = typer.Typer(help="Past runs recorded in .opsrun/runs/.", no_args_is_help=True)


@app.command("list")
def runs_list(as_json: JsonOpt = False) -> None:
    """List recorded runs."""
    from runner import journal

    out(formats.runs(journal.list_runs(), "json" if as_json else "text"))


@app.command("show")
def runs_show(
    run_id: Annotated[str, typer.Argument(help="Run id (a unique prefix, or 'last').")],
    as_json: JsonOpt = False,
) -> None:
    """Timeline of one run: steps, attempts, escalations, fixes, undos, durations, outcome."""
    from runner import journal

    out(formats.run(journal.get_run(run_id), "json" if as_json else "text"))


def register(parent: typer.Typer) -> None:
    parent.add_typer(app, name="runs")
