"""`opsrun plan` run: the dry run (what would change on each host, exact commands and diffs),
optionally saved for `apply FILE`. Imports no typer, no apply or llm module; the planner inside.
"""

from __future__ import annotations

import sys
from pathlib import Path

from runner import formats
from runner.cli.ci import failure_documents, write_junit
from runner.cli.output import err, out
from runner.errors import EXIT_CHANGES, EXIT_ERROR, EXIT_OK, OpsrunError


def run_plan(
    playbook: str,
    inventory: str | None = None,
    var: list[str] | None = None,
    limit: str | None = None,
    shard: str | None = None,
    tags: list[str] | None = None,
    skip_tags: list[str] | None = None,
    forks: int | None = None,
    offline: bool = False,
    out_file: str | None = None,
    fmt: str = "text",
    as_json: bool = False,
    detailed_exitcode: bool = False,
    junit: str | None = None,
) -> int:
    """Dry run: what would change on each host, with the exact commands and diffs; the exit code."""
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
        return EXIT_ERROR
    if detailed_exitcode and the_plan.has_changes:
        return EXIT_CHANGES
    return EXIT_OK



def _save_plan(path: Path, text: str) -> None:
    """A saved plan holds diffs of private files: written 0600, atomically."""
    from runner.files import write_private

    try:
        write_private(path, text.encode())
    except OSError as exc:
        raise OpsrunError(f"cannot write the plan to {path}: {exc.strerror or exc}") from None
