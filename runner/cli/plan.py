"""`opsrun plan`: its command-line signature for typer; the run itself is runner.cli.plan_run
(which runner.cli.main also calls straight, without typer). Imports no apply or llm module.
"""

from __future__ import annotations

from typing import Annotated

import typer

from runner import formats
from runner.cli.options import (
    ForksOpt,
    InventoryOpt,
    JsonOpt,
    JunitOpt,
    LimitOpt,
    ShardOpt,
    SkipTagsOpt,
    TagsOpt,
    VarOpt,
)


def plan(
    playbook: Annotated[str, typer.Argument(help="The playbook to plan.")],
    inventory: InventoryOpt = None,
    var: VarOpt = None,
    limit: LimitOpt = None,
    shard: ShardOpt = None,
    tags: TagsOpt = None,
    skip_tags: SkipTagsOpt = None,
    forks: ForksOpt = None,
    offline: Annotated[bool, typer.Option("--offline", help="Do not probe hosts: every step shows as '?'.")] = False,
    out_file: Annotated[
        str | None, typer.Option("--out", "-o", help="Save the plan (JSON) for `opsrun apply FILE`.")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help=formats.choices_text("plan"))] = "text",
    as_json: JsonOpt = False,
    detailed_exitcode: Annotated[
        bool, typer.Option("--detailed-exitcode", help="Exit 2 when there are changes, 0 when none, 1 on error.")
    ] = False,
    junit: JunitOpt = None,
) -> None:
    """Dry run: what would change on each host, with the exact commands and diffs."""
    from runner.cli.plan_run import run_plan

    raise typer.Exit(run_plan(playbook, inventory, var, limit, shard, tags, skip_tags, forks, offline, out_file,
                              fmt, as_json, detailed_exitcode, junit))


def register(app: typer.Typer) -> None:
    app.command()(plan)
