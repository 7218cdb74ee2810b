"""`opsrun approve PLAN_ID` (a person approves a stored plan at the terminal, bound to its digest)
and `opsrun plans create|list|show`: the terminal side of runner.service's plan store and approvals.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from runner.cli.options import InventoryOpt, JsonOpt, LimitOpt, SkipTagsOpt, TagsOpt, VarOpt
from runner.cli.output import err, out
from runner.errors import EXIT_ERROR, EXIT_OK, OpsrunError

ProjectOpt = Annotated[
    str, typer.Option("--project", "-C", metavar="DIR", help="The project folder (its state: DIR/.opsrun, "
                                                             "or OPSRUN_STATE_DIR).")
]

app = typer.Typer(help="Plans stored for approval (.opsrun/plans/): made here, by `opsrun serve` or an MCP client.",
                  no_args_is_help=True)


def approve(
    plan_id: Annotated[str, typer.Argument(help="The stored plan's id (opsrun plans list).")],
    digest: Annotated[
        str | None,
        typer.Option("--digest", help="Approve only if the plan still has this digest (the one you reviewed)."),
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask (a script that checked the plan itself).")
    ] = False,
    project: ProjectOpt = ".",
) -> None:
    """Show a stored plan (markdown and digest) and approve it: jobs may then apply exactly
    that plan. Asks y/N unless --yes; --digest binds the approval to what you saw."""
    from runner.service import approvals, plans
    from runner.service.project import Project, terminal_user

    proj = Project.at(project)
    plan = plans.get_plan(proj, plan_id)
    out(plan.markdown)
    out(f"\nplan {plan.id} by {plan.actor} ({plan.origin}), {plan.created}\ndigest: {plan.digest}\n")
    if digest is not None and digest != plan.digest:
        approvals.approve(proj, plan.id, approver=terminal_user(), how="terminal", digest=digest)  # refused, audited
    if not yes:
        if not sys.stdin.isatty():
            raise OpsrunError("not approving: no terminal to confirm on",
                              hint=f"review it, then: opsrun approve {plan.id} --yes --digest {plan.digest}")
        if not typer.confirm("Approve this plan?", default=False):
            err("not approved")
            raise typer.Exit(EXIT_ERROR)
    got = approvals.approve(proj, plan.id, approver=terminal_user(), how="terminal", digest=digest or plan.digest)
    out(f"approved plan {got.plan_id} ({got.digest}) as {got.approver}; submit it: opsrun jobs submit {got.plan_id}\n")
    raise typer.Exit(EXIT_OK)


@app.command("create")
def plans_create(
    playbook: Annotated[str, typer.Argument(help="The playbook, a path inside the project.")],
    inventory: InventoryOpt = None,
    var: VarOpt = None,
    limit: LimitOpt = None,
    tags: TagsOpt = None,
    skip_tags: SkipTagsOpt = None,
    as_json: JsonOpt = False,
    project: ProjectOpt = ".",
) -> None:
    """Plan a playbook and store the plan for approval (nothing changes on any host)."""
    from runner import config
    from runner.service import plans
    from runner.service.project import Project, terminal_user

    proj = Project.at(project)
    rec = plans.create_plan(proj, path=playbook, inventory=inventory, limit=limit, tags=tags or (),
                            skip_tags=skip_tags or (), vars=config.parse_cli_vars(list(var or [])),
                            actor=terminal_user(), origin="cli")
    if as_json:
        out(json.dumps(rec.to_json(), indent=2) + "\n")
        return
    out(rec.markdown)
    out(f"\nstored plan {rec.id}\ndigest: {rec.digest}\napprove it: opsrun approve {rec.id}\n")


@app.command("list")
def plans_list(
    as_json: JsonOpt = False,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many, newest first.")] = 50,
    project: ProjectOpt = ".",
) -> None:
    """The stored plans, newest first: id, who made them, changes, approved or not."""
    from runner.service import plans
    from runner.service.project import Project

    rows = [p.summary() for p in plans.list_plans(Project.at(project), limit)]
    if as_json:
        out(json.dumps(rows, indent=2) + "\n")
        return
    if not rows:
        out("no plans yet\n")
        return
    out(f"{'plan':25} {'created':24} {'by':12} {'origin':6} {'changes':>7} approved  playbook\n")
    for r in rows:
        out(f"{r['id']:25} {r['created'][:23]:24} {r['actor'][:12]:12} {r['origin']:6} "
            f"{r['counts'].get('change', 0):>7} {'yes' if r['approved'] else 'no':9} {r['playbook']}\n")


@app.command("show")
def plans_show(
    plan_id: Annotated[str, typer.Argument(help="The stored plan's id.")],
    as_json: JsonOpt = False,
    project: ProjectOpt = ".",
) -> None:
    """One stored plan: its markdown, digest and approval (--json: the plan document too)."""
    from runner.service import approvals, plans
    from runner.service.project import Project

    proj = Project.at(project)
    rec = plans.get_plan(proj, plan_id)
    approval = approvals.approval_of(proj, plan_id)
    if as_json:
        out(json.dumps({**rec.to_json(), "approval": approval.to_json() if approval else None}, indent=2) + "\n")
        return
    out(rec.markdown)
    who = f"approved by {approval.approver} ({approval.how}) at {approval.at}" if approval else "not approved"
    out(f"\nplan {rec.id} by {rec.actor} ({rec.origin}), {rec.created}\ndigest: {rec.digest}\n{who}\n")


def register(parent: typer.Typer) -> None:
    parent.command("approve")(approve)
    parent.add_typer(app, name="plans")
