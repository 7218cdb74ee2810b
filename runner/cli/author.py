"""`opsrun author "REQUEST"`: the terminal side of runner.llm.author: writes the playbook (or
prints it) and shows the offline plan; never applies. Imports neither litellm nor the gateway at load.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from runner.cli.options import GatewayOpt
from runner.cli.output import err, out, user_errors
from runner.errors import EXIT_ERROR, OpsrunError


def author(
    request: Annotated[str, typer.Argument(help="What the playbook should do, in words.")],
    out_file: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write the playbook here (default: print it on stdout).",
                     show_default=False),
    ] = None,
    inventory: Annotated[
        str | None,
        typer.Option("--inventory", "-i",
                     help="Inventory whose hosts and groups the playbook may use "
                          "(default: ./inventory.yaml, else the embedded one with `local`)."),
    ] = None,
    gateway: GatewayOpt = None,
    max_repairs: Annotated[
        int, typer.Option("--max-repairs", min=0, max=10,
                          help="How many times the model may repair a playbook our checks rejected.")
    ] = 3,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
) -> None:
    """Ask the LLM to write a playbook: validated against the schema (errors fed back for
    repair), checked against the safety rules, then shown as an offline plan. Nothing is applied.
    Exit 0 written, 1 no model answered / still invalid / refused by a safety rule, 4 bad input."""
    from runner import config, report
    from runner.gateway import Gateway
    from runner.llm.author import Author

    with user_errors():
        if out_file is not None and out_file.exists() and not force:
            raise OpsrunError(f"{out_file} exists; nothing was written", hint="pass --force to overwrite it")
        if out_file is not None and not out_file.parent.is_dir():
            raise OpsrunError(f"cannot write {out_file}: folder {out_file.parent} does not exist")
        inv = config.load_inventory(inventory)
        gw = Gateway.from_file(gateway)
        file = str(out_file) if out_file is not None else "playbook.yaml"
        draft = Author(gw, inv, file=file, max_repairs=max_repairs).write(request)
    tries = f" after {draft.tries} tries" if draft.tries > 1 else ""
    note = (f"-- written by {draft.answer.provider} ({draft.answer.model}) in {draft.answer.latency_s:.2f}s"
            f"{tries}; checked: schema, safety rules, offline plan")
    if out_file is not None:
        try:
            out_file.write_text(draft.text, encoding="utf-8")
        except OSError as exc:
            err(f"error: cannot write {out_file}: {exc.strerror or exc}")
            raise typer.Exit(EXIT_ERROR) from None
        err(f"{note}\nwrote {out_file}")
        if draft.plan is not None:
            out(report.plan_text(draft.plan, color=report.use_color(sys.stdout)))
        out(f"Nothing was applied. Review {out_file}, then: opsrun plan {out_file}\n")
        return
    out(draft.text)
    err(note)
    if draft.plan is not None:  # stdout holds only the playbook, so it can be redirected
        err(report.plan_text(draft.plan, color=report.use_color(sys.stderr)))
    err("Nothing was applied.")


def register(app: typer.Typer) -> None:
    app.command("author")(author)
