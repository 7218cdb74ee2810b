"""Escalation to a human: the evidence of a failed step, the escalation.md report, the
webhook notification, and the interactive prompt on a terminal.

Every text leaves through secrets.redact. Decides nothing (policy.py does) and never
touches a target.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from runner.secrets import is_ref, redact, redact_data, resolve

TAIL_LINES = 40


@dataclass
class Evidence:
    """What a human (or the LLM fixer) needs to judge a failed step."""

    run_id: str
    host: str
    transport: str
    step_id: str
    instance: str
    kind: str
    title: str
    params: Any  # the step's parameters as written (templates unrendered)
    commands: list[str]  # the rendered actions that were sent
    reason: str
    rc: int | None = None
    stdout: str = ""
    stderr: str = ""
    attempts: list[dict[str, Any]] = field(default_factory=list)
    tried: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return redact_data(asdict(self))


def _tail(text: str, n: int = TAIL_LINES) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-n:])


def report_markdown(ev: Evidence) -> str:
    """escalation.md: what failed, the evidence, what was tried, how to go on."""
    lines = [
        f"# opsrun needs a human: step `{ev.instance}` on `{ev.host}`",
        "",
        f"- run: `{ev.run_id}`",
        f"- step: `{ev.step_id}` ({ev.kind}) {ev.title}",
        f"- host: `{ev.host}` ({ev.transport})",
        f"- why: {ev.reason}",
        f"- exit code: {ev.rc if ev.rc is not None else 'n/a'}",
        f"- escalation already tried: {', '.join(ev.tried) or 'none'}",
        "",
        "## Commands sent",
        "",
        "```sh",
        *(ev.commands or ["(none)"]),
        "```",
        "",
        "## Attempts",
        "",
        "| # | outcome | rc | last stderr line |",
        "|---|---|---|---|",
    ]
    for a in ev.attempts:
        last = (str(a.get("stderr") or "").strip().splitlines() or [""])[-1].replace("|", "\\|")
        lines.append(f"| {a.get('attempt')} | {a.get('outcome')} | {a.get('rc')} | {last} |")
    lines += [
        "",
        "## stdout (tail)",
        "",
        "```",
        _tail(ev.stdout) or "(empty)",
        "```",
        "",
        "## stderr (tail)",
        "",
        "```",
        _tail(ev.stderr) or "(empty)",
        "```",
        "",
        "## The step as written",
        "",
        "```json",
        json.dumps(ev.params, indent=2, default=str),
        "```",
        "",
        "## What next",
        "",
        "Fix the cause (on the host, or in the playbook), then continue the run; it re-runs",
        "this step and never re-runs the steps that already finished:",
        "",
        f"    opsrun apply --resume {ev.run_id}          # at a terminal: shows the plan, asks first",
        f"    opsrun apply --resume {ev.run_id} --yes    # without a terminal (CI): nobody can be asked",
        "",
    ]
    return redact("\n".join(lines))


def notify_webhook(url: str, ev: Evidence, *, base_dir: str = ".", timeout: float = 5.0) -> str:
    """POST the evidence as JSON. Returns an empty string on success, else why it failed
    (a failed notification never hides the escalation itself)."""
    target = str(resolve(url, base_dir=base_dir, where="policy.notify.webhook")) if is_ref(url) else url
    if not target.startswith(("http://", "https://")):
        return "webhook URL must start with http:// or https://"
    import urllib.error  # only when a webhook is told (urllib.request costs ~8 ms of start-up)
    import urllib.request

    body = json.dumps({"event": "opsrun.escalation", **ev.as_dict()}, default=str).encode()
    req = urllib.request.Request(  # noqa: S310 - scheme checked above
        target, data=body, method="POST", headers={"Content-Type": "application/json", "User-Agent": "opsrun"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - the user's own URL
            if resp.status >= 300:
                return f"webhook answered HTTP {resp.status}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return redact(f"webhook failed: {exc}")
    return ""


HUMAN_CHOICES = {
    "r": "retry",
    "s": "skip",
    "a": "abort",
    "e": "edit",
    "o": "output",
}


def terminal_prompt(ask: Callable[[str], str], say: Callable[[str], None]) -> Callable[[Evidence], tuple[str, str]]:
    """A human decision on a terminal: (choice, new_command). `ask` reads a line."""

    def decide(ev: Evidence) -> tuple[str, str]:
        say(
            redact(
                f"\n!! step '{ev.instance}' on {ev.host} failed: {ev.reason}\n"
                + "".join(f"   $ {c}\n" for c in ev.commands)
                + (f"   stderr: {_tail(ev.stderr, 5)}\n" if ev.stderr.strip() else "")
            )
        )
        while True:
            answer = (
                ask("[r]etry, [s]kip this step, [a]bort, [e]dit the command and retry, show full [o]utput? ")
                .strip()
                .lower()
            )
            choice = HUMAN_CHOICES.get(answer[:1], "")
            if choice == "output":
                say(redact(f"--- stdout\n{ev.stdout}\n--- stderr\n{ev.stderr}\n---"))
                continue
            if choice == "edit":
                current = ev.commands[-1] if ev.commands else ""
                new = ask(f"new command (was: {redact(current)}): ").strip()
                if not new:
                    continue
                return "edit", new
            if choice:
                return choice, ""
            say("please answer r, s, a, e or o")

    return decide


@dataclass
class FixAttempt:
    """What the LLM fixer proposed for one failed step (or why it could not)."""

    ok: bool
    steps: list[dict[str, Any]] = field(default_factory=list)
    fingerprint: str = ""
    diagnosis: str = ""
    confidence: float = 0.0
    provider: str = ""
    model: str = ""
    latency_s: float = 0.0
    prompt_chars: int = 0
    error: str = ""
    approve: Callable[[], bool] = field(default=lambda: False, repr=False)

    def journal(self) -> dict[str, Any]:
        return redact_data(
            {
                "ok": self.ok,
                "diagnosis": self.diagnosis,
                "confidence": self.confidence,
                "steps": self.steps,
                "provider": self.provider,
                "model": self.model,
                "latency_s": round(self.latency_s, 3),
                "prompt_chars": self.prompt_chars,
                "error": self.error,
                "fingerprint": self.fingerprint,
            }
        )
