"""Command-line options shared by several commands (typer Annotated types).
Imports only typer: option types cost nothing at start-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

InventoryOpt = Annotated[
    str | None,
    typer.Option(
        "--inventory", "-i", help="Inventory file (default: ./inventory.yaml, else the embedded one with `local`)."
    ),
]
VarOpt = Annotated[
    list[str] | None, typer.Option("--var", "-e", help="Set a variable: NAME=VALUE or @vars.yaml (highest precedence).")
]
LimitOpt = Annotated[str | None, typer.Option("--limit", "-l", help="Only these hosts/groups (pattern).")]
TagsOpt = Annotated[list[str] | None, typer.Option("--tags", "-t", help="Only steps with these tags.")]
SkipTagsOpt = Annotated[list[str] | None, typer.Option("--skip-tags", help="Skip steps with these tags.")]
ForksOpt = Annotated[
    int | None, typer.Option("--forks", "-f", min=1, help="Hosts worked on in parallel (default: all, up to 64).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
GatewayOpt = Annotated[
    Path | None,
    typer.Option("--gateway", "-g", envvar="OPSRUN_GATEWAY", show_default=False,
                 help="gateway file [default: ./gateway.yaml if present, else the packaged one]"),
]
ShardOpt = Annotated[
    str | None,
    typer.Option("--shard", metavar="I/N", show_default=False,
                 help="Only shard I of N of the selected hosts (a stable split for parallel CI workers; "
                      "default: GitLab's CI_NODE_INDEX/CI_NODE_TOTAL, or JOB_COMPLETION_INDEX with "
                      "OPSRUN_SHARD_TOTAL)."),
]
JunitOpt = Annotated[
    str | None,
    typer.Option("--junit", metavar="FILE", help="Also write a JUnit XML report here (CI test reports).",
                 show_default=False),
]
