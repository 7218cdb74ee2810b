"""What a run's events add up to, beyond the step statuses: per host the escalations, LLM
fixes run, steps fixed, undos and rollbacks, and each escalation's story. Pure; no I/O, no text.
"""

from __future__ import annotations

from typing import Any

STATUSES = ("ok", "changed", "failed", "skipped", "blocked", "unreachable")
EXTRA_COUNTS = ("escalated", "fixes", "fixed", "undone", "undo_failed", "rolled_back")


def this_part(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events of the last part of a run (after its last `resume`), as the recap covers."""
    starts = [i for i, e in enumerate(events) if e.get("type") in ("run_start", "resume")]
    return events[starts[-1] :] if starts else events


def event_counts(events: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per host, what the step statuses do not tell: escalations, LLM fixes run, steps `fixed`
    (they ended ok or changed after a fix ran), undos run (`undone`, `undo_failed`) and
    `rolled_back` (1 when the host's rollback ran)."""
    out: dict[str, dict[str, int]] = {}
    after_fix: set[tuple[str, str]] = set()
    for ev in events:
        t, host = ev.get("type"), ev.get("host")
        if not isinstance(host, str) or t not in (
            "escalate", "llm_fix_result", "step_end", "undo_end", "rollback_end",
        ):
            continue
        c = out.setdefault(host, dict.fromkeys(EXTRA_COUNTS, 0))
        key = (host, str(ev.get("instance")))
        if t == "escalate":
            c["escalated"] += 1
        elif t == "llm_fix_result" and ev.get("ok"):
            c["fixes"] += 1
            after_fix.add(key)
        elif t == "step_end" and key in after_fix:
            after_fix.discard(key)
            c["fixed"] += ev.get("status") in ("ok", "changed")
        elif t == "undo_end":
            c["undone" if ev.get("ok") else "undo_failed"] += 1
        elif t == "rollback_end":
            c["rolled_back"] = 1
    return out


def escalations(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per host, each escalation of a step: the rung, why, the LLM's diagnosis and fix (its
    steps, whether it ran), a human's decision, and how the step ended."""
    out: dict[str, list[dict[str, Any]]] = {}
    open_: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for ev in events:
        t, host = ev.get("type"), ev.get("host")
        if not isinstance(host, str):
            continue
        key = (host, str(ev.get("instance")))
        if t == "escalate":
            rec: dict[str, Any] = {
                "step": ev.get("step"), "instance": ev.get("instance"), "rung": ev.get("to"),
                "reason": ev.get("reason") or ev.get("note") or "",
            }
            out.setdefault(host, []).append(rec)
            open_.setdefault(key, []).append(rec)
        elif key in open_:
            rec = open_[key][-1]
            if t == "llm_fix":
                rec.update(diagnosis=ev.get("diagnosis", ""), confidence=ev.get("confidence"),
                           fix_steps=ev.get("steps") or [], fix_ok=bool(ev.get("ok")),
                           error=ev.get("error") or "", provider=ev.get("provider", ""), model=ev.get("model", ""))
            elif t == "llm_fix_result":
                rec["fix_ran"] = bool(ev.get("ok"))
            elif t == "human_decision":
                rec["decision"] = ev.get("choice")
            elif t == "waiting_for_human":
                rec["waiting"] = True
            elif t == "step_end":
                for r in open_.pop(key):
                    r["step_status"] = ev.get("status")
    return out


def host_summary(events: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per host (in order of appearance) the step statuses (from step_end, and 1 unreachable
    for a host_unreachable) plus EXTRA_COUNTS, over all the events given."""
    out: dict[str, dict[str, int]] = {}
    for ev in events:
        host = ev.get("host")
        if not isinstance(host, str) or ev.get("type") not in ("step_end", "host_unreachable"):
            continue
        c = out.setdefault(host, dict.fromkeys(STATUSES, 0))
        status = "unreachable" if ev.get("type") == "host_unreachable" else str(ev.get("status"))
        c[status] = c.get(status, 0) + 1
    for host, extra in event_counts(events).items():
        out.setdefault(host, dict.fromkeys(STATUSES, 0)).update(extra)
    return out


def handler_runs(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per host, each handler's run: the handler, where it ran (`end` or a flush step's id), the
    steps that notified it and how it ended; a handler a failed host did not run is `not run`."""
    out: dict[str, list[dict[str, Any]]] = {}
    running: dict[tuple[str, str], dict[str, Any]] = {}
    for ev in events:
        t, host = ev.get("type"), ev.get("host")
        if not isinstance(host, str):
            continue
        if t == "handler":
            rec = {"handler": ev.get("handler"), "run": ev.get("step"), "at": ev.get("at"),
                   "notified_by": list(ev.get("notified_by") or []), "status": ""}
            out.setdefault(host, []).append(rec)
            running[(host, str(ev.get("step")))] = rec
        elif t == "handlers_not_run":
            for hid in ev.get("handlers") or []:
                out.setdefault(host, []).append({"handler": hid, "run": hid, "at": ev.get("at"), "notified_by": [],
                                                 "status": "not run", "reason": ev.get("reason") or ""})
        elif t == "step_end" and (host, str(ev.get("step"))) in running:
            rec = running[(host, str(ev.get("step")))]
            if rec["status"] not in ("failed", "blocked", "unreachable"):  # a loop: its worst item
                rec["status"] = ev.get("status")
    return out
