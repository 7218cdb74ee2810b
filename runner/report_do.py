"""`opsrun runs show` of an `opsrun do` run: its drafts, plans, approvals, apply passes, fixes and replans
as one timeline (text; --json is the events themselves). Pure rendering: imports no apply or llm module.
"""

from __future__ import annotations

import json
from typing import Any

from runner.journal import RunInfo
from runner.report_runs import rel_time
from runner.secrets import redact


def is_do_run(run: RunInfo) -> bool:
    return bool(run.do_start) and not run.start


def _s(value: Any, limit: int = 300) -> str:
    text = redact(str(value if value is not None else ""))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def event_text(ev: dict[str, Any]) -> str | None:
    """One line (or a few) for a do event; None for a type this timeline does not show."""
    t, n = ev.get("type"), ev.get("n")
    if t == "draft":
        if not ev.get("ok"):
            return f"draft {n}: not usable after {ev.get('tries') or '?'} tries: {_s(ev.get('error'), 400)}"
        tries = ev.get("tries")
        how = "first try" if tries == 1 else f"{tries} tries"
        steps = ", ".join(_s(s, 40) for s in ev.get("steps") or [])
        return (f"draft {n}: {len(ev.get('steps') or [])} step(s) ({steps}) by {_s(ev.get('provider'))} "
                f"({_s(ev.get('model'))}), {how}, {ev.get('latency_s')}s: {_s(ev.get('file'))}")
    if t == "plan":
        c = ev.get("counts") or {}
        parts = [f"{v} {k.replace('_', ' ')}" for k, v in c.items() if v]
        return f"plan {n}: {', '.join(parts) or 'nothing'} on {', '.join(ev.get('hosts') or [])} ({ev.get('digest')})"
    if t == "approval":
        d = ev.get("decision")
        if d == "auto":
            lim = ev.get("limits") or {}
            return f"approval {n}: automatic (--yes, within max_changes {lim.get('max_changes')})"
        if d == "human":
            return f"approval {n}: approved at the terminal by {_s(ev.get('by'))}"
        if d == "not_needed":
            return f"approval {n}: not needed ({_s(ev.get('reason'))})"
        if d == "declined":
            return f"approval {n}: declined at the terminal by {_s(ev.get('by'))}"
        reasons = "; ".join(_s(r) for r in ev.get("reasons") or []) or "nobody at a terminal"
        return f"approval {n}: refused: {reasons}"
    if t == "apply":
        return f"apply {n}: run {ev.get('apply_run')} (opsrun runs show {ev.get('apply_run')})"
    if t == "applied":
        totals = {k: v for k, v in (ev.get("totals") or {}).items() if v}
        return f"apply {n}: {'ok' if ev.get('ok') else 'failed'} {json.dumps(totals)}"
    if t == "fix":
        where = f"{_s(ev.get('instance') or ev.get('step'))} on {_s(ev.get('host'))}"
        if ev.get("ok"):
            return (f"fix: {where}: {_s(ev.get('diagnosis'))} ({len(ev.get('steps') or [])} step(s), "
                    f"{_s(ev.get('provider'))}/{_s(ev.get('model'))})")
        return f"fix: {where}: no usable fix: {_s(ev.get('error'))}"
    if t == "fix_result":
        return f"fix: {_s(ev.get('instance'))} on {_s(ev.get('host'))}: {'ran' if ev.get('ok') else 'did not complete'}"
    if t == "replan":
        return f"replan: draft {n} asked for, after run {ev.get('after_run')}: {_s(ev.get('failed'))}"
    if t == "do_end":
        why = f": {_s(ev.get('reason'), 400)}" if ev.get("reason") else ""
        return f"do end: {ev.get('outcome')} after {ev.get('passes')} pass(es){why}"
    return None


def do_timeline(run: RunInfo) -> str:
    s = run.do_start
    out = [
        f"do run {run.run_id}: {_s(s.get('request'), 200)!r}"
        + (f" (limit {s.get('limit')})" if s.get("limit") else ""),
        f"started {s.get('ts', '?')} by {s.get('user', '?')}  outcome: {run.outcome}"
        f"  ({'--yes' if s.get('yes') else 'asking'}; {_s(s.get('deadline'))})",
        "",
    ]
    t0 = s.get("ts")
    for ev in run.events:
        text = event_text(ev)
        if text is not None:
            out.append(f"{rel_time(t0, ev.get('ts'))}  {text}")
    if run.end is None:
        out.append("(no do_end event: the run was interrupted or is still going)")
    return "\n".join(out) + "\n"
