"""Plans, apply recaps and run timelines as text (terminal), Markdown (PR comments) and
JSON. Pure string building: every text passes through secrets.redact; no printing here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from runner import report_conventions as conv
from runner.fact_names import fact_of
from runner.model import CHANGING, MARKERS, Plan, StepPlan
from runner.plan import to_json
from runner.recap import Recap
from runner.secrets import redact, redact_data
from runner.tally import EXTRA_COUNTS, escalations, event_counts, handler_runs, this_part

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
    actions = [(a.kind, a.display()) for a in c.actions]
    table = str(c.data["table"]) if c.data.get("table") else ""
    note = conv.handler_note(sp.handler, sp.notified_by) if sp.handler else sp.conditional_on
    return _change_lines(
        c.status, sp.instance, c.summary, c.reason, note, actions, table, c.diff if diff else "", c.changes, color,
        source=sp.source,
    )


def _change_lines(
    status: str,
    instance: str,
    summary: str,
    reason: str,
    conditional_on: Any,
    actions: Sequence[tuple[str, str]],
    table: str,
    diff: str,
    changes: bool,
    color: bool,
    *,
    source: str = "",
) -> list[str]:
    """A planned step as `opsrun plan` prints it: marker, summary, reason, exact actions, diff,
    and for a step from a step file or role (when it does something) where it is written."""
    marker = MARKERS.get(status, "?")
    head = f"  {_c(marker, _COLORS[marker], color)} {instance}: {redact(summary)}"
    if isinstance(conditional_on, str):  # a handler's note
        head += conditional_on
    elif conditional_on:
        facts = [f for f in map(fact_of, conditional_on) if f]
        head += (f"  (only if its 'when' holds for host fact {', '.join(facts)})" if facts
                 else f"  (only if its 'when' holds after step '{', '.join(conditional_on)}')")
    lines = [head]
    if source and status not in ("noop", "skip"):
        lines.append(f"      from: {source}")
    if reason and status in ("unknown", "blocked"):
        lines.append(f"      reason: {redact(reason)}")
    if status in ("create", "update", "delete", "run", "blocked"):
        for kind, display in actions:
            lines.append(f"      $ {redact(display)}" if kind == "cmd" else f"      {redact(display)}")
    if table:
        lines.extend("      " + row for row in redact(table).rstrip("\n").split("\n"))
    if diff and changes:
        for dl in redact(diff).rstrip("\n").split("\n"):
            code = "32" if dl.startswith("+") else "31" if dl.startswith("-") else "36" if dl.startswith("@@") else ""
            lines.append("      " + _c(dl, code, color))
    return lines


def plan_record_lines(rec: dict[str, Any], *, color: bool = False) -> list[str]:
    """A step plan as journaled (StepPlan.to_json) rendered like `opsrun plan` prints it."""
    actions = [
        (str(a.get("kind", "")), str(a.get("display") or a.get("command") or ""))
        for a in rec.get("actions") or []
        if isinstance(a, dict)
    ]
    status = str(rec.get("status", "unknown"))
    h = rec.get("handler") if isinstance(rec.get("handler"), dict) else None
    note = conv.handler_note(str(h.get("at")), h.get("notified_by")) if h else rec.get("conditional_on")
    return _change_lines(
        status, str(rec.get("instance", "?")), str(rec.get("summary", "")), str(rec.get("reason") or ""),
        note, actions, "", str(rec.get("diff") or ""), status in CHANGING, color,
        source=str(rec.get("source") or ""),
    )


def plan_text(plan: Plan, *, color: bool = False) -> str:
    pb = plan.playbook
    out = [
        f"Plan for '{pb.name}' ({pb.file}) on {', '.join(plan.hosts) or 'no host'}"
        + (f"  [shard {plan.shard}]" if plan.shard else "")
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
    shard = f" (shard {plan.shard})" if plan.shard else ""
    out = [f"### opsrun plan: `{pb.name}`", "", f"`{pb.file}` on {len(plan.hosts)} host(s){shard}", ""]
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


def plan_json(plan: Plan, *, compact: bool = False) -> str:
    """The saved-plan document; `compact`: on one line (json's C encoder: what a run keeps in
    its folder, read by programs; indented it is ~5x slower to make)."""
    if compact:
        return json.dumps(to_json(plan), separators=(",", ":"), default=str) + "\n"
    return json.dumps(to_json(plan), indent=2, sort_keys=False, default=str) + "\n"


# ---------------------------------------------------------------- apply events

# Event types whose console line is folded into another one: a step's start and a successful
# try show in its step_end line, a registered result is data for `apply --resume`.
FOLDED = frozenset({"step_start", "register"})
_LABELS = {  # event type -> (console label, colour)
    "retry": ("retry", "33"),
    "escalate": ("escalate", "35"),
    "llm_fix": ("diagnosis", "35"),
    "fix_plan": ("fix", "36"),
    "fix": ("fix", "36"),
    "undo_plan": ("undo", "36"),
    "undo": ("undo", "36"),
    "rollback_start": ("rollback", "1;33"),
    "rollback_end": ("rollback", "1;33"),
    "waiting_for_human": ("waiting", "1;35"),
    "human_decision": ("human", "35"),
    "note": ("note", "2"),
    "blocked": ("blocked", "1;31"),
    "verify": ("verify", "36"),
    "attempt": ("try", "31"),
    "attempt_error": ("error", "31"),
    "interrupted": ("stopped", "33"),
    "artifact": ("artifact", "36"),
    "step_done_earlier": ("done", "2"),
    "host_unreachable": ("unreachable", "1;31"),
    "plan_diverged": ("diverged", "1;33"),
    "notify": ("notify", "36"),
    "handler": ("handler", "36"),
    "handlers_not_run": ("handlers", "33"),
    "until": ("until", "33"),
}
_RUNGS = {"llm": "the LLM fixer", "human": "a human"}
_WORD_LIMIT = 300


def clip(value: Any, limit: int = _WORD_LIMIT) -> str:
    """A field as one redacted line (never the text 'None')."""
    if value is None:
        return ""
    text = " ".join(redact(str(value)).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _last(text: Any) -> str:
    lines = [ln for ln in redact(str(text or "")).strip().splitlines() if ln.strip()]
    return clip(lines[-1], 200) if lines else ""


def _ran(ev: dict[str, Any]) -> str:
    """`$ command -> rc N (0.01s)` for an attempt-like record (attempt, fix, undo, verify)."""
    took = ev.get("duration")
    rc = ev.get("rc")
    text = f"$ {clip(ev.get('command'))} -> " + (f"rc {rc}" if rc is not None else "no exit code")
    text += f" ({float(took):.2f}s)" if took is not None else ""
    err = _last(ev.get("stderr_tail")) if ev.get("rc") not in (0, None) else ""
    return text + (f": {err}" if err else "")


def proposal_lines(steps: Any, *, color: bool = False) -> list[str]:
    """An LLM's proposed fix steps as plan lines (before any probe: a command is shown exactly,
    a declarative step is planned against the host just before it runs, shown as `?`)."""
    from runner.config import STEP_COMMON

    out: list[str] = []
    for i, step in enumerate(steps if isinstance(steps, list) else []):
        if not isinstance(step, dict):
            continue
        sid = clip(step.get("id") or f"fix_{i}")
        kind = next((k for k in step if k not in STEP_COMMON), "?")
        params = step.get(kind)
        command = params if isinstance(params, str) else params.get("command") if isinstance(params, dict) else None
        guarded = isinstance(params, dict) and any(params.get(k) for k in ("creates", "removes", "unless", "only_if"))
        name = f" ({clip(step['name'], 80)})" if step.get("name") else ""
        if isinstance(command, str) and not guarded:
            out += _change_lines("run", sid, f"{kind}{name}", "", (), [("cmd", command)], "", "", True, color)
        else:
            shown = json.dumps(params, default=str, ensure_ascii=False)
            reason = "planned against the host just before it runs"
            out += _change_lines("unknown", sid, f"{kind} {clip(shown, 160)}{name}", reason, (), [], "", "", False,
                                 color)
        verify = step.get("verify")
        vcmd = verify if isinstance(verify, str) else verify.get("command") if isinstance(verify, dict) else None
        if isinstance(vcmd, str):
            out.append(f"      verify: $ {clip(vcmd)}")
    return out


def describe(ev: dict[str, Any], *, color: bool = False) -> tuple[str, str, str, list[str]] | None:
    """(label, colour, text, detail lines) of one apply event, shared by the console and
    `runs show`; None for the folded types (FOLDED, and a try that succeeded)."""
    t = str(ev.get("type"))
    label, code = _LABELS.get(t, (t, ""))
    more: list[str] = []
    if t in FOLDED or (t == "attempt" and ev.get("rc") in (0, None)):
        return None
    if t == "step_end":
        status = str(ev.get("status"))
        tries = f" after {ev['attempts']} tries" if (ev.get("attempts") or 0) > 1 else ""
        took = float(ev.get("duration") or 0)
        table = ev.get("table")
        more = [redact(r) for r in str(table).rstrip("\n").split("\n")] if table else []
        return status, _STATUS_COLORS.get(status, ""), f"{tries} ({took:.2f}s) {clip(ev.get('message'))}".rstrip(), more
    if t == "retry":
        text = f"{clip(ev.get('failure'))}, {clip(ev.get('reason'))} in {ev.get('delay')}s"
    elif t == "escalate":
        rung = str(ev.get("to") or "?")
        why = clip(ev.get("reason") or ev.get("note")) or "no reason given"
        text = f"to {_RUNGS.get(rung, rung)} (rung '{rung}'): {why}"
    elif t == "llm_fix":
        who = "/".join(x for x in (clip(ev.get("provider")), clip(ev.get("model"))) if x)
        facts = [f"confidence {float(ev.get('confidence') or 0):.2f}"] + ([who] if who else [])
        if ev.get("latency_s") is not None:
            facts.append(f"{float(ev['latency_s']):.2f}s")
        diagnosis = clip(ev.get("diagnosis")) or "(no diagnosis)"
        text = f"{diagnosis} ({', '.join(facts)})"
        steps = ev.get("steps") if isinstance(ev.get("steps"), list) else []
        if ev.get("ok") and steps:
            more = [f"proposed fix ({len(steps)} step{'s' if len(steps) != 1 else ''}):"]
            more += [ln[2:] for ln in proposal_lines(steps, color=color)]
        else:
            label, code = "no fix", "31"
            more = [f"no fix to run: {clip(ev.get('error')) or 'the fixer gave no usable steps'}"]
            if steps:
                more += [ln[2:] for ln in proposal_lines(steps, color=color)]
    elif t in ("fix_plan", "undo_plan"):  # a fix or undo step, planned just before it runs
        raw = ev.get("plan")
        lines = plan_record_lines(raw if isinstance(raw, dict) else {}, color=color)
        text, more = lines[0].strip(), [ln[2:] for ln in lines[1:]]
    elif t in ("fix", "undo"):
        if "command" in ev:
            text = _ran(ev)
            if ev.get("rc") not in (0, None):
                label, code = f"{label} failed", "31"
        else:
            label, code = f"{label} failed", "31"
            text = clip(ev.get("error")) or "failed"
    elif t == "llm_fix_result":
        ok = bool(ev.get("ok"))
        label, code = ("fix ran", "32") if ok else ("fix failed", "31")
        text = "the step is tried again" if ok else "the fix did not complete; the step stays failed"
    elif t == "rollback_start":
        steps = [clip(s) for s in ev.get("steps") or []]
        text = f"undoing {', '.join(steps)} (newest first)" if steps else "no changed step has an undo"
    elif t == "undo_end":
        ok = bool(ev.get("ok"))
        label, code = ("undone", "33") if ok else ("undo failed", "1;31")
        text = "its undo ran" if ok else "its undo did not complete"
    elif t == "rollback_end":
        text = "finished"
    elif t == "waiting_for_human":
        text = f"the run stops for a human; report: {clip(ev.get('report'))}"
        if ev.get("notify_error"):
            text += f" (notification failed: {clip(ev.get('notify_error'))})"
    elif t == "human_decision":
        text = clip(ev.get("choice"))
        if ev.get("command"):
            text += f": $ {clip(ev.get('command'))}"
    elif t == "note":
        text = clip(ev.get("note"))
    elif t == "blocked":
        text = clip(ev.get("reason"))
    elif t == "verify":
        text = _ran(ev)
        if ev.get("rc") not in (0, None):
            label, code = "verify failed", "31"
    elif t == "attempt":
        label = f"try {ev.get('attempt')}"
        text = _ran(ev)
    elif t == "attempt_error":
        text = f"try {ev.get('attempt')}: {clip(ev.get('error_type'))}: {clip(ev.get('error'))}"
    elif t == "interrupted":
        text = clip(ev.get("note"))
    elif t == "artifact":
        text = f"{clip(ev.get('path'))} ({ev.get('bytes')} bytes)"
    elif t == "step_done_earlier":
        text = "finished in an earlier part of this run (not run again)"
    elif t == "host_unreachable":
        text = clip(ev.get("error"))
    elif t == "plan_diverged":
        text = f"not as planned: {clip(ev.get('reason'))}"
    elif t == "batch_start":
        text = ", ".join(clip(h) for h in ev.get("hosts") or [])
    elif t in ("notify", "handler", "handlers_not_run", "until"):
        text = conv.convention_text(ev)
    else:  # a type this module does not know yet: every field, none hidden
        skip = {"seq", "ts", "type", "host", "step", "instance"}
        text = ", ".join(f"{k}={clip(v, 120)}" for k, v in ev.items() if k not in skip and v not in (None, ""))
    return label, code, text, more


def event_where(ev: dict[str, Any]) -> str:
    host = clip(ev.get("host"))
    inst = clip(ev.get("instance") or ev.get("step"))
    return f"{host}  {inst}" if inst else host


def event_line(ev: dict[str, Any], *, color: bool = False) -> str | None:
    """The terminal text of an apply event (None: folded into another line, see FOLDED)."""
    d = describe(ev, color=color)
    if d is None:
        return None
    label, code, text, more = d
    if ev.get("type") == "batch_start":
        return f"-- batch: {text}"
    sep = "" if ev.get("type") == "step_end" else ":"
    head = f"  {_c(label.ljust(9), code, color)} {event_where(ev)}{sep}{' ' if text and sep else ''}{text}"
    return "\n".join([head.rstrip(), *("      " + m for m in more)])


def _escalation_line(host: str, rec: dict[str, Any]) -> tuple[str, str]:
    """(marker, text) of one escalation in the recap: `~` a step an LLM fix got through, `^` else."""
    rung = str(rec.get("rung") or "?")
    where = f"{host} {clip(rec.get('instance'))}"
    status = rec.get("step_status")
    diagnosis = clip(rec.get("diagnosis"), 160)
    if rung == "llm" and rec.get("fix_ran") and status in ("ok", "changed"):
        return "~", f"{where}: fixed by an LLM fix: {diagnosis}"
    if rung == "llm" and rec.get("fix_ran"):
        what = f"an LLM fix ran ({diagnosis}), then the step {status or 'did not finish'}"
    elif rung == "llm" and rec.get("fix_ok"):
        what = f"an LLM fix was proposed ({diagnosis}) but not run"
    elif rung == "llm":
        what = f"no LLM fix: {clip(rec.get('error'), 160) or 'no answer'}" + (f" ({diagnosis})" if diagnosis else "")
    elif rec.get("waiting"):
        what = "waiting for a human"
    else:
        what = f"a human chose {clip(rec.get('decision')) or 'nothing'}"
    return "^", f"{where}: escalated to {_RUNGS.get(rung, rung)}: {what}"


def _extras(recap: Recap, events: list[dict[str, Any]] | None) -> dict[str, dict[str, int]]:
    counts = event_counts(this_part(events or []))
    for name, hr in recap.hosts.items():
        c = counts.setdefault(name, dict.fromkeys(EXTRA_COUNTS, 0))
        c["rolled_back"] = max(c["rolled_back"], int(hr.rolled_back))
    return counts


def recap_text(recap: Recap, run_id: str, *, color: bool = False, events: list[dict[str, Any]] | None = None) -> str:
    """The recap table (step statuses, and from the run's events: steps fixed by an LLM fix,
    undos run), failures with their output, escalations and rollbacks, then the totals line."""
    cols = ("ok", "changed", "failed", "skipped", "blocked", "unreachable", "fixed", "undone")
    extra = _extras(recap, events)
    width = max([len(h) for h in recap.hosts] + [4])
    out = ["", "Recap " + run_id, "  " + "host".ljust(width) + "  " + "  ".join(c.rjust(8) for c in cols)]
    for name, hr in recap.hosts.items():
        cells = []
        for col in cols:
            v = hr.counts.get(col, 0) if col in hr.counts else extra[name].get(col, 0)
            cell = str(v).rjust(max(8, len(col)))
            cells.append(_c(cell, _STATUS_COLORS.get(col, "33"), color and v > 0 and col != "ok"))
        out.append("  " + name.ljust(width) + "  " + "  ".join(cells))
    esc = escalations(this_part(events or []))
    handled = handler_runs(this_part(events or []))
    for hr in recap.hosts.values():
        for rec in esc.get(hr.name, []):
            mark, line = _escalation_line(hr.name, rec)
            out.append(f"  {_c(mark, '32' if mark == '~' else '35', color)} {line}")
        if handled.get(hr.name):
            out.append(f"  {_c('*', '36', color)} {conv.handler_recap(hr.name, handled[hr.name])}")
        for r in hr.results:
            if r.status in ("failed", "blocked", "unreachable"):
                out.append(f"  {_c('x', '31', color)} {hr.name} {r.instance}: {redact(r.message)}")
                tail = (r.stderr or r.stdout).strip().splitlines()[-5:]
                out.extend(f"      | {redact(t)}" for t in tail)
        c = extra[hr.name]
        if c["rolled_back"]:
            n = c["undo_failed"]
            failed = f", {n} undo{'s' if n != 1 else ''} failed" if n else ""
            out.append(f"  {_c('<', '33', color)} {hr.name} rolled back: {c['undone']} step(s) undone{failed}")
    if recap.aborted:
        out.append(f"  run stopped: {recap.aborted}")
    t = recap.totals()
    e = {k: sum(c[k] for c in extra.values()) for k in EXTRA_COUNTS}
    undo_failed = f", {e['undo_failed']} undo failed" if e["undo_failed"] else ""
    rolled = [h for h, c in extra.items() if c["rolled_back"]]
    out.append(
        f"Apply: {t.get('changed', 0)} changed, {t.get('ok', 0)} ok, {t.get('failed', 0)} failed, "
        f"{t.get('skipped', 0)} skipped, {t.get('blocked', 0)} blocked, "
        f"{t.get('unreachable', 0)} unreachable, {e['fixed']} fixed, {e['undone']} undone{undo_failed}"
        + (f"; rolled back: {', '.join(rolled)}" if rolled else "")
    )
    return "\n".join(out) + "\n"


def recap_json(recap: Recap, run_id: str, *, events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The recap for machines: per host the counts (step statuses plus EXTRA_COUNTS from the
    events), each step's result, each escalation (rung, diagnosis, fix steps, what happened)."""
    extra = _extras(recap, events)
    esc = escalations(this_part(events or []))
    handled = handler_runs(this_part(events or []))
    totals = recap.totals()
    for c in extra.values():
        for k, v in c.items():
            totals[k] = totals.get(k, 0) + v
    return {
        "run_id": run_id,
        "ok": recap.ok,
        "aborted": recap.aborted,
        "totals": totals,
        "hosts": {
            n: {
                "counts": {**h.counts, **extra[n]},
                "unreachable": h.unreachable,
                "rolled_back": bool(extra[n]["rolled_back"]),
                "escalations": redact_data(esc.get(n, [])),
                "handlers": redact_data(handled.get(n, [])),
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


def recap_json_line(recap: Recap, run_id: str, *, events: list[dict[str, Any]] | None = None) -> str:
    """The recap as the last line of `apply --json`'s event stream (type `recap`)."""
    return json.dumps({"type": "recap", **recap_json(recap, run_id, events=events)}, default=str) + "\n"
