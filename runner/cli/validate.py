"""`opsrun validate`: schema, semantic and offline checks of playbooks, inventories and gateway
files, as located errors. Imports no transport, apply or llm module (each loads inside the command).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import typer

from runner.cli.ci import JunitOpt, annotate, write_junit
from runner.cli.options import InventoryOpt, JsonOpt, VarOpt
from runner.cli.output import err, out
from runner.errors import EXIT_INVALID, EXIT_OK, Diagnostic, OpsrunError

# The marker of an opsrun file: a top-level `opsrun:` key (block style, the way every opsrun
# file starts), looked for in the raw text so YAML that does not even parse can be skipped.
_MARKER = re.compile(rb"^[\"']?opsrun[\"']?[ \t]*:", re.MULTILINE)
_MARKER_BYTES = 1 << 20


def validate(
    paths: Annotated[list[str], typer.Argument(help="Playbook/inventory files or folders.")],
    inventory: InventoryOpt = None,
    var: VarOpt = None,
    as_json: JsonOpt = False,
    skip_other: Annotated[
        bool,
        typer.Option("--skip-other", help="Skip YAML files without the `opsrun:` marker, even when named "
                                          "(pre-commit passes every *.yaml it sees)."),
    ] = False,
    junit: JunitOpt = None,
) -> None:
    """Check playbooks and inventories against the JSON Schema, for semantic mistakes and for
    what plan would find without a host (undefined variables per host, missing sources)."""
    import gc

    gc.disable()  # a short run over one big object graph: collections only cost time (#11)
    results, checked, warnings = _check(paths, inventory, var, skip_other)
    diags = [d for _, found in results for d in found]
    annotate([*diags, *warnings], machine_stdout=as_json)
    write_junit(junit, _junit(results, warnings))
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
        skipped = sum(1 for c in checked if c.get("skipped"))
        also = f", {skipped} other YAML skipped" if skipped else ""
        if diags:
            err(f"{len(diags)} error{'s' if len(diags) != 1 else ''} in {len(checked)} file(s)")
        else:
            extra = f" ({len(warnings)} warning{'s' if len(warnings) != 1 else ''})" if warnings else ""
            out(f"ok: {n} file{'s' if n != 1 else ''} valid{extra}{also}\n")
    raise typer.Exit(EXIT_INVALID if diags else EXIT_OK)


Results = list[tuple[str, list[Diagnostic]]]  # (checked file, its errors), in order


def _check(
    paths: list[str], inventory: str | None, var: list[str] | None, skip_other: bool
) -> tuple[Results, list[dict[str, Any]], list[Diagnostic]]:
    """Every file checked: its errors, the `files` entries of the JSON document, warnings."""
    from runner import config, load, validation

    files = load.yaml_files(paths)
    results: Results = []
    checked: list[dict[str, Any]] = []
    inv = None
    warnings: list[Diagnostic] = []
    try:
        inv = config.load_inventory(inventory)
        warnings += list(inv.warnings)
    except OpsrunError as exc:
        results.append((inventory or "inventory", _located(exc, inventory or "inventory")))
    cli_vars: dict[str, Any] = {}
    try:
        cli_vars = config.parse_cli_vars(list(var or []))
    except OpsrunError as exc:
        results.append(("--var", _located(exc, "--var")))
    explicit = {str(Path(p)) for p in paths if not Path(p).is_dir()}
    for f in files:
        if skip_other and _has_marker(f) is False:
            checked.append({"file": str(f), "kind": None, "valid": True, "skipped": True})
            continue
        try:
            doc = load.read(f)
        except OpsrunError as exc:
            results.append((str(f), _located(exc, str(f))))
            checked.append({"file": str(f), "kind": None, "valid": False})
            continue
        kind, found, more = validation.check_document(doc, inv, cli_vars, explicit=str(f) in explicit)
        warnings += more
        if kind is not None or found:  # a YAML file found in a folder that is not ours: not a case
            results.append((str(f), found))
        checked.append({"file": str(f), "kind": kind, "valid": not found})
    if not files:
        results.append((" ".join(paths), [Diagnostic(" ".join(paths), 0, 0, "no YAML files found")]))
    return results, checked, warnings


def _located(exc: OpsrunError, where: str) -> list[Diagnostic]:
    from runner.validation import located

    return located(exc, where)


def _has_marker(path: Path) -> bool | None:
    """Whether the file has the `opsrun:` marker; None when it cannot be read (validate says why)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(_MARKER_BYTES)
    except OSError:
        return None
    return _MARKER.search(head) is not None


def _junit(results: Results, warnings: list[Diagnostic]) -> str:
    """One test case per checked file; the warnings are the output of the file they name."""
    from runner.ci_report import junit_validate

    return junit_validate((f, found + [w for w in warnings if w.file == f]) for f, found in results)


def register(app: typer.Typer) -> None:
    app.command()(validate)
