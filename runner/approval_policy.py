"""Approvals' pure half: the digest a plan document is approved under, and the limits an
automatic approval (`do --yes`, serve's auto-approve policy) must stay within.

Pure: no I/O; imports nothing from runner (it reads the plan document as plan.to_json writes it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


def plan_digest(doc: Mapping[str, Any]) -> str:
    """The digest of a plan document (canonical JSON): an approval names it, apply checks it."""
    body = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str).encode()
    return "sha256:" + hashlib.sha256(body).hexdigest()


@dataclass(frozen=True)
class AutoLimits:
    """What a plan may hold and still be approved without a person.

    max_changes: steps that change (or may change: `?`) at most this many (None: no bound);
    blocked plans (`!`) and plans that lift a built-in safety rule are never auto-approved."""

    max_changes: int | None = 10
    allow_unknown: bool = True  # `?` steps count as changes; False refuses any `?`


def auto_refusals(doc: Mapping[str, Any], limits: AutoLimits) -> list[str]:
    """Why this plan may not be approved automatically under `limits` (empty: it may)."""
    out: list[str] = []
    steps = [s for s in doc.get("steps", []) if isinstance(s, Mapping)]
    blocked = [f"{s.get('host')}/{s.get('instance')}" for s in steps if s.get("status") == "blocked"]
    if blocked:
        out.append(f"{len(blocked)} step(s) blocked by a safety rule (!): {', '.join(blocked[:5])}")
    lifted = [w for w in doc.get("warnings", []) if isinstance(w, str) and w.startswith("safety: ")]
    if lifted:
        out.append("the playbook lifts a built-in safety rule: " + "; ".join(lifted))
    unknown = [s for s in steps if s.get("status") == "unknown" and not s.get("read_only")]
    if unknown and not limits.allow_unknown:
        out.append(f"{len(unknown)} step(s) cannot be known offline (?) and the limits refuse any")
    changing = [s for s in steps if s.get("status") in ("create", "update", "delete", "run") and not s.get("read_only")]
    n = len(changing) + len(unknown)
    if limits.max_changes is not None and n > limits.max_changes:
        out.append(f"{n} step(s) change or may change, more than the limit of {limits.max_changes}")
    if doc.get("unreachable"):
        out.append("host(s) unreachable while planning: " + ", ".join(sorted(doc["unreachable"])))
    return out
