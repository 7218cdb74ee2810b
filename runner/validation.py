"""What validate finds in one opsrun document (playbook, inventory or gateway file): its errors
and warnings, without a host. Shared by `opsrun validate` and the service; imports no transport.
"""

from __future__ import annotations

from typing import Any

from runner.errors import Diagnostic, OpsrunError
from runner.model import Inventory


def check_document(
    doc: Any, inventory: Inventory | None, cli_vars: dict[str, Any], *, explicit: bool = True
) -> tuple[str | None, list[Diagnostic], list[Diagnostic]]:
    """(kind, errors, warnings) of a read document (runner.load.Document). kind None: not an
    opsrun file (an error when `explicit`, the file was named rather than found in a folder)."""
    from runner import config, schema
    from runner.inventory.ansible import looks_like_ansible_yaml

    kind = schema.detect(doc)
    if kind is None and looks_like_ansible_yaml(doc.data):  # an Ansible inventory: read as -i reads it
        found = config.check_inventory(str(doc.file))
        return "inventory", [d for d in found if d.severity == "error"], [d for d in found if d.severity != "error"]
    if kind is None:
        errors = [Diagnostic(
            str(doc.file), 1, 1, "not an opsrun playbook, inventory or gateway file",
            hint="a playbook has 'opsrun: 1' and 'steps:'; pass --skip-other to skip other YAML",
        )] if explicit else []
        return None, errors, []
    warnings: list[Diagnostic] = []
    try:
        if kind == "playbook":
            from runner import offline

            found = offline.validate_playbook(doc, inventory, cli_vars)
            if not found and inventory is not None:
                warnings = conflicts(doc, inventory, cli_vars)
        elif kind == "inventory":
            found = schema.validate_inventory(doc)
        else:
            found = schema.validate_gateway(doc)
    except OpsrunError as exc:  # a check that stops on the file still names it
        found = located(exc, str(doc.file))
    return kind, found, warnings


def located(exc: OpsrunError, where: str) -> list[Diagnostic]:
    """The error's located diagnostics, or one naming `where`."""
    found = list(getattr(exc, "diagnostics", None) or [])
    return found or [Diagnostic(where, 0, 0, exc.message, hint=exc.hint)]


def conflicts(doc: Any, inv: Any, cli_vars: dict[str, Any]) -> list[Any]:
    """Warnings for steps that can never converge (planned on a blank host, no I/O)."""
    from runner import config, schema
    from runner.plan_conflicts import conflict_diagnostics

    try:
        playbook = config.build_playbook(doc, set(schema.kind_names()))
        return conflict_diagnostics(playbook, inv, cli_vars)
    except Exception:  # a warning pass never fails validate: errors are reported elsewhere
        return []
