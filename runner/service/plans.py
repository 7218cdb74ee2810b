"""The plan store: a plan made through the service passes a person's gates (schema, semantic and
offline checks, safety rules in the plan) and is kept under state/plans/<id>/. Imports no cli.

Each plan folder holds plan.json (the saved-plan format `apply` accepts), plan.md, meta.json,
playbook.yaml when the playbook came as text, and approval.json once approved (approvals.py).
"""

from __future__ import annotations

import json
import re
import secrets as _random
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runner.approval_policy import plan_digest
from runner.errors import InvalidInput, OpsrunError
from runner.files import open_private, write_private
from runner.journal import now_iso
from runner.secrets import redact_data
from runner.service import audit
from runner.service.project import Project

ORIGINS = ("cli", "http", "mcp", "do")
_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}$")


@dataclass
class PlanRecord:
    """A stored plan: its document (plan.json), digest, markdown and who made it from what."""

    id: str
    digest: str
    created: str
    actor: str
    origin: str
    playbook: str
    doc: dict[str, Any]
    markdown: str
    meta: dict[str, Any] = field(default_factory=dict)
    dir: Path | None = None

    @property
    def plan_file(self) -> Path:
        assert self.dir is not None
        return self.dir / "plan.json"

    def approved(self) -> bool:
        """An approval bound to this digest exists (approval.json)."""
        if self.dir is None:
            return False
        try:
            data = json.loads((self.dir / "approval.json").read_text())
        except (OSError, ValueError):
            return False
        return isinstance(data, dict) and data.get("digest") == self.digest

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "digest": self.digest,
            "created": self.created,
            "actor": self.actor,
            "origin": self.origin,
            "playbook": self.playbook,
            "counts": dict(self.doc.get("summary") or {}),
            "hosts": list(self.doc.get("hosts") or []),
            "unreachable": sorted(self.doc.get("unreachable") or {}),
            "approved": self.approved(),
        }

    def to_json(self) -> dict[str, Any]:
        """The summary, the markdown and the plan document."""
        return {**self.summary(), "markdown": self.markdown, "plan": self.doc}


def new_plan_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + _random.token_hex(3)


def plan_dir(project: Project, plan_id: str) -> Path:
    if not isinstance(plan_id, str) or not _ID.match(plan_id):
        raise InvalidInput(f"no plan '{plan_id}'", hint="plan ids look like 20261206T221000Z-a1b2c3")
    return project.state / "plans" / plan_id


def create_plan(
    project: Project,
    *,
    text: str | None = None,
    path: str | None = None,
    inventory: str | None = None,
    limit: str | None = None,
    tags: Sequence[str] = (),
    skip_tags: Sequence[str] = (),
    vars: Mapping[str, Any] | None = None,
    actor: str,
    origin: str,
) -> PlanRecord:
    """Check the playbook as `validate` does (refused with every located error), plan it on its
    hosts (probes, exact commands and diffs), store and audit the plan. The same gates as a person's."""
    from runner import report
    from runner.plan import to_json
    from runner.planner import make_plan
    from runner.service import ops
    from runner.session import open_session, select_hosts, split_names

    if origin not in ORIGINS:
        raise InvalidInput(f"unknown plan origin {origin!r}", hint="one of " + ", ".join(ORIGINS))
    variables = dict(vars or {})
    errors, _ = ops.check(project, text=text, path=path, inventory=inventory, variables=variables)
    if errors:
        raise InvalidInput("the playbook is not valid; nothing was planned", errors)
    plan_id = new_plan_id()
    folder = plan_dir(project, plan_id)
    project.private("plans", plan_id)
    playbook = folder / "playbook.yaml" if text is not None else project.inside(str(path))
    inv_arg = project.inventory_arg(inventory)
    try:
        if text is not None:
            write_private(playbook, text.encode())
        with open_session(str(playbook), inv_arg, None, variables) as session:
            hosts = select_hosts(session.inventory, session.playbook, limit)
            the_plan, _ = make_plan(session, hosts, tags=split_names(tags), skip_tags=split_names(skip_tags),
                                    limit=limit)
            body = json.dumps(to_json(the_plan), indent=2, default=str) + "\n"
            markdown = report.plan_markdown(the_plan)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # no half-made plan is left to list
        raise
    doc = json.loads(body)
    digest = plan_digest(doc)
    meta: dict[str, Any] = {
        "id": plan_id, "digest": digest, "created": now_iso(), "actor": actor, "origin": origin,
        "playbook": str(playbook), "from_text": text is not None, "inventory": inv_arg,
        "limit": limit, "tags": list(tags), "skip_tags": list(skip_tags),
    }
    write_private(folder / "plan.json", body.encode())
    write_private(folder / "plan.md", markdown.encode())
    write_private(folder / "meta.json", (json.dumps(redact_data(meta), indent=2) + "\n").encode())
    audit.record(project, actor, "plan", plan_id=plan_id, digest=digest, origin=origin, playbook=str(playbook),
                 hosts=doc.get("hosts"), summary=doc.get("summary"))
    return PlanRecord(plan_id, digest, meta["created"], actor, origin, str(playbook), doc, markdown, meta, folder)


def _read(path: Path) -> str:
    import os

    fd = open_private(path, os.O_RDONLY)
    with os.fdopen(fd, encoding="utf-8") as fh:
        return fh.read()


def get_plan(project: Project, plan_id: str) -> PlanRecord:
    """The stored plan `plan_id`; its digest is computed again from plan.json (what apply reads)."""
    folder = plan_dir(project, plan_id)
    try:
        meta = json.loads(_read(folder / "meta.json"))
        body = _read(folder / "plan.json")
        markdown = _read(folder / "plan.md")
    except FileNotFoundError:
        raise InvalidInput(f"no plan '{plan_id}' in {project.state / 'plans'}",
                           hint="list them with: opsrun plans list") from None
    except (OSError, ValueError) as exc:
        raise OpsrunError(f"plan {plan_id} cannot be read: {exc}") from None
    doc = json.loads(body)
    return PlanRecord(plan_id, plan_digest(doc), str(meta.get("created", "")), str(meta.get("actor", "")),
                      str(meta.get("origin", "")), str(meta.get("playbook", "")), doc, markdown, meta, folder)


def list_plans(project: Project, limit: int = 50) -> list[PlanRecord]:
    """The newest `limit` plans, newest first (unreadable folders are skipped)."""
    base = project.state / "plans"
    if not base.is_dir() or base.is_symlink():
        return []
    out: list[PlanRecord] = []
    for d in sorted((p for p in base.iterdir() if _ID.match(p.name)), reverse=True):
        if len(out) >= limit:
            break
        try:
            out.append(get_plan(project, d.name))
        except OpsrunError:
            continue
    return out
