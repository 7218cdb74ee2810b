"""What an apply run leaves per host (HostRun: counts, results, changed steps) and the whole
run's Recap; plain data beside the journal. Imports only model and tally (expand type-only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runner.model import ProbeResult, StepResult
from runner.tally import STATUSES

if TYPE_CHECKING:
    from runner.steps.base import Instance


@dataclass
class HostRun:
    """Progress of one host through the run."""

    name: str
    facts: dict[str, ProbeResult] = field(default_factory=dict)  # plan-time answers
    known: dict[str, Any] = field(default_factory=dict)  # step id -> registered result
    dirty: bool = False  # something changed on the host since the facts were taken
    sent: int = 0  # actions sent to the host (or run here for it) so far
    failed: bool = False
    unreachable: bool = False
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    results: list[StepResult] = field(default_factory=list)
    changed_steps: list[Instance] = field(default_factory=list)  # for undo, in the order they ran
    rolled_back: bool = False
    notified: dict[str, list[str]] = field(default_factory=dict)  # handler id -> the steps that notified it


@dataclass
class Recap:
    """Every host's run, and why the run stopped early ("" when it did not)."""

    hosts: dict[str, HostRun]
    aborted: str = ""

    @property
    def ok(self) -> bool:
        return not self.aborted and not any(h.failed or h.unreachable for h in self.hosts.values())

    def totals(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for h in self.hosts.values():
            for k, v in h.counts.items():
                out[k] = out.get(k, 0) + v
        return out
