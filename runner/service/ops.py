"""The service's use cases that change nothing: inventory, validate, runs, gateway ask and author,
as JSON-able results with secrets masked. Imports the lower layers (llm and gateway lazily), never cli.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from runner.errors import Diagnostic, InvalidInput, OpsrunError
from runner.secrets import redact, redact_data
from runner.service.project import Project

MAX_TEXT = 1 << 20  # a playbook given as text: at most 1 MiB (load bounds files the same way)
_SECRET_VARS = ("password", "secret", "token", "key")  # inventory vars shown as *** by name


def _masked_vars(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in values.items():
        by_name = any(s in k.lower() for s in _SECRET_VARS)
        hidden = by_name and isinstance(v, str) and not v.startswith(("env:", "file:"))
        out[k] = "***" if hidden else v
    return redact_data(out)


def inventory(project: Project, inventory: str | None = None, limit: str | None = None) -> dict[str, Any]:
    """The hosts (groups, transport, inventory-side vars masked) and groups (hosts, children)."""
    from runner import config
    from runner.inventory import show

    inv = config.load_inventory(project.inventory_arg(inventory))
    config.resolve_sources(inv, limit or "all")
    names = config.match_hosts(inv, limit) if limit else [h.name for h in inv.hosts.values()]
    hosts = {
        name: {"groups": list(inv.hosts[name].groups), "transport": inv.hosts[name].transport,
               "vars": _masked_vars(show.host_vars(inv, inv.hosts[name]))}
        for name in names if name in inv.hosts
    }
    children, own = show._tree(inv)
    groups = {g: {"hosts": [h for h in own.get(g, []) if h in hosts], "children": children.get(g, [])}
              for g in inv.groups}
    return {"inventory": inv.file, "hosts": hosts, "groups": groups,
            "warnings": [redact(d.render()) for d in inv.warnings]}


def _diag(d: Diagnostic) -> dict[str, Any]:
    return {"file": d.file, "line": d.line, "col": d.col, "message": redact(d.message), "hint": redact(d.hint),
            **({"path": d.path} if d.path else {})}


def check(project: Project, *, text: str | None = None, path: str | None = None,
          inventory: str | None = None, variables: dict[str, Any] | None = None,
          name: str = "playbook.yaml") -> tuple[list[Diagnostic], list[Diagnostic]]:
    """(errors, warnings) of one document given as text or as a path inside the project."""
    from runner import config, load, validation

    if (text is None) == (path is None):
        raise InvalidInput("give the playbook either as text or as a path inside the project")
    file = project.inside(str(path)) if path is not None else None  # refused, not reported, outside
    errors: list[Diagnostic] = []
    warnings: list[Diagnostic] = []
    inv = None
    try:
        inv = config.load_inventory(project.inventory_arg(inventory))
    except OpsrunError as exc:
        errors += validation.located(exc, inventory or "inventory")
    try:
        if text is not None:
            if len(text.encode("utf-8", "replace")) > MAX_TEXT:
                raise InvalidInput(f"{name}: the playbook is larger than {MAX_TEXT // (1 << 20)} MiB")
            doc = load.parse(text, name)
        else:
            doc = load.read(str(file))
    except OpsrunError as exc:
        return errors + validation.located(exc, name if text is not None else str(path)), warnings
    _, found, more = validation.check_document(doc, inv, dict(variables or {}))
    return errors + found, warnings + more


def validate(project: Project, *, text: str | None = None, path: str | None = None,
             inventory: str | None = None) -> dict[str, Any]:
    """{"ok", "errors": [{file, line, col, message, hint}], "warnings": [str]}: schema, semantic
    and offline checks, as `opsrun validate` makes them."""
    errors, warnings = check(project, text=text, path=path, inventory=inventory)
    return {"ok": not errors, "errors": [_diag(d) for d in errors], "warnings": [redact(w.render()) for w in warnings]}


def runs(project: Project, limit: int = 20) -> list[dict[str, Any]]:
    """The last `limit` runs, newest first, as `opsrun runs list --json` lists them."""
    from runner import journal, report

    rows: list[dict[str, Any]] = json.loads(report.runs_json(journal.list_runs(project.state)))
    return list(reversed(rows))[: max(limit, 0)]


def run(project: Project, run_id: str) -> dict[str, Any]:
    """One run, as `opsrun runs show --json` shows it (outcome, per-host summary, events)."""
    from runner import journal, report

    if not run_id or "/" in run_id or run_id.startswith("."):
        raise InvalidInput(f"no run '{run_id}'")
    doc: dict[str, Any] = json.loads(report.run_json(journal.get_run(run_id, project.state)))
    return redact_data(doc)


_gateways: dict[Path, Any] = {}
_gateways_lock = threading.Lock()


def gateway(project: Project) -> Any:
    """The project's gateway (gateway.yaml in its folder, else the packaged one): one per
    project in this process, so every client shares its rate limit and circuit breaker."""
    with _gateways_lock:
        gw = _gateways.get(project.root)
        if gw is None:
            from runner.gateway import Gateway

            own = project.root / "gateway.yaml"
            gw = Gateway.from_file(own if own.is_file() else None, state_dir=project.state)
            _gateways[project.root] = gw
        return gw


def ask(project: Project, prompt: str, *, task: str | None = None) -> dict[str, Any]:
    """One question to the gateway: {"text", "provider", "model", "latency_s", "cached", "usage"}."""
    answer = gateway(project).complete([{"role": "user", "content": prompt}], task=task or "ask")
    return {"text": redact(answer.text), "provider": answer.provider, "model": answer.model,
            "latency_s": answer.latency_s, "cached": answer.cached, "usage": dict(answer.usage)}


def author(project: Project, request: str, *, inventory: str | None = None) -> dict[str, Any]:
    """A playbook written by the model and held to a person's gates; nothing is written.
    {"playbook": text, "ok", "errors": [...], "rounds": n}"""
    from runner import config
    from runner.llm.author import Author, AuthorError

    inv = config.load_inventory(project.inventory_arg(inventory))
    try:
        draft = Author(gateway(project), inv, file="playbook.yaml").write(request)
    except AuthorError as exc:
        return {"playbook": "", "ok": False, "errors": [_diag(d) for d in exc.diagnostics] or
                [{"file": "", "line": 0, "col": 0, "message": exc.message, "hint": exc.hint}], "rounds": exc.tries}
    return {"playbook": redact(draft.text), "ok": True, "errors": [], "rounds": draft.tries,
            "provider": draft.answer.provider, "model": draft.answer.model}
