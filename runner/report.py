"""Plans, apply recaps and run timelines as text (terminal), Markdown (PR comments) and
JSON. Pure string building: every text passes through secrets.redact; no printing here.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from runner.journal import RunInfo
from runner.model import MARKERS, Plan, StepPlan
from runner.plan import to_json
from runner.secrets import redact

if TYPE_CHECKING:
    from runner.apply import Recap

_COLORS = {"+": "32", "~": "33", "-": "31", ">": "36", "=": "2", "?": "35", "!": "1;31"}
_STATUS_COLORS = {"ok": "32", "changed": "33", "failed": "31", "skipped": "2", "blocked": "1;31", "unreachable": "1;31"}


def use_color(stream: Any) -> bool:
    return (
        hasattr(stream, "isatty")
        and stream.isatty()
        and "NO_COLOR" not in os.environ
        and os.environ.get("TERM") != "dumb"
    )


def _c(text: str, code: str, color: bool) -> str:
    return f"\033[{code}m{text}\033[0m" if color and code else text


def summary_line(plan: Plan) -> str:
    c = plan.counts()
    n = len(plan.hosts)
    parts = [f"{c['change']} to change", f"{c['unchanged']} unchanged"]
    if c["read_only"]:
        parts.append(f"{c['read_only']} read-only")
    if c["unknown"]:
        parts.append(f"{c['unknown']} unknown")
    if c["blocked"]:
        parts.append(f"{c['blocked']} blocked")
    line = f"Plan: {', '.join(parts)} on {n} host{'s' if n != 1 else ''}"
    if plan.unreachable:
        line += f" ({len(plan.unreachable)} unreachable)"
    return line


def _step_lines(sp: StepPlan, color: bool, *, diff: bool = True) -> list[str]:
    c = sp.change
    marker = MARKERS[c.status]
    head = f"  {_c(marker, _COLORS[marker], color)} {sp.instance}: {redact(c.summary)}"
    if sp.conditional_on:
        head += f"  (only if its 'when' holds after step '{', '.join(sp.conditional_on)}')"
    lines = [head]
    if c.reason and c.status in ("unknown", "blocked"):
        lines.append(f"      reason: {redact(c.reason)}")
    if c.status in ("create", "update", "delete", "run", "blocked"):
        for a in c.actions:
            lines.append(f"      $ {redact(a.display())}" if a.kind == "cmd" else f"      {redact(a.display())}")
    if c.data.get("table"):
        lines.extend("      " + row for row in redact(str(c.data["table"])).rstrip("\n").split("\n"))
    if diff and c.diff and c.changes:
        for dl in redact(c.diff).rstrip("\n").split("\n"):
            code = "32" if dl.startswith("+") else "31" if dl.startswith("-") else "36" if dl.startswith("@@") else ""
            lines.append("      " + _c(dl, code, color))
    return lines


def plan_text(plan: Plan, *, color: bool = False) -> str:
    pb = plan.playbook
    out = [
        f"Plan for '{pb.name}' ({pb.file}) on {', '.join(plan.hosts)}"
        + ("  [offline: nothing probed]" if plan.offline else ""),
        "",
    ]
    for host in plan.hosts:
        out.append(_c(host, "1", color))
        if host in plan.unreachable:
            out.append(f"  {_c('!', '1;31', color)} unreachable: {redact(plan.unreachable[host])}")
            out.append("")
            continue
        steps = [sp for sp in plan.steps if sp.host == host]
        if not steps:
            out.append("  (no steps for this host)")
        for sp in steps:
            out.extend(_step_lines(sp, color))
        out.append("")
    for w in plan.warnings:
        out.append(_c(f"warning: {redact(w)}", "33", color))
    out.append(_c(summary_line(plan), "1", color))
    return "\n".join(out) + "\n"


def plan_markdown(plan: Plan) -> str:
    pb = plan.playbook
    out = [f"### opsrun plan: `{pb.name}`", "", f"`{pb.file}` on {len(plan.hosts)} host(s)", ""]
    out.append(f"**{summary_line(plan)}**")
    out.append("")
    for w in plan.warnings:
        out += [f"> :warning: {redact(w)}", ""]
    out.append("| host | | step | what |")
    out.append("|---|---|---|---|")
    for sp in plan.steps:
        summary = redact(sp.change.summary).replace("|", "\\|")
        if sp.change.reason and sp.change.status in ("unknown", "blocked"):
            summary += f" — {redact(sp.change.reason)}".replace("|", "\\|")
        out.append(f"| {sp.host} | `{MARKERS[sp.change.status]}` | `{sp.instance}` | {summary} |")
    for host, err in plan.unreachable.items():
        out.append(f"| {host} | `!` | | unreachable: {redact(err)} |")
    detail = [sp for sp in plan.steps if sp.change.changes or sp.change.status == "blocked"]
    if detail:
        out += ["", "<details><summary>Exact commands and diffs</summary>", ""]
        for sp in detail:
            out.append(f"**{sp.host} / {sp.instance}**: {redact(sp.change.summary)}")
            out.append("")
            out.append("```diff" if sp.change.diff else "```sh")
            for a in sp.change.actions:
                out.append(("$ " if a.kind == "cmd" else "# ") + redact(a.display()))
            if sp.change.diff:
                out.append(redact(sp.change.diff).rstrip("\n"))
            out.append("```")
            out.append("")
        out.append("</details>")
    return "\n".join(out) + "\n"


def plan_json(plan: Plan) -> str:
    return json.dumps(to_json(plan), indent=2, sort_keys=False, default=str) + "\n"


def event_line(ev: dict[str, Any], *, color: bool = False) -> str | None:
    """One terminal line for an apply event (None: not shown)."""
    t = ev.get("type")
    if t == "step_end":
        status = str(ev.get("status"))
        took = ev.get("duration") or 0
        msg = f" {ev.get('message')}" if ev.get("message") else ""
        tries = f" after {ev['attempts']} tries" if (ev.get("attempts") or 0) > 1 else ""
        table = ev.get("table")
        tail = ("\n" + "\n".join("      " + r for r in str(table).rstrip("\n").split("\n"))) if table else ""
        return (
            f"  {_c(status.ljust(9), _STATUS_COLORS.get(status, ''), color)} "
            f"{ev.get('host')}  {ev.get('instance')}{tries} ({took:.2f}s){msg}{tail}"
        )
    if t == "retry":
        return (
            f"  {_c('retry', '33', color)}     {ev.get('host')}  {ev.get('instance')}: "
            f"{ev.get('failure')}, {ev.get('reason')} in {ev.get('delay')}s"
        )
    if t == "escalate":
        return f"  {_c('escalate', '35', color)}  {ev.get('host')}  {ev.get('instance')}: {ev.get('note')}"
    if t == "host_unreachable":
        return f"  {_c('unreachable', '1;31', color)} {ev.get('host')}: {ev.get('error')}"
    if t == "batch_start":
        return f"-- batch: {', '.join(ev.get('hosts') or [])}"
    return None


def recap_text(recap: Recap, run_id: str, *, color: bool = False) -> str:
    cols = ("ok", "changed", "failed", "skipped", "blocked", "unreachable")
    width = max([len(h) for h in recap.hosts] + [4])
    out = ["", "Recap " + run_id, "  " + "host".ljust(width) + "  " + "  ".join(c.rjust(8) for c in cols)]
    for name, hr in recap.hosts.items():
        cells = []
        for col in cols:
            v = hr.counts.get(col, 0)
            cell = str(v).rjust(8)
            cells.append(_c(cell, _STATUS_COLORS[col], color and v > 0 and col != "ok"))
        out.append("  " + name.ljust(width) + "  " + "  ".join(cells))
    for hr in recap.hosts.values():
        for r in hr.results:
            if r.status in ("failed", "blocked", "unreachable"):
                out.append(f"  {_c('x', '31', color)} {hr.name} {r.instance}: {redact(r.message)}")
                tail = (r.stderr or r.stdout).strip().splitlines()[-5:]
                out.extend(f"      | {redact(t)}" for t in tail)
    if recap.aborted:
        out.append(f"  run stopped: {recap.aborted}")
    t = recap.totals()
    out.append(
        f"Apply: {t.get('changed', 0)} changed, {t.get('ok', 0)} ok, {t.get('failed', 0)} failed, "
        f"{t.get('skipped', 0)} skipped, {t.get('blocked', 0)} blocked, "
        f"{t.get('unreachable', 0)} unreachable"
    )
    return "\n".join(out) + "\n"


def recap_json(recap: Recap, run_id: str) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "ok": recap.ok,
        "aborted": recap.aborted,
        "totals": recap.totals(),
        "hosts": {
            n: {
                "counts": h.counts,
                "unreachable": h.unreachable,
                "steps": [
                    {
                        "step": r.step_id,
                        "instance": r.instance,
                        "status": r.status,
                        "rc": r.rc,
                        "attempts": r.attempts,
                        "duration": round(r.duration, 4),
                        "message": redact(r.message),
                    }
                    for r in h.results
                ],
            }
            for n, h in recap.hosts.items()
        },
    }


# ---------------------------------------------------------------- runs


def runs_table(runs: list[RunInfo]) -> str:
    if not runs:
        return "no runs yet\n"
    out = [f"{'run':28} {'started':24} {'playbook':28} outcome"]
    for r in runs:
        s = r.start
        out.append(f"{r.run_id:28} {str(s.get('ts', ''))[:23]:24} {str(s.get('playbook', ''))[:28]:28} {r.outcome}")
    return "\n".join(out) + "\n"


def run_timeline(run: RunInfo) -> str:
    s = run.start
    out = [
        f"run {run.run_id}: {s.get('playbook', '?')} on {', '.join(s.get('hosts') or [])}",
        f"started {s.get('ts', '?')} by {s.get('user', '?')}  outcome: {run.outcome}",
        "",
    ]
    t0 = s.get("ts")
    for ev in run.events:
        t = ev.get("type")
        rel = _rel(t0, ev.get("ts"))
        if t == "step_start":
            out.append(f"{rel}  {ev.get('host')}  {ev.get('instance')}  start ({ev.get('kind')})")
        elif t == "attempt":
            out.append(
                f"{rel}  {ev.get('host')}  {ev.get('instance')}  try {ev.get('attempt')}: "
                f"$ {ev.get('command')}  -> rc {ev.get('rc')} in {ev.get('duration')}s"
            )
            for stream in ("stdout_tail", "stderr_tail"):
                tail = str(ev.get(stream) or "").strip().splitlines()[-3:]
                out.extend(f"{' ' * len(rel)}      | {line}" for line in tail)
        elif t in (
            "retry",
            "escalate",
            "blocked",
            "attempt_error",
            "verify",
            "host_unreachable",
            "batch_start",
            "note",
            "drift",
        ):
            detail = {k: v for k, v in ev.items() if k not in ("seq", "ts", "type", "host", "step", "instance")}
            out.append(
                f"{rel}  {ev.get('host', '')}  {ev.get('instance', '')}  {t}: "
                + ", ".join(f"{k}={v}" for k, v in detail.items())
            )
        elif t == "artifact":
            out.append(
                f"{rel}  {ev.get('host')}  {ev.get('instance')}  artifact: {ev.get('path')} ({ev.get('bytes')} bytes)"
            )
        elif t == "step_end":
            out.append(
                f"{rel}  {ev.get('host')}  {ev.get('instance')}  {ev.get('status')} "
                f"({ev.get('duration')}s, {ev.get('attempts')} tries) {ev.get('message') or ''}".rstrip()
            )
        elif t == "run_end":
            out.append(f"{rel}  run end: {ev.get('outcome')} {json.dumps(ev.get('totals', {}))}")
    if run.end is None:
        out.append("(no run_end event: the run was interrupted or is still going)")
    return "\n".join(out) + "\n"


def _rel(t0: Any, t: Any) -> str:
    from datetime import datetime

    try:
        d = (datetime.fromisoformat(str(t)) - datetime.fromisoformat(str(t0))).total_seconds()
        return f"+{d:7.3f}s"
    except (TypeError, ValueError):
        return "        "
