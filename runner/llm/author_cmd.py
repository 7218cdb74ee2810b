"""`opsrun author "REQUEST"`: the CLI face of runner.llm.author (cli.py calls register(app)).

It writes the playbook (or prints it) and shows the offline plan; it never applies anything.
Importing it imports neither litellm nor the gateway (they load when the command runs).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from runner.errors import EXIT_ERROR, OpsrunError
from runner.secrets import redact


def _err(text: str) -> None:
    sys.stderr.write(text if text.endswith("\n") else text + "\n")
    sys.stderr.flush()


def _out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def author(
    request: Annotated[str, typer.Argument(help="What the playbook should do, in words.")],
    out: Annotated[
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
    gateway: Annotated[
        Path | None,
        typer.Option("--gateway", "-g", envvar="OPSRUN_GATEWAY", show_default=False,
                     help="gateway file [default: ./gateway.yaml if present, else the packaged one]"),
    ] = None,
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

    try:
        if out is not None and out.exists() and not force:
            raise OpsrunError(f"{out} exists; nothing was written", hint="pass --force to overwrite it")
        if out is not None and not out.parent.is_dir():
            raise OpsrunError(f"cannot write {out}: folder {out.parent} does not exist")
        inv = config.load_inventory(inventory)
        gw = Gateway.from_file(gateway)
        file = str(out) if out is not None else "playbook.yaml"
        draft = Author(gw, inv, file=file, max_repairs=max_repairs).write(request)
    except OpsrunError as exc:
        text = exc.render() if getattr(exc, "diagnostics", None) else f"error: {exc.render()}"
        _err(redact(text))
        raise typer.Exit(exc.exit_code) from None
    tries = f" after {draft.tries} tries" if draft.tries > 1 else ""
    note = (f"-- written by {draft.answer.provider} ({draft.answer.model}) in {draft.answer.latency_s:.2f}s"
            f"{tries}; checked: schema, safety rules, offline plan")
    if out is not None:
        try:
            out.write_text(draft.text, encoding="utf-8")
        except OSError as exc:
            _err(f"error: cannot write {out}: {exc.strerror or exc}")
            raise typer.Exit(EXIT_ERROR) from None
        _err(f"{note}\nwrote {out}")
        if draft.plan is not None:
            _out(report.plan_text(draft.plan, color=report.use_color(sys.stdout)))
        _out(f"Nothing was applied. Review {out}, then: opsrun plan {out}\n")
        return
    _out(draft.text)
    _err(note)
    if draft.plan is not None:  # stdout holds only the playbook, so it can be redirected
        _err(report.plan_text(draft.plan, color=report.use_color(sys.stderr)))
    _err("Nothing was applied.")


def register(app: typer.Typer) -> None:
    """Add the `author` command to `app` (cli.py: author_cmd.register(app))."""
    app.command("author")(author)
