"""Steps that fight over one thing whatever the host holds, for `validate`: the playbook
planned on blank hosts (no I/O), each pair said once as a warning at the second step.

Talks to no target (blank answers only). Imports the planner; nothing of apply, cli or llm.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from runner.errors import Diagnostic, InvalidInput
from runner.model import Probe, ProbeResult
from runner.planner import plan_host
from runner.session import Session
from runner.steps import facts as F


def blank_answers(probes: Sequence[Probe]) -> dict[str, ProbeResult]:
    """What a host with nothing on it answers: no paths, no packages, no services."""
    return {p.key: F.blank_answer(p) for p in probes}


def structural_conflicts(session: Session, hosts: list[str]) -> list[tuple[str, str, str]]:
    """Steps that fight whatever the host holds, found by planning on a blank host (no I/O):
    (first step id, second step id, what). Steps that cannot be rendered are left out."""
    found: dict[tuple[str, str, str], None] = {}
    for name in hosts:
        errors: list[Diagnostic] = []
        hp = plan_host(session, name, (), (), False, errors, answer=blank_answers)
        for c in hp.overlay.conflicts:
            found[(c.first.split("[", 1)[0], c.second.split("[", 1)[0], c.what)] = None
    return list(found)



def conflict_diagnostics(playbook: Any, inventory: Any, cli_vars: dict[str, Any] | None = None) -> list[Diagnostic]:
    """validate's warnings for steps that fight over one thing (planned on a blank host)."""
    from runner.session import select_hosts

    session = Session(inventory, playbook, dict(cli_vars or {}))
    try:
        hosts = select_hosts(inventory, playbook, None)
    except InvalidInput:
        return []
    by_id = {s.id: s for s in playbook.steps}
    out = []
    for first, second, what in structural_conflicts(session, hosts[:20]):
        step = by_id[second]
        out.append(
            Diagnostic(
                step.file or playbook.file,
                step.line,
                step.col,
                f"steps '{first}' and '{second}' both manage {what}: '{second}' changes what '{first}' sets, "
                "so the playbook never converges (every run changes it again)",
                f"steps[{step.index}]",
                hint=f"let one step own {what}: fold the edit into '{first}', or drop one of the two",
                severity="warning",
            )
        )
    return out
