"""`opsrun validate`: schema, semantic and offline checks of playbooks, inventories and gateway
files, as located errors. Imports no transport, apply or llm module (each loads inside the command).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from runner.cli.options import InventoryOpt, JsonOpt, VarOpt
from runner.cli.output import err, out
from runner.errors import EXIT_INVALID, EXIT_OK, InvalidInput


def validate(
    paths: Annotated[list[str], typer.Argument(help="Playbook/inventory files or folders.")],
    inventory: InventoryOpt = None,
    var: VarOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check playbooks and inventories against the JSON Schema, for semantic mistakes and for
    what plan would find without a host (undefined variables per host, missing sources)."""
    import gc

    from runner import config, load, offline, schema
    from runner.errors import Diagnostic

    gc.disable()  # a short run over one big object graph: collections only cost time (#11)
    files = load.yaml_files(paths)
    diags: list[Diagnostic] = []
    checked: list[dict[str, Any]] = []
    inv = None
    try:
        inv = config.load_inventory(inventory)
    except InvalidInput as exc:
        diags += exc.diagnostics or [Diagnostic(inventory or "inventory", 0, 0, exc.message)]
    cli_vars = config.parse_cli_vars(list(var or []))
    explicit = {str(Path(p)) for p in paths if not Path(p).is_dir()}
    warnings: list[Diagnostic] = []
    for f in files:
        try:
            doc = load.read(f)
        except InvalidInput as exc:
            diags += exc.diagnostics
            checked.append({"file": str(f), "kind": None, "valid": False})
            continue
        kind = schema.detect(doc)
        if kind is None:
            if str(f) in explicit:
                diags.append(
                    Diagnostic(
                        str(f),
                        1,
                        1,
                        "not an opsrun playbook, inventory or gateway file",
                        hint="a playbook has 'opsrun: 1' and 'steps:'",
                    )
                )
            checked.append({"file": str(f), "kind": None, "valid": str(f) not in explicit})
            continue
        if kind == "playbook":
            found = offline.validate_playbook(doc, inv, cli_vars)
            if not found and inv is not None:
                warnings += _conflicts(doc, inv, cli_vars)
        elif kind == "inventory":
            found = schema.validate_inventory(doc)
        else:
            found = schema.validate_gateway(doc)
        diags += found
        checked.append({"file": str(f), "kind": kind, "valid": not found})
    if not files:
        diags.append(Diagnostic(" ".join(paths), 0, 0, "no YAML files found"))
    if as_json:
        doc_out = {
            "valid": not diags,
            "files": checked,
            "errors": [d.as_dict() for d in diags],
            "warnings": [d.as_dict() for d in warnings],
        }
        out(json.dumps(doc_out, indent=2) + "\n")
    else:
        for d in [*diags, *warnings]:
            err(d.render())
        n = sum(1 for c in checked if c["kind"])
        if diags:
            err(f"{len(diags)} error{'s' if len(diags) != 1 else ''} in {len(files)} file(s)")
        else:
            extra = f" ({len(warnings)} warning{'s' if len(warnings) != 1 else ''})" if warnings else ""
            out(f"ok: {n} file{'s' if n != 1 else ''} valid{extra}\n")
    raise typer.Exit(EXIT_INVALID if diags else EXIT_OK)


def _conflicts(doc: Any, inv: Any, cli_vars: dict[str, Any]) -> list[Any]:
    """Warnings for steps that can never converge (planned on a blank host, no I/O)."""
    from runner import config, schema
    from runner.planner import conflict_diagnostics

    try:
        playbook = config.build_playbook(doc, set(schema.kind_names()))
        return conflict_diagnostics(playbook, inv, cli_vars)
    except Exception:  # a warning pass never fails validate: errors are reported elsewhere
        return []


def register(app: typer.Typer) -> None:
    app.command()(validate)
