"""`opsrun inventory --list / --graph / --host NAME`: the inventory as opsrun sees it (Ansible
formats, group_vars/, Proxmox guests). Imports the inventory modules inside the command only.
"""

from __future__ import annotations

from typing import Annotated

import typer

from runner.cli.options import InventoryOpt
from runner.cli.output import err, out
from runner.errors import EXIT_OK


def inventory_cmd(
    group: Annotated[str | None, typer.Argument(help="With --graph: only this group.", show_default=False)] = None,
    inventory: InventoryOpt = None,
    list_: Annotated[
        bool, typer.Option("--list", help="Groups and every host's variables as JSON (Ansible's format).")
    ] = False,
    graph: Annotated[bool, typer.Option("--graph", help="The groups and their hosts as a tree.")] = False,
    host: Annotated[str | None, typer.Option("--host", help="One host's variables as JSON.")] = None,
    playbook_dir: Annotated[
        str | None, typer.Option("--playbook-dir", help="Also read group_vars/ and host_vars/ there.")
    ] = None,
) -> None:
    """Show the inventory as opsrun sees it (Ansible formats, group_vars/, Proxmox guests)."""
    from runner import config
    from runner.inventory import show

    inv = config.load_inventory(inventory)
    text = show.render(inv, list_=list_, graph=graph, host=host, group=group, playbook_dir=playbook_dir)
    for d in inv.warnings:
        err(d.render())
    out(text if text.endswith("\n") else text + "\n")
    raise typer.Exit(EXIT_OK)


def register(app: typer.Typer) -> None:
    app.command("inventory")(inventory_cmd)
