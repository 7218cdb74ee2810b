"""Past runs as text and JSON: `opsrun runs list` (a table) and `opsrun runs show` (every event
of a run on a timeline, then per host what the events add up to). Pure string building; imports report only.
"""

from __future__ import annotations

import json
from typing import Any

from runner.journal import RunInfo
from runner.report import clip, describe, event_where
from runner.secrets import redact
from runner.tally import STATUSES, host_summary


def runs_table(runs: list[RunInfo]) -> str:
    if not runs:
        return "no runs yet\n"
    out = [f"{'run':28} {'started':24} {'playbook':28} outcome"]
    for r in runs:
        s = r.head
        out.append(f"{r.run_id:28} {str(s.get('ts', ''))[:23]:24} {str(s.get('playbook', ''))[:28]:28} {r.outcome}")
    return "\n".join(out) + "\n"


def runs_json(runs: list[RunInfo]) -> str:
    """`opsrun runs list --json`: each run's id, start, playbook and outcome."""
    rows = [
        {"run_id": r.run_id, "started": r.head.get("ts"), "playbook": r.head.get("playbook"), "outcome": r.outcome}
        for r in runs
    ]
    return json.dumps(rows, indent=2) + "\n"


def run_json(run: RunInfo) -> str:
    """`opsrun runs show --json`: the outcome, per host what the events add up to, every event."""
    doc = {"run_id": run.run_id, "outcome": run.outcome, "hosts": host_summary(run.events), "events": run.events}
    return json.dumps(doc, indent=2, default=str) + "\n"


def run_timeline(run: RunInfo) -> str:
    """`opsrun runs show`: every event of the run on its own line(s), then per host the step
    statuses and what the events add to them (escalations, fixes, undos, rollback)."""
    s = run.start
    out = [
        f"run {run.run_id}: {s.get('playbook', '?')} on {', '.join(s.get('hosts') or [])}",
        f"started {s.get('ts', '?')} by {s.get('user', '?')}  outcome: {run.outcome}",
        "",
    ]
    t0 = s.get("ts")
    for ev in run.events:
        t = ev.get("type")
        rel = rel_time(t0, ev.get("ts"))
        pad = " " * len(rel)
        where = event_where(ev)
        if t == "run_start":
            continue  # the header above
        if t == "step_start":
            out.append(f"{rel}  {where}  start ({ev.get('kind')})")
        elif t == "attempt":
            out.append(
                f"{rel}  {where}  try {ev.get('attempt')}: "
                f"$ {clip(ev.get('command'))}  -> rc {ev.get('rc')} in {ev.get('duration')}s"
            )
        elif t == "register":
            out.append(f"{rel}  {clip(ev.get('host'))}  {clip(ev.get('step'))}  registered (kept for apply --resume)")
        elif t == "resume":
            done = [clip(x) for x in ev.get("finished") or []]
            out.append(f"{rel}  resumed (pid {ev.get('pid')}); finished before: {', '.join(done) or 'none'}")
        elif t == "step_end":
            out.append(
                f"{rel}  {where}  {ev.get('status')} "
                f"({ev.get('duration')}s, {ev.get('attempts')} tries) {clip(ev.get('message'))}".rstrip()
            )
        elif t == "run_end":
            out.append(f"{rel}  run end: {ev.get('outcome')} {json.dumps(ev.get('totals', {}))}")
        else:
            d = describe(ev)
            if d is None:  # pragma: no cover - every folded type is handled above
                continue
            label, _code, text, more = d
            where = event_where(ev)
            out.append(f"{rel}  {where + '  ' if where else ''}{label}: {text}")
            out.extend(f"{pad}    {m}" for m in more)
        if t in ("attempt", "fix", "undo", "verify"):
            for stream in ("stdout_tail", "stderr_tail"):
                tail = redact(str(ev.get(stream) or "")).strip().splitlines()[-3:]
                out.extend(f"{pad}      | {line}" for line in tail)
    summary = host_summary(run.events)
    if summary:
        out.append("")
    for host, c in summary.items():
        parts = [f"{c[k]} {k}" for k in STATUSES if c.get(k)]
        parts += [f"{c[k]} {k.replace('_', ' ')}" for k in ("escalated", "fixed", "undone", "undo_failed") if c.get(k)]
        if c.get("rolled_back"):
            parts.append("rolled back")
        out.append(f"{host}: {', '.join(parts) or 'nothing ran'}")
    if run.end is None:
        out.append("(no run_end event: the run was interrupted or is still going)")
    return "\n".join(out) + "\n"


def rel_time(t0: Any, t: Any) -> str:
    """`+  1.234s`: an event's time after the run's start (blank when either is not a time)."""
    from datetime import datetime

    try:
        d = (datetime.fromisoformat(str(t)) - datetime.fromisoformat(str(t0))).total_seconds()
        return f"+{d:7.3f}s"
    except (TypeError, ValueError):
        return "        "
