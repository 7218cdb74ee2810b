"""The plan document: the saved plan file format (to/from JSON) with digests and probe
fingerprints, and the drift checks that compare a saved plan with a new one.

Pure: no I/O; imports only errors, model and secrets (the planner decides the steps).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from runner import __version__
from runner.errors import InvalidInput
from runner.model import Plan, StepPlan
from runner.secrets import redact, redact_data

PLAN_FORMAT = "opsrun-plan"
PLAN_VERSION = 1


# ---------------------------------------------------------------- plan file


def _digest(data: Any) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def to_json(plan: Plan) -> dict[str, Any]:
    """The stable, versioned plan document (also `plan --json`). Secrets masked."""
    counts = plan.counts()
    doc = {
        "format": PLAN_FORMAT,
        "version": PLAN_VERSION,
        "opsrun": __version__,
        "playbook": {"file": plan.playbook.file, "name": plan.playbook.name, "digest": plan.playbook.digest},
        "inventory": {"file": plan.inventory.file, "digest": plan.inventory.digest},
        "vars": plan.cli_vars,
        "vars_digest": _digest(redact_data(plan.cli_vars)),
        "options": {
            "limit": plan.limit,
            "tags": list(plan.tags),
            "skip_tags": list(plan.skip_tags),
            "offline": plan.offline,
        },
        "shard": plan.shard,
        "hosts": plan.hosts,
        "unreachable": plan.unreachable,
        "steps": [sp.to_json() for sp in plan.steps],
        "warnings": list(plan.warnings),
        "summary": {**counts, "hosts": len(plan.hosts)},
    }
    return redact_data(doc)


@dataclass
class SavedPlan:
    """A plan file read back: what apply must match."""

    data: dict[str, Any]
    path: str

    @property
    def playbook_file(self) -> str:
        return str(self.data["playbook"]["file"])

    @property
    def inventory_file(self) -> str:
        return str(self.data["inventory"]["file"])

    def step(self, host: str, instance: str) -> dict[str, Any] | None:
        for s in self.data.get("steps", []):
            if s.get("host") == host and s.get("instance") == instance:
                return dict(s)
        return None


def read_saved(text: str, path: str) -> SavedPlan:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{path}: not a plan file (invalid JSON at line {exc.lineno})") from None
    if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
        raise InvalidInput(f"{path}: not an opsrun plan file", hint="make one with: opsrun plan PLAYBOOK -o plan.json")
    if data.get("version") != PLAN_VERSION:
        raise InvalidInput(
            f"{path}: plan format version {data.get('version')} is not supported "
            f"(this opsrun reads version {PLAN_VERSION})",
            hint="plan again",
        )
    for key in ("playbook", "inventory", "steps", "hosts"):
        if key not in data:
            raise InvalidInput(f"{path}: plan file lacks '{key}'", hint="plan again")
    return SavedPlan(data, path)


def check_inputs(
    saved: SavedPlan, plan_playbook_digest: str, inventory_digest: str, cli_vars: dict[str, Any]
) -> list[str]:
    """Reasons the saved plan no longer matches its inputs (empty: it matches)."""
    problems = []
    if saved.data["playbook"]["digest"] != plan_playbook_digest:
        problems.append(f"the playbook {saved.playbook_file} changed since the plan was made")
    if saved.data["inventory"]["digest"] != inventory_digest:
        problems.append(f"the inventory {saved.inventory_file} changed since the plan was made")
    if saved.data.get("vars_digest") != _digest(redact_data(cli_vars)):
        problems.append("the --var values differ from the plan's")
    return problems


def drift(saved: dict[str, Any], now: StepPlan) -> str | None:
    """Why `now` differs from the saved step plan, naming the fact that moved; None if same."""
    c = now.change
    if saved.get("status") != c.status:
        moved = _moved_facts(saved.get("fingerprint") or {}, now.fingerprint)
        return f"planned '{saved.get('status')}: {saved.get('summary')}', now '{c.status}: {redact(c.summary)}'" + (
            f"; facts that changed: {moved}" if moved else ""
        )
    planned = [a.get("digest") for a in saved.get("actions", [])]
    current = [a.digest() for a in c.actions]
    if planned != current:
        moved = _moved_facts(saved.get("fingerprint") or {}, now.fingerprint)
        return "the exact actions differ from the reviewed plan" + (f"; facts that changed: {moved}" if moved else "")
    moved = _moved_facts(saved.get("fingerprint") or {}, now.fingerprint)
    if moved:
        return f"facts changed since the plan: {moved}"
    return None


def _moved_facts(before: dict[str, str], after: dict[str, str]) -> str:
    keys = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    return ", ".join(keys)
