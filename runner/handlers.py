"""Handlers, shared by plan and apply: where a host's notified handlers run, the copy that runs
there, and the plan's verdict from its notifiers' planned markers. Imports no planner or apply.

A handler that runs at the end of the host's steps keeps its id; at a flush step `f` it runs
as `<id>@f`, so a handler notified again after a flush has a plan entry (and a result) per run.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from runner.expand import step_hosts
from runner.model import CHANGING, MARKERS, Change, Inventory, Playbook, Step, StepPlan

END = "end"
Verdict = Literal["run", "maybe", "no"]


def copy_at(handler: Step, at: str) -> Step:
    """The handler as it runs at flush step `at` ("" or END: at the end of the host's steps)."""
    return handler if at in ("", END) else replace(handler, id=f"{handler.id}@{at}")


def origin_of(step: Step) -> tuple[str, str]:
    """(handler id, where it runs: END or the flush step's id) of a handler's copy."""
    hid, _, at = step.id.partition("@")
    return hid, at or END


def for_host(playbook: Playbook, inventory: Inventory, host: str) -> dict[str, Step]:
    """The handlers that may run on `host` (their `hosts:` and their includes' narrow them),
    in the order listed: a step's notify of any other handler does nothing on this host."""
    return {h.id: h for h in playbook.handlers if host in step_hosts(inventory, [host], h)}


def segments(steps: list[Step]) -> list[tuple[list[Step], str]]:
    """A host's steps cut at its flush steps: (steps, where their handlers run), the last at END."""
    out: list[tuple[list[Step], str]] = []
    current: list[Step] = []
    for step in steps:
        if step.flush:
            out.append((current, step.id))
            current = []
        else:
            current.append(step)
    out.append((current, END))
    return out


def notified_by(segment: list[Step], handlers: dict[str, Step]) -> list[Step]:
    """The handlers that steps of `segment` may notify, with the later handlers those notify
    in turn (a handler notifies only handlers listed after it), in the order listed."""
    wanted = {hid for s in segment for hid in s.notify if hid in handlers}
    out = []
    for hid, handler in handlers.items():
        if hid in wanted:
            out.append(handler)
            wanted.update(n for n in handler.notify if n in handlers)
    return out


# ---------------------------------------------------------------- the plan's verdict


@dataclass(frozen=True)
class Notice:
    """A planned step instance that notifies a handler, and whether its change is certain."""

    step: str  # the notifying step's id
    plan: StepPlan
    surely: bool | None  # True: it changes something; None: decided at apply; False: it does not


def notice(step: Step, sp: StepPlan) -> Notice:
    return Notice(step.id, sp, _changes(step, sp))


def _changes(step: Step, sp: StepPlan) -> bool | None:
    c = sp.change
    if c.read_only or c.status in ("noop", "skip", "blocked"):
        return False
    if c.status == "unknown" or sp.conditional_on:
        return None  # undecided, or its `when` waits for a result
    if c.status == "run" and _changed_when(step) not in (None, "true"):
        return None  # its changed_when decides, after it ran
    return c.status in CHANGING


def _changed_when(step: Step) -> str | None:
    params = step.params if isinstance(step.params, dict) else {}
    flag = params.get("changed_when")
    if isinstance(flag, bool):
        return "true" if flag else "false"
    return str(flag).strip().lower() if flag is not None else None


def verdict(notices: list[Notice]) -> Verdict:
    """Run when a notifier surely changes something; maybe when one may; else not."""
    if any(n.surely for n in notices):
        return "run"
    if any(n.surely is None for n in notices):
        return "maybe"
    return "no"


def notifier_ids(notices: list[Notice]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(n.step for n in notices))


def _named(ids: tuple[str, ...]) -> str:
    return ("step " if len(ids) == 1 else "steps ") + ", ".join(f"'{i}'" for i in ids)


def not_notified(notices: list[Notice]) -> Change:
    """The plan of a handler that will not run: none of its notifiers changes anything."""
    ids = notifier_ids(notices)
    if not ids:
        return Change("skip", "skipped (not notified)", reason="not notified")
    if all(n.plan.change.status == "blocked" for n in notices):
        why = f"{_named(ids)} {'is' if len(ids) == 1 else 'are'} blocked"
    else:
        why = f"{_named(ids)} {'changes' if len(ids) == 1 else 'change'} nothing"
    return Change("skip", f"skipped (not notified: {why})", reason=f"not notified: {why}")


def maybe(change: Change, notices: list[Notice]) -> Change:
    """The plan of a handler that runs only if a notifier's change, decided at apply, happens.
    A handler that would change nothing stays `=` (it is `=` whether it runs or not)."""
    if change.status in ("noop", "skip"):
        return change
    ids = notifier_ids([n for n in notices if n.surely is None])
    return Change(
        "unknown",
        f"runs only if {_named(ids)} changes something: {MARKERS[change.status]} {change.summary}",
        change.actions,
        change.diff,
        reason=f"notified by {_named(ids)}, whose change is decided at apply",
        data=change.data,
    )


def describe_at(at: str) -> str:
    return "at the end of the host's steps" if at == END else f"at flush step '{at}'"
