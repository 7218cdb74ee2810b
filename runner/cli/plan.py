"""`opsrun plan`: the dry run (what would change on each host, exact commands and diffs),
optionally saved for `apply FILE`. Imports no apply or llm module; the planner loads inside the command.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from runner import formats
from runner.cli.ci import JunitOpt, failure_documents, write_junit
from runner.cli.options import ForksOpt, InventoryOpt, JsonOpt, LimitOpt, ShardOpt, SkipTagsOpt, TagsOpt, VarOpt
from runner.cli.output import err, out
from runner.errors import EXIT_CHANGES, EXIT_ERROR, EXIT_OK, OpsrunError


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
    import os

    from runner import report
    from runner import shard as shards
    from runner.planner import make_plan
    from runner.session import open_session, select_hosts, split_names

    if as_json:
        fmt = "json"
    formats.check(fmt, "plan")
    with failure_documents("plan", fmt, junit):
        part = shards.resolve(shard, os.environ)
        with open_session(playbook, inventory, var) as session:
            selected = select_hosts(session.inventory, session.playbook, limit)
            for d in session.inventory.warnings:  # Ansible variables with no equivalent, Proxmox sources
                err(d.render())
            hosts = shards.select(selected, part)
            if part is not None:
                err(shards.note(part, hosts, selected))
            the_plan, _ = make_plan(
                session,
                hosts,
                tags=split_names(tags),
                skip_tags=split_names(skip_tags),
                offline=offline,
                forks=forks,
                limit=limit,
            )
            the_plan.shard = str(part) if part else None
        if out_file:
            _save_plan(Path(out_file), report.plan_json(the_plan))
    if junit:
        from runner.ci_report import junit_plan
        from runner.plan import to_json

        write_junit(junit, junit_plan(to_json(the_plan)))
    out(formats.plan(the_plan, fmt, color=report.use_color(sys.stdout)))
    if out_file and fmt == "text":  # the machine formats stay one document
        out(f"Saved plan to {out_file}; apply it exactly with: opsrun apply {out_file}\n")
    if the_plan.unreachable:
        raise typer.Exit(EXIT_ERROR)
    if detailed_exitcode and the_plan.has_changes:
        raise typer.Exit(EXIT_CHANGES)
    raise typer.Exit(EXIT_OK)


def _save_plan(path: Path, text: str) -> None:
    """A saved plan holds diffs of private files: written 0600, atomically."""
    from runner.files import write_private

    try:
        write_private(path, text.encode())
    except OSError as exc:
        raise OpsrunError(f"cannot write the plan to {path}: {exc.strerror or exc}") from None


def register(app: typer.Typer) -> None:
    app.command()(plan)
