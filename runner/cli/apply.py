"""`opsrun apply`: its command-line signature for typer; the run itself is runner.cli.apply_run
(which runner.cli.main also calls straight, without typer). Imports apply and llm only inside.
"""

from __future__ import annotations

from typing import Annotated

import typer

from runner.cli.options import ForksOpt, InventoryOpt, JunitOpt, LimitOpt, ShardOpt, SkipTagsOpt, TagsOpt, VarOpt
from runner.cli.output import CommandExit


def apply(
    target: Annotated[
        str | None, typer.Argument(help="A playbook, or a plan file saved with `plan -o`.", show_default=False)
    ] = None,
    inventory: InventoryOpt = None,
    var: VarOpt = None,
    limit: LimitOpt = None,
    shard: ShardOpt = None,
    run_id: Annotated[
        str | None,
        typer.Option("--run-id", metavar="ID", show_default=False,
                     help="The run id every shard of this run shares, for `runs merge` "
                          "(default with --shard: GITHUB_RUN_ID or GitLab's CI_PIPELINE_ID)."),
    ] = None,
    tags: TagsOpt = None,
    skip_tags: SkipTagsOpt = None,
    forks: ForksOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    allow_drift: Annotated[
        bool, typer.Option("--allow-drift", help="Apply a saved plan even if the hosts' state moved since.")
    ] = False,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume", help="Continue RUN_ID (after a crash or a human's fix): steps that finished are not re-run."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Stream events as JSON lines (for CI).")] = False,
    junit: JunitOpt = None,
) -> None:
    """Plan, confirm, then make the changes (or apply a saved plan exactly, or resume a run)."""
    from runner.cli.apply_run import run_apply

    try:
        code = run_apply(target, inventory, var, limit, shard, run_id, tags, skip_tags, forks, yes, allow_drift,
                         resume, as_json, junit)
    except CommandExit as stop:
        code = stop.code
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command()(apply)
