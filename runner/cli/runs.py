"""`opsrun runs list|show`: past runs recorded in .opsrun/runs/ (a typer sub-app).
Reads the journal only; imports no apply, transport or llm module.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from runner.cli.options import JsonOpt
from runner.cli.output import out

app = typer.Typer(help="Past runs recorded in .opsrun/runs/.", no_args_is_help=True)


@app.command("list")
def runs_list(as_json: JsonOpt = False) -> None:
    """List recorded runs."""
    from runner import journal, report

    runs = journal.list_runs()
    if as_json:
        out(
            json.dumps(
                [
                    {
                        "run_id": r.run_id,
                        "started": r.start.get("ts"),
                        "playbook": r.start.get("playbook"),
                        "outcome": r.outcome,
                    }
                    for r in runs
                ],
                indent=2,
            )
            + "\n"
        )
    else:
        out(report.runs_table(runs))


@app.command("show")
def runs_show(
    run_id: Annotated[str, typer.Argument(help="Run id (a unique prefix, or 'last').")],
    as_json: JsonOpt = False,
) -> None:
    """Timeline of one run: steps, attempts, escalations, fixes, undos, durations, outcome."""
    from runner import journal, report
    from runner.tally import host_summary

    run = journal.get_run(run_id)
    if as_json:
        doc = {"run_id": run.run_id, "outcome": run.outcome, "hosts": host_summary(run.events), "events": run.events}
        out(json.dumps(doc, indent=2, default=str) + "\n")
    else:
        out(report.run_timeline(run))


def register(parent: typer.Typer) -> None:
    parent.add_typer(app, name="runs")
