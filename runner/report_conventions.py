"""The plan and apply-event lines of handlers (`notify:`) and `until:`, for runner/report.py.
Pure string building: every value passes through secrets.redact; no printing here.
"""

from __future__ import annotations

from typing import Any

from runner.secrets import redact


def _s(value: Any, limit: int = 300) -> str:
    """A field as one redacted line (never the text 'None')."""
    if value is None:
        return ""
    text = " ".join(redact(str(value)).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def handler_note(at: str, notified_by: Any) -> str:
    """`  (handler of step 'conf', after the host's steps)`: what a plan says beside a handler's run."""
    ids = list(notified_by or ())
    of = f" of step{'s' if len(ids) > 1 else ''} " + ", ".join(f"'{_s(i)}'" for i in ids) if ids else ""
    where = "after the host's steps" if at == "end" else f"at flush step '{_s(at)}'"
    return f"  (handler{of}, {where})"


def convention_text(ev: dict[str, Any]) -> str:
    """The text of a handler or until event (docs/playbooks.md#handlers, #until)."""
    t = ev.get("type")
    at = "after the host's steps" if ev.get("at") == "end" else f"at flush step '{_s(ev.get('at'))}'"
    if t == "notify":
        return "changed: notifies " + ", ".join(_s(h) for h in ev.get("handlers") or [])
    if t == "handler":
        return f"runs {at} (notified by {', '.join(_s(s) for s in ev.get('notified_by') or [])})"
    if t == "handlers_not_run":
        return f"not run {at}: {', '.join(_s(h) for h in ev.get('handlers') or [])}: {_s(ev.get('reason'))}"
    tries = f"try {ev.get('tries')} of {ev.get('of')}"
    if ev.get("error"):
        return f"{tries}: cannot evaluate {_s(ev.get('expression'))}: {_s(ev.get('error'))}"
    if ev.get("met"):
        return f"{tries}: {_s(ev.get('expression'))} holds"
    again = f"; again in {ev.get('delay')}s" if ev.get("delay") is not None else ""
    return f"{tries}: {_s(ev.get('expression'))} does not hold yet{again}"


def handler_recap(host: str, runs: list[dict[str, Any]]) -> str:
    """`web1 handlers: restart@fl changed, restart ok`: one recap line per host."""
    parts = []
    for r in runs:
        why = f" ({_s(r.get('reason'), 120)})" if r.get("status") == "not run" and r.get("reason") else ""
        parts.append(f"{_s(r.get('run'))} {_s(r.get('status')) or 'did not finish'}{why}")
    return f"{host} handlers: {', '.join(parts)}"
