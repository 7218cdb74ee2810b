"""`opsrun runs list|show|merge`: past runs recorded in .opsrun/runs/ (a typer sub-app), and the
runs of a sharded apply as one recap. Reads journals only; imports no apply, transport or llm module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from runner import formats
from runner.cli.ci import failure_documents, write_junit
from runner.cli.options import JsonOpt, JunitOpt
from runner.cli.output import out
from runner.errors import EXIT_ERROR, EXIT_OK

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


@app.command("merge")
def runs_merge(
    dirs: Annotated[
        list[Path],
        typer.Argument(metavar="DIR", help="Each shard's run: a run folder (.opsrun/runs/ID), a .opsrun folder "
                                           "or a project folder (its last run)."),
    ],
    as_json: JsonOpt = False,
    fmt: Annotated[str, typer.Option("--format", help=formats.choices_text("merged"))] = "text",
    junit: JunitOpt = None,
) -> None:
    """The runs of a sharded apply (`--shard I/N` on N workers) as one recap. Exit 0 when every
    shard ran and all went well, 1 on failures or missing shards, 4 when the runs do not fit."""
    from runner import merge

    if as_json:
        fmt = "json"
    formats.check(fmt, "merged")
    with failure_documents("runs merge", fmt, junit):
        runs = [merge.find_run(d) for d in dirs]
        doc = merge.merge(runs)
    out(formats.merged(doc, fmt))
    if junit:
        from runner.ci_report import junit_merged

        write_junit(junit, junit_merged(doc, merge.planned(runs)))
    raise typer.Exit(EXIT_OK if doc["ok"] else EXIT_ERROR)


def register(parent: typer.Typer) -> None:
    parent.add_typer(app, name="runs")
