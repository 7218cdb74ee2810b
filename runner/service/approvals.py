"""Approvals: a stored plan may be applied only under an approval bound to its digest (from a
terminal, an approver's HTTP call, or the auto-approve policy's limits). Imports no cli.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from runner.approval_policy import AutoLimits, auto_refusals
from runner.errors import DriftError, InvalidInput
from runner.files import write_private
from runner.journal import now_iso
from runner.service import audit
from runner.service.plans import PlanRecord, get_plan
from runner.service.project import Project

HOW = ("terminal", "http", "policy")


@dataclass
class Approval:
    """Who approved which plan, under which digest, when and how."""

    plan_id: str
    digest: str
    approver: str
    at: str
    how: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _store(project: Project, plan: PlanRecord, approver: str, how: str, **extra: Any) -> Approval:
    if how not in HOW:
        raise InvalidInput(f"unknown approval kind {how!r}", hint="one of " + ", ".join(HOW))
    approval = Approval(plan.id, plan.digest, approver, now_iso(), how)
    assert plan.dir is not None
    write_private(plan.dir / "approval.json", (json.dumps(approval.to_json(), indent=2) + "\n").encode())
    audit.record(project, approver, "approve", plan_id=plan.id, digest=plan.digest, how=how, **extra)
    return approval


def approve(project: Project, plan_id: str, *, approver: str, how: str, digest: str | None = None) -> Approval:
    """Approve the stored plan. `digest`: the one the approver saw; another one is refused
    (the plan is not the one reviewed)."""
    plan = get_plan(project, plan_id)
    if digest is not None and digest != plan.digest:
        audit.record(project, approver, "approve_refused", plan_id=plan_id, digest=digest, plan_digest=plan.digest,
                     how=how, reason="digest differs")
        raise DriftError(
            f"not approving plan {plan_id}: its digest is {plan.digest}, not the {digest} that was reviewed",
            hint=f"review it again: opsrun plans show {plan_id}",
        )
    return _store(project, plan, approver, how)


def auto_approve(project: Project, plan_id: str, limits: AutoLimits, *, approver: str) -> Approval | list[str]:
    """Approve by policy when the plan stays within `limits` (no `!`, no lifted safety rule, a
    bounded number of changes); else the reasons it does not (nothing is approved)."""
    plan = get_plan(project, plan_id)
    why = auto_refusals(plan.doc, limits)
    if why:
        audit.record(project, approver, "auto_approve_refused", plan_id=plan_id, digest=plan.digest, reasons=why)
        return why
    return _store(project, plan, approver, "policy", limits=asdict(limits))


def approval_of(project: Project, plan_id: str) -> Approval | None:
    """The approval of the plan as it is now: None when there is none, or when it was given
    under another digest than plan.json's (the file changed since)."""
    plan = get_plan(project, plan_id)
    assert plan.dir is not None
    try:
        data = json.loads((plan.dir / "approval.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("digest") != plan.digest:
        return None
    try:
        return Approval(str(data["plan_id"]), str(data["digest"]), str(data["approver"]), str(data["at"]),
                        str(data["how"]))
    except KeyError:
        return None
