"""The LLM fixer: a failed step and its evidence -> a proposed fix (playbook steps to run on the
same host before the step is retried), held to the author's gates: our validator, the safety
rules, no repeat of a fix already tried. It prints nothing and runs nothing on a host except a
read-only `uname` for the evidence (make_fixer); every text in a prompt passes through redact().

For apply (the CLI hands it to runner.apply.usecase): the ladder's `fixer: Callable[[Evidence], FixAttempt]` is

    from runner.llm.fixer import make_fixer
    fixer = make_fixer(session)            # gateway loaded at the first call: gateway_for(None)
    # optional: make_fixer(session, gateway, approve=lambda fix: <ask a human>, max_repairs=1)

Lower level, for other callers:

    evidence = FixEvidence(step_id=step.id, kind=step.kind, step=step_as_written(step),
                           commands=[...rendered...], rc=..., stdout=..., stderr=...,
                           host=..., transport=..., facts=host_facts(session, host),
                           attempts=attempts_from(attempt_events),  # or [{"attempt", "rc", "stderr"}]
                           previous=ledger.previous(host, step.id), sensitive=step.sensitive)
    fix = propose_fix(gateway, evidence, rules=session.guard(host),
                      hosts=set(inventory.hosts), groups=set(inventory.groups))
    # -> Fix(diagnosis, confidence, steps, provider, model, latency_s, prompt_chars, fingerprint,
    #        tries, document); fix.playbook(original) to plan it; fix.journal() for the journal
    # raises FixRejected(reason naming the rule, rule=...) or GatewayError / MissingExtra
    ledger.record(host, step.id, fix, outcome="the step failed again (rc 1: ...)")
    ledger.blocked(host, step.id, policy.max_llm_fixes)   # a reason when the limit is reached
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from runner import load
from runner.errors import Diagnostic, OpsrunError
from runner.llm import grammar
from runner.llm.gates import (
    Check,
    Judge,
    NotJSON,
    as_check,
    compact_json,
    kind_hints,
    numbered,
    one_line,
    repair_loop,
    safety_diagnostics,
    step_commands,
    to_yaml,
    usable_kinds,
)
from runner.secrets import redact, redact_data

if TYPE_CHECKING:
    from runner.escalate import Evidence, FixAttempt
    from runner.gateway import Gateway
    from runner.model import Playbook, Step
    from runner.session import Session

FIX_FILE = "<fix>"
DEFAULT_MAX_REPAIRS = 1
MAX_FIX_STEPS = 5
TAIL_CHARS = 2000  # of stdout / stderr in the prompt
ATTEMPT_TAIL_CHARS = 400
FINGERPRINT_LINES = 20
UNAME_COMMAND = "uname -srmo 2>/dev/null || uname -a"  # read-only; its output goes in facts["os"]
_VOLATILE = re.compile(r"0x[0-9a-f]+|[0-9a-f]{12,}|\d+", re.IGNORECASE)


# ---------------------------------------------------------------- evidence and results


@dataclass(frozen=True)
class TriedFix:
    """A fix already applied for this step on this host, and what happened next."""

    diagnosis: str
    steps: list[dict[str, Any]]
    outcome: str  # "fixed", "failed again: rc 1: ...", "not applied: ..."
    digest: str


@dataclass(frozen=True)
class FixEvidence:
    """What the fixer may tell the model. All of it is redacted before it goes in a prompt."""

    step_id: str
    kind: str
    step: dict[str, Any]  # the step as written in the playbook
    commands: Sequence[str]  # what was sent (rendered)
    rc: int | None
    stdout: str
    stderr: str
    host: str
    transport: str
    facts: dict[str, str] = field(default_factory=dict)  # e.g. {"os": "Linux 6.1.0 x86_64"}
    attempts: Sequence[dict[str, Any]] = ()  # [{"attempt": 1, "rc": 1, "stderr": "..."}]
    previous: Sequence[TriedFix] = ()  # from FixLedger.previous(host, step_id)
    sensitive: bool = False  # the step is `sensitive: true`: commands and output are not sent

    @property
    def fingerprint(self) -> str:
        return failure_fingerprint(self.step_id, self.host, self.rc, self.stderr or self.stdout)


@dataclass(frozen=True)
class Fix:
    """A proposed fix that passed every gate. `steps` are playbook steps (dicts, as a person
    would write them); `document` is them wrapped in a playbook (for located messages)."""

    diagnosis: str
    confidence: float
    steps: list[dict[str, Any]]
    provider: str
    model: str
    latency_s: float
    prompt_chars: int
    fingerprint: str  # of the failure it answers
    tries: int
    document: load.Document

    @property
    def digest(self) -> str:
        return steps_digest(self.steps)

    def playbook(self, original: Playbook) -> Playbook:
        """The fix as a Playbook with the original's vars, folder and safety lists, targeting
        the failed host (plan it, show it, apply it like any playbook)."""
        from runner import config, schema

        built = config.build_playbook(self.document, set(schema.kind_names()))
        return replace(built, name=f"{original.name}: fix for step {self.document.data['name']}",
                       vars=dict(original.vars), dir=original.dir, file=original.file,
                       forbid=original.forbid, allow=original.allow, policy=dict(original.policy))

    def journal(self) -> dict[str, Any]:
        """The fields a journal event records (secrets masked)."""
        return redact_data({"diagnosis": self.diagnosis, "confidence": self.confidence, "steps": self.steps,
                            "provider": self.provider, "model": self.model, "latency_s": round(self.latency_s, 3),
                            "prompt_chars": self.prompt_chars, "fingerprint": self.fingerprint,
                            "tries": self.tries, "digest": self.digest})


class FixRejected(OpsrunError):
    """No usable fix: still invalid after the repairs, refused by a safety rule (`rule` set and
    named in the reason), or the same as a fix already tried."""

    def __init__(self, reason: str, *, rule: str | None = None, diagnosis: str = "",
                 diagnostics: Sequence[Diagnostic] = (), provider: str = "", model: str = "") -> None:
        super().__init__(redact(f"LLM fix rejected: {reason}"))
        self.reason = redact(reason)
        self.rule = rule
        self.diagnosis = redact(diagnosis)
        self.diagnostics = list(diagnostics)
        self.provider = provider
        self.model = model


# ---------------------------------------------------------------- fingerprints and the ledger


def failure_fingerprint(step_id: str, host: str, rc: int | None, stderr_tail: str) -> str:
    """Equal for failures that are the same apart from numbers and ids (pids, times, ports):
    the step, the host, the exit code and the last lines of stderr."""
    lines = [" ".join(_VOLATILE.sub("#", ln).split()) for ln in stderr_tail.strip().splitlines()]
    tail = "\n".join(ln for ln in lines if ln)[-TAIL_CHARS:]
    tail = "\n".join(tail.splitlines()[-FINGERPRINT_LINES:])
    blob = json.dumps([step_id, host, rc, tail], separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def steps_digest(steps: Sequence[Any]) -> str:
    """The same fix gets the same digest, whatever the step ids or key order."""
    def strip(step: Any) -> Any:
        return {k: v for k, v in step.items() if k not in ("id", "name", "description")} \
            if isinstance(step, dict) else step
    blob = json.dumps([strip(s) for s in steps], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class FixLedger:
    """One run's memory of fixes: per (host, step) the fixes applied and their outcome, so a
    fix is never tried twice and the number of fixes per step is bounded. Thread-safe."""

    def __init__(self, max_per_step: int = 2) -> None:
        self.max_per_step = max_per_step
        self._tried: dict[tuple[str, str], list[TriedFix]] = {}
        self._failures: dict[str, int] = {}
        self._lock = threading.Lock()

    def blocked(self, host: str, step_id: str, limit: int | None = None) -> str | None:
        """Why not to ask for another fix (the step's limit, e.g. its policy's max_llm_fixes,
        else max_per_step, is reached), or None."""
        limit = self.max_per_step if limit is None else limit
        with self._lock:
            n = len(self._tried.get((host, step_id), []))
        if n >= limit:
            return f"{n} LLM fix{'es' if n != 1 else ''} already tried for step '{step_id}' on {host} " \
                   f"(limit {limit})"
        return None

    def seen(self, fingerprint: str) -> int:
        """Count a failure; returns how many times this exact failure was seen before."""
        with self._lock:
            n = self._failures.get(fingerprint, 0)
            self._failures[fingerprint] = n + 1
        return n

    def previous(self, host: str, step_id: str) -> tuple[TriedFix, ...]:
        with self._lock:
            return tuple(self._tried.get((host, step_id), []))

    def record(self, host: str, step_id: str, fix: Fix, outcome: str) -> None:
        with self._lock:
            self._tried.setdefault((host, step_id), []).append(
                TriedFix(fix.diagnosis, fix.steps, redact(outcome), fix.digest))


# ---------------------------------------------------------------- the prompt


def _tail(text: str, limit: int) -> str:
    text = redact(text or "").rstrip()
    return text if len(text) <= limit else "..." + text[-limit:]


FIX_STEP_KEYS = tuple(k for k in grammar.STEP_KEYS if k != "hosts")  # a fix runs on the failed host


def fix_schema(transport: str) -> dict[str, Any]:
    """The answer's JSON Schema: diagnosis, confidence and playbook steps (one flattened
    object per kind this host's transport can run, see runner.llm.grammar)."""
    from runner.schema import load_schema

    defs = grammar.step_defs(load_schema("playbook"), usable_kinds({transport}), FIX_STEP_KEYS)
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["diagnosis", "confidence", "steps"],
        "properties": {
            "diagnosis": {"type": "string", "minLength": 1},  # what went wrong and why
            "confidence": {"type": "number"},  # 0 to 1 (checked by _check)
            # steps to run before the failed step is retried; empty when nothing safe can be done
            "steps": {"type": "array", "maxItems": MAX_FIX_STEPS, "items": {"$ref": "#/$defs/step"}},
        },
        "$defs": defs,
    }


def prompt(evidence: FixEvidence, schema: dict[str, Any]) -> list[dict[str, str]]:
    """The messages for the model, every part redacted (a sensitive step's commands and output
    are left out altogether)."""
    e = evidence
    if e.sensitive:
        hidden = "(hidden: the step is sensitive)"
        e = replace(e, commands=[hidden], stdout=hidden, stderr=hidden,
                    attempts=[{**a, "stderr": hidden} for a in e.attempts])
    facts = "; ".join(f"{k}: {one_line(str(v), 200)}" for k, v in e.facts.items())
    lines = [
        f"Host: {e.host} (transport {e.transport}{'; ' + facts if facts else ''})",
        f"Failed step '{e.step_id}' (kind {e.kind}), as written in the playbook:",
        to_yaml(e.step).rstrip(),
        "",
        "Commands sent:" if e.commands else "Commands sent: (none recorded)",
        *[f"$ {c}" for c in e.commands],
        f"Exit code: {e.rc if e.rc is not None else 'none (no command result)'}",
        "stderr (last part):", _tail(e.stderr, TAIL_CHARS) or "(empty)",
        "stdout (last part):", _tail(e.stdout, TAIL_CHARS) or "(empty)",
    ]
    if e.attempts:
        lines.append("Earlier attempts:")
        for a in e.attempts:
            err = one_line(_tail(str(a.get("stderr") or a.get("stderr_tail") or ""), ATTEMPT_TAIL_CHARS), 300)
            lines.append(f"- attempt {a.get('attempt', '?')}: rc {a.get('rc')}" + (f": {err}" if err else ""))
    if e.previous:
        lines.append("Fixes already tried for this step (do not propose them again):")
        for t in e.previous:
            lines.append(f"- {one_line(t.diagnosis, 200)} -> {one_line(t.outcome, 200)}; steps: "
                         f"{compact_json(t.steps)}")
    system = (
        "You are the fixer of opsrun, a tool that runs declarative playbooks on servers. A step failed "
        "after its retries. Diagnose the failure from the evidence and propose the smallest safe fix: "
        "playbook steps that run on the same host before the failed step is retried (not a replacement "
        "of the failed step). Answer with ONE JSON object and nothing else, of this shape (* = required; "
        "name = letters, digits and _):\n"
        f"{grammar.compact(schema, label='Answer')}\n\n"
        "Rules:\n"
        "- Step ids start with fix_ and are unique; no `hosts` key (a fix runs on the failed host only).\n"
        f"- confidence: a number from 0 to 1; at most {MAX_FIX_STEPS} steps.\n"
        "- Prefer declarative kinds (package, file, line, service) and guarded, idempotent commands.\n"
        "- Never destructive commands (deleting data, formatting disks, rebooting): opsrun refuses them.\n"
        "- If nothing safe can fix it (a typo in the playbook, a missing secret), return an empty steps "
        "list and say what a person must change in the diagnosis; set confidence honestly."
    )
    return [{"role": "system", "content": redact(system)}, {"role": "user", "content": redact("\n".join(lines))}]


# ---------------------------------------------------------------- checking an answer


@dataclass
class _Verdict:
    diagnostics: list[Diagnostic]
    rules: list[str]
    doc: load.Document | None
    repeat: bool = False

    @property
    def ok(self) -> bool:
        return not self.diagnostics


def _check(data: Any, evidence: FixEvidence, checks: Sequence[Check], hosts: set[str],
           groups: set[str]) -> _Verdict:
    from runner import schema

    if isinstance(data, NotJSON):
        return _Verdict([Diagnostic(FIX_FILE, 0, 0, f"the answer is not valid JSON ({data.error})",
                                    hint="answer with one JSON object {diagnosis, confidence, steps}")], [], None)
    if not isinstance(data, dict):
        return _Verdict([Diagnostic(FIX_FILE, 0, 0, "the answer must be one JSON object "
                                                     "{diagnosis, confidence, steps}")], [], None)
    diags: list[Diagnostic] = []
    if not isinstance(data.get("diagnosis"), str) or not data["diagnosis"].strip():
        diags.append(Diagnostic(FIX_FILE, 0, 0, "`diagnosis` must be a non-empty string"))
    conf = data.get("confidence")
    if isinstance(conf, bool) or not isinstance(conf, int | float) or not 0 <= conf <= 1:
        diags.append(Diagnostic(FIX_FILE, 0, 0, f"`confidence` must be a number from 0 to 1 (got {conf!r})"))
    steps = data.get("steps")
    if not isinstance(steps, list):
        diags.append(Diagnostic(FIX_FILE, 0, 0, "`steps` must be a list of playbook steps"))
        return _Verdict(diags, [], None)
    if len(steps) > MAX_FIX_STEPS:
        diags.append(Diagnostic(FIX_FILE, 0, 0, f"at most {MAX_FIX_STEPS} steps (got {len(steps)})"))
    if not steps:
        return _Verdict(diags, [], None)
    wrapper = {"opsrun": 1, "name": evidence.step_id, "hosts": evidence.host, "steps": steps}
    doc = load.parse(to_yaml(wrapper), FIX_FILE)
    diags += schema.validate_playbook(doc, hosts=hosts | {evidence.host}, groups=groups)
    for i, step in enumerate(steps):
        if isinstance(step, dict) and "hosts" in step:
            diags.append(doc.diag(("steps", i, "hosts"), "a fix runs on the failed host only",
                                  hint="remove `hosts`", key=True))
    commands = [c for i, s in enumerate(steps) for c in step_commands(s, ("steps", i))]
    blocked = safety_diagnostics(doc, checks, commands=commands)
    diags += [d for d, _ in blocked]
    digest = steps_digest(steps)
    repeat = any(t.digest == digest for t in evidence.previous)
    if repeat:
        diags.append(doc.diag(("steps",), "this fix was already tried for this step and the step failed "
                                          "again: propose something else, or an empty list"))
    diags.sort(key=lambda d: (d.line, d.col))
    return _Verdict(diags, [r for _, r in blocked], doc, repeat)


def propose_fix(gateway: Gateway, evidence: FixEvidence, *, rules: Check | Any, hosts: set[str],
                groups: set[str], max_repairs: int = DEFAULT_MAX_REPAIRS, deadline: float | None = None) -> Fix:
    """Ask the gateway (task "fix") for a fix; feed located problems back up to `max_repairs`
    times. `rules`: the host's safety rules (runner.safety.Rules or session.guard(host)).
    Returns a Fix (steps may be empty: only a diagnosis). Raises FixRejected, or the gateway's
    GatewayError / MissingExtra when no model answered. `deadline`: a run's deadline
    (Router.deadline()) shared with its other requests; default routing.deadline_s from now."""
    check = as_check(rules)
    schema = fix_schema(evidence.transport)
    base = prompt(evidence, schema)
    prompt_chars = sum(len(m["content"]) for m in base)
    tries = 1 + max(0, max_repairs)

    kinds = usable_kinds({evidence.transport})

    def feedback(verdict: _Verdict, tries_left: int) -> str:
        lines = [f"Your fix has {len(verdict.diagnostics)} problem(s) (positions refer to the steps "
                 "wrapped in a playbook, as YAML):", *[d.render() for d in kind_hints(verdict.diagnostics, kinds)]]
        if verdict.doc is not None:
            lines += ["", numbered(verdict.doc.text)]
        lines += ["", "Answer again with the whole corrected JSON object."]
        return redact("\n".join(lines))

    out = repair_loop(gateway, base, Judge(lambda data: _check(data, evidence, [check], hosts, groups)),
                      schema=schema, task="fix", tries=tries, feedback=feedback, deadline=deadline)
    answer, verdict, data = out.answer, out.verdict, out.answer.data
    if verdict.ok:
        wrapper = verdict.doc or load.parse(to_yaml({"opsrun": 1, "name": evidence.step_id,
                                                     "hosts": evidence.host, "steps": []}), FIX_FILE)
        return Fix(str(data["diagnosis"]).strip(), float(data["confidence"]), list(data["steps"]),
                   answer.provider, answer.model, answer.latency_s, prompt_chars + out.repair_chars,
                   evidence.fingerprint, out.tries, wrapper)
    diagnosis = str(data.get("diagnosis", "")) if isinstance(data, dict) else ""
    who = {"provider": answer.provider, "model": answer.model}
    if verdict.rules:
        rule = verdict.rules[0]
        first = next(d for d in verdict.diagnostics if "safety rule" in d.message)
        raise FixRejected(f"blocked by safety rule '{rule}': {first.message.split(': ', 1)[-1]}", rule=rule,
                          diagnosis=diagnosis, diagnostics=verdict.diagnostics, **who)
    if verdict.repeat:
        raise FixRejected("the model proposed a fix that was already tried", diagnosis=diagnosis,
                          diagnostics=verdict.diagnostics, **who)
    n = len(verdict.diagnostics)
    raise FixRejected(f"the proposed steps are not valid after {tries} tr{'ies' if tries != 1 else 'y'} "
                      f"({n} problem{'s' if n != 1 else ''}: {verdict.diagnostics[0].message})",
                      diagnosis=diagnosis, diagnostics=verdict.diagnostics, **who)


def step_as_written(step: Step) -> dict[str, Any]:
    """A runner.model.Step back to the mapping the playbook holds (for FixEvidence.step)."""
    out: dict[str, Any] = {"id": step.id}
    if step.name:
        out["name"] = step.name
    for key in ("hosts", "when", "loop", "register"):
        if getattr(step, key) is not None:
            out[key] = getattr(step, key)
    if step.tags:
        out["tags"] = list(step.tags)
    out[step.kind] = step.params
    for key in ("verify", "undo", "timeout"):
        if getattr(step, key) is not None:
            out[key] = getattr(step, key)
    if step.policy:
        out["policy"] = dict(step.policy)
    if step.sensitive:
        out["sensitive"] = True
    return out


def host_facts(session: Session, host: str, *, timeout: float = 10.0) -> dict[str, str]:
    """{"os": uname} for a host with a shell (read-only, through its guarded transport);
    {} when it has no shell or the command fails."""
    try:
        transport = session.transport(host)
        if "shell" not in type(transport).capabilities:
            return {}
        res = transport.run(UNAME_COMMAND, timeout=timeout)
    except OpsrunError:
        return {}
    text = res.out.strip()
    return {"os": one_line(text, 200)} if res.rc == 0 and text else {}


def make_fixer(session: Session, gateway: Gateway | None = None, *, max_repairs: int = DEFAULT_MAX_REPAIRS,
               approve: Callable[[Fix], bool] | None = None, facts: bool = True,
               deadline: float | None = None) -> Callable[[Evidence], FixAttempt]:
    """The fixer as apply's escalation ladder calls it: runner.escalate.Evidence -> FixAttempt.

    The gateway is loaded at the first call (default: runner.gateway.gateway_for(None), the
    run's gateway), so a run that never escalates never reads gateway.yaml or imports litellm.
    It remembers, per host and step, the fixes it proposed: the next call for the same step
    (the step failed again) records that outcome and tells the model, and the same fix is not
    proposed twice. FixAttempt.fingerprint is "<failure fingerprint>:<fix digest>". No answer,
    a rejected fix, or a diagnosis without steps: ok=False with the reason in `error`.
    `deadline`: every proposal shares this one (`opsrun do`'s run deadline); default: each
    proposal gets routing.deadline_s."""
    from runner.escalate import FixAttempt

    ledger = FixLedger(max_per_step=1_000_000)  # the policy's max_llm_fixes bounds the calls
    proposed: dict[tuple[str, str], tuple[Fix, str]] = {}
    host_info: dict[str, dict[str, str]] = {}
    gateways: list[Gateway] = [gateway] if gateway is not None else []
    lock = threading.Lock()

    def fixer(ev: Evidence) -> FixAttempt:
        key = (ev.host, ev.step_id)
        step = next((s for s in session.playbook.steps if s.id == ev.step_id), None)
        written = step_as_written(step) if step is not None else {"id": ev.step_id, ev.kind: ev.params}
        fingerprint = failure_fingerprint(ev.step_id, ev.host, ev.rc, ev.stderr or ev.stdout)
        with lock:
            last = proposed.pop(key, None)
        if last is not None:  # asked again: the step still fails after the last fix
            fix, before = last
            tail = (ev.stderr or ev.stdout).strip().splitlines()
            same = "; the same failure as before" if before == fingerprint else ""
            ledger.record(ev.host, ev.step_id, fix, f"the step failed again (rc {ev.rc}"
                          + (f": {one_line(tail[-1], 200)}" if tail else "") + f"){same}")
        if facts and ev.host not in host_info:
            info = host_facts(session, ev.host)
            with lock:
                host_info[ev.host] = info
        evidence = FixEvidence(
            step_id=ev.step_id, kind=ev.kind, step=written, commands=list(ev.commands), rc=ev.rc,
            stdout=ev.stdout, stderr=ev.stderr, host=ev.host, transport=ev.transport,
            facts=host_info.get(ev.host, {}), attempts=list(ev.attempts),
            previous=ledger.previous(ev.host, ev.step_id), sensitive=bool(step is not None and step.sensitive))
        try:
            with lock:
                if not gateways:
                    from runner.gateway import gateway_for

                    gateways.append(gateway_for(None))
            fix = propose_fix(gateways[0], evidence, rules=session.guard(ev.host),
                              hosts=set(session.inventory.hosts), groups=set(session.inventory.groups),
                              max_repairs=max_repairs, deadline=deadline)
        except FixRejected as exc:
            return FixAttempt(False, fingerprint=fingerprint, diagnosis=exc.diagnosis, provider=exc.provider,
                              model=exc.model, error=exc.reason)
        except OpsrunError as exc:  # no model answered, the llm extra missing, a bad gateway.yaml
            return FixAttempt(False, fingerprint=fingerprint, error=redact(exc.render()))
        common: dict[str, Any] = {"diagnosis": fix.diagnosis, "confidence": fix.confidence,
                                  "provider": fix.provider, "model": fix.model, "latency_s": fix.latency_s,
                                  "prompt_chars": fix.prompt_chars}
        if not fix.steps:
            return FixAttempt(False, fingerprint=fingerprint, error="the model proposed no steps", **common)
        with lock:
            proposed[key] = (fix, fingerprint)
        return FixAttempt(True, steps=fix.steps, fingerprint=f"{fingerprint}:{fix.digest}",
                          approve=(lambda: approve(fix)) if approve is not None else (lambda: False), **common)

    return fixer


def attempts_from(events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Journal `attempt` events -> FixEvidence.attempts (attempt, rc, stderr tail)."""
    return [{"attempt": ev.get("attempt"), "rc": ev.get("rc"), "stderr": ev.get("stderr_tail", "")}
            for ev in events if ev.get("type") == "attempt"]

