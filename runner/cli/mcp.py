"""`opsrun mcp --project DIR`: the MCP server of a project on stdio, for an MCP client (Claude
Desktop and the like) that starts it. Imports the `mcp` SDK inside the command only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from runner.errors import EXIT_OK, MissingExtra


def mcp_cmd(
    project: Annotated[
        Path, typer.Option("--project", "-C", help="The project folder (playbooks, inventory, gateway.yaml; "
                                                   "state in its .opsrun/).")
    ] = Path("."),
    worker: Annotated[
        bool, typer.Option("--worker/--no-worker", help="Run approved jobs in this process (--no-worker: "
                                                        "`opsrun jobs work` or `opsrun serve` runs them).")
    ] = True,
    auto_approve: Annotated[
        int | None, typer.Option("--auto-approve", metavar="MAX_CHANGES", show_default=False,
                                 help="Approve by policy the plans with at most MAX_CHANGES changes, no blocked "
                                      "(!) step and no lifted safety rule; default: a person approves every plan.")
    ] = None,
) -> None:
    """Serve the project's tools (inventory, validate, plan, apply, jobs, runs, ask, author) and
    resources (schemas, playbooks, run journals) over MCP on stdin/stdout. Applying a plan needs
    a person's approval (`opsrun approve PLAN_ID`) unless --auto-approve allows it."""
    try:
        import mcp  # noqa: F401
    except ImportError as exc:
        raise MissingExtra("serve", "the MCP server (mcp)") from exc
    from runner.approval_policy import AutoLimits
    from runner.mcp import stdio
    from runner.service.project import Project

    proj = Project.at(project)
    os.chdir(proj.root)  # relative paths in the project (inventory, vars files) read as a person's would
    limits = AutoLimits(max_changes=auto_approve) if auto_approve is not None else None
    stdio.serve(proj, worker=worker, auto_limits=limits)
    raise typer.Exit(EXIT_OK)


def register(app: typer.Typer) -> None:
    app.command("mcp")(mcp_cmd)
