"""Executes a plan: hosts in parallel (linear or free strategy, serial batches), each step
re-planned just before it runs (guards re-checked), actions sent through the host's
transport, outcomes decided by policy.py, every event journaled. The only module that
changes targets.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from runner import policy as pol
from runner import render
from runner.errors import (
    AuthError,
    Blocked,
    CommandTimeout,
    ConnectError,
    Diagnostic,
    OpsrunError,
    TransportError,
)
from runner.escalate import Evidence, FixAttempt, notify_webhook, report_markdown
from runner.expand import Instance, expand, run_scope, select_steps, step_hosts
from runner.journal import Journal
from runner.model import MARKERS, CommandResult, Plan, ProbeResult, ResultStatus, Step, StepPlan, StepResult
from runner.planner import HostPlan, StepDecider, by_instance, default_forks, facts_for, probes_for
from runner.recap import HostRun, Recap
from runner.secrets import redact
from runner.session import Session

TAIL = 2000  # characters of stdout/stderr kept per attempt in the journal
EventSink = Callable[[dict[str, Any]], None]


@dataclass
class _Try:
    """One try of a step's actions: the policy outcome (None: host lost for good) and output."""

    outcome: pol.Outcome | None
    rc: int | None = None
    stdout: str = ""
    stderr: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    message: str = ""  # what the step kind said about a successful try


def _compact(registered: dict[str, Any]) -> dict[str, Any]:
    """A registered result small enough for the journal (resume reads it back)."""
    out = dict(registered)
    for key in ("stdout", "stderr"):
        if isinstance(out.get(key), str):
            out[key] = redact(out[key])[-TAIL * 4 :]  # redact, then cut: no half secret at the cut
    out.pop("stdout_lines", None)
    if isinstance(out.get("results"), list):
        out["results"] = [_compact(r) for r in out["results"]]
    return out


def _tail(text: str) -> str:
    return redact(text)[-TAIL:]  # redact, then cut: a secret at the cut would survive partly


class Executor:
    def __init__(
        self,
        session: Session,
        plan: Plan,
        host_plans: dict[str, HostPlan],
        journal: Journal,
        *,
        forks: int | None = None,
        on_event: EventSink | None = None,
        sleep: Callable[[float], None] | None = None,
        stop: threading.Event | None = None,
        run_id: str = "",
        human: Callable[[Evidence], tuple[str, str]] | None = None,
        fixer: Callable[[Evidence], FixAttempt] | None = None,
        done: dict[tuple[str, str], dict[str, Any]] | None = None,
        strict: bool = False,
    ) -> None:
        self.session = session
        self.plan = plan
        self.journal = journal
        self.forks = forks or int(session.playbook.settings.get("forks") or 0) or default_forks(len(plan.hosts))
        self.on_event = on_event
        self.stop = stop or threading.Event()
        self.sleep = sleep or self.stop.wait
        self.run_id = run_id or journal.run_id
        self.human = human
        self.fixer = fixer
        self.done = dict(done or {})
        self.waiting_for_human: Evidence | None = None
        self.aborted_by_human = False
        self.failures = 0
        self._lock = threading.Lock()
        self.hosts = {h: HostRun(h, facts=host_plans[h].facts if h in host_plans else {}) for h in plan.hosts}
        self._plan_facts = {h: by_instance(hr.facts) for h, hr in self.hosts.items()}
        # steps that do not run on a host (not selected, not for it) read as skipped, as in the plan
        for h, hr in self.hosts.items():
            hr.known.update(run_scope(session.playbook, session.inventory, h, plan.tags, plan.skip_tags)[1])
        # apply decides each step on fresh answers from the host: the same decision as plan, no overlay
        self.deciders = {h: StepDecider(session, h, None) for h in plan.hosts}
        self.planned = {(sp.host, sp.instance): sp for sp in plan.steps}
        self.strict = strict  # a reviewed plan file: a step that would now do something else is refused
        for h, err in plan.unreachable.items():
            hr = self.hosts[h]
            hr.unreachable = True
            hr.counts["unreachable"] += 1
            self.emit("host_unreachable", host=h, error=err)

    # ------------------------------------------------------------ events
    def emit(self, type_: str, **fields: Any) -> None:
        record = self.journal.event(type_, **fields)
        if self.on_event is not None:
            self.on_event(record)

    # ------------------------------------------------------------ strategies
    def run(self) -> Recap:
        settings = self.session.playbook.settings
        steps = select_steps(self.session.playbook, self.plan.tags, self.plan.skip_tags)
        active = [h for h in self.plan.hosts if not self.hosts[h].unreachable]
        selected = {s.id for s in steps}
        for sp in self.plan.steps:  # left out by --tags but reading a step that runs: said, as planned
            if sp.step_id not in selected and sp.host in active and sp.change.status == "skip":
                step = next(s for s in self.session.playbook.steps if s.id == sp.step_id)
                self._finish(self.hosts[sp.host], step, StepResult(sp.host, sp.step_id, sp.instance, "skipped",
                                                                    message=sp.change.summary))
        aborted = ""
        for batch in self._batches(active, settings.get("serial")):
            if len(batch) < len(active):
                self.emit("batch_start", hosts=batch)
            if settings.get("strategy") == "free":
                with ThreadPoolExecutor(max_workers=self.forks) as pool:
                    list(pool.map(lambda h: self._run_host_all(h, steps), batch))
            else:
                aborted = self._run_linear(batch, steps)
            if not aborted:
                aborted = self._check_fail_percentage(batch)
            if aborted or self.stop.is_set():
                aborted = aborted or "interrupted"
                break
        return Recap(self.hosts, aborted)

    @staticmethod
    def _batches(hosts: list[str], serial: Any) -> list[list[str]]:
        if not serial:
            return [hosts]
        if isinstance(serial, str) and serial.endswith("%"):
            size = max(1, math.ceil(len(hosts) * float(serial[:-1]) / 100))
        else:
            size = max(1, int(serial))
        return [hosts[i : i + size] for i in range(0, len(hosts), size)]

    def _check_fail_percentage(self, batch: list[str]) -> str:
        limit = self.session.playbook.settings.get("max_fail_percentage")
        if limit is None or not batch:
            return ""
        bad = sum(1 for h in batch if self.hosts[h].failed or self.hosts[h].unreachable)
        if bad * 100 / len(batch) > float(limit):
            return f"{bad} of {len(batch)} hosts failed (max_fail_percentage {limit})"
        return ""

    def _run_linear(self, batch: list[str], steps: list[Step]) -> str:
        with ThreadPoolExecutor(max_workers=self.forks) as pool:
            for step in steps:
                if self.stop.is_set():
                    return "interrupted"
                targets = [h for h in step_hosts(self.session.inventory, batch, step) if self._can_go_on(h)]
                if not targets:
                    continue
                list(pool.map(lambda h, s=step: self._run_step(self.hosts[h], s), targets))
                msg = self._check_fail_percentage(batch)
                if msg:
                    return msg
        return ""

    def _run_host_all(self, name: str, steps: list[Step]) -> None:
        for step in steps:
            if self.stop.is_set() or not self._can_go_on(name):
                return
            if name in step_hosts(self.session.inventory, [name], step):
                self._run_step(self.hosts[name], step)

    def _can_go_on(self, name: str) -> bool:
        hr = self.hosts[name]
        if hr.unreachable:
            return False
        return not (hr.failed and self.session.playbook.settings.get("on_failure", "stop") != "continue")

    # ------------------------------------------------------------ one step on one host
    def _run_step(self, hr: HostRun, step: Step) -> None:
        if (hr.name, step.id) in self.done:  # resumed run: this step finished before
            hr.known[step.id] = self.done[(hr.name, step.id)]
            self.emit("step_done_earlier", host=hr.name, step=step.id)
            return
        errors: list[Diagnostic] = []
        instances = self._expand(step, hr, self.session.vars_for(hr.name), errors)
        results: list[StepResult] = []
        if errors:
            r = StepResult(hr.name, step.id, step.id, "failed", message=errors[0].message)
            self._finish(hr, step, r)
            results.append(r)
        for inst in instances:
            if self.stop.is_set():
                break
            r = self._run_instance(hr, inst)
            results.append(r)
            if r.status == "changed":
                hr.changed_steps.append(inst)
            if r.status in ("unreachable", "failed", "blocked"):
                break
        registered = self._register(step, results)
        hr.known[step.id] = registered
        finished = (
            bool(results)
            and len(results) == max(1, len(instances))
            and all(r.status in ("ok", "changed", "skipped") for r in results)
        )
        if finished or (not instances and not errors):
            self.emit("register", host=hr.name, step=step.id, result=_compact(registered))
        if hr.failed and self.session.playbook.settings.get("on_failure") == "rollback" and not hr.rolled_back:
            self._rollback(hr)

    def _expand(self, step: Step, hr: HostRun, variables: dict[str, Any], errors: list[Diagnostic]) -> list[Instance]:
        """Instances of `step` on the host, with the results registered so far (none pending)."""
        pb = self.session.playbook
        return expand(
            step,
            self.session.host(hr.name),
            variables,
            hr.known,
            set(),
            pb.dir,
            errors,
            pb.file,
            run_dir=str(self.journal.dir),
        )

    @staticmethod
    def _register(step: Step, results: list[StepResult]) -> dict[str, Any]:
        if step.loop is None and len(results) == 1:
            out = results[0].as_vars()
        else:
            out = {
                "changed": any(r.changed for r in results),
                "failed": any(r.status in ("failed", "blocked") for r in results),
                "skipped": bool(results) and all(r.status == "skipped" for r in results),
                "results": [r.as_vars() for r in results],
            }
        out["_register"] = step.register
        return out

    def _facts_now(
        self, hr: HostRun, inst: Instance, fresh: bool
    ) -> tuple[dict[str, ProbeResult], tuple[str, str] | None]:
        probes, blocked = probes_for(inst, self.session.guard(hr.name))
        if blocked or not probes:
            return {}, blocked
        if not fresh and not hr.dirty:
            have = self._plan_facts[hr.name].get(inst.key, {})
            if len(have) == len(probes):
                return have, None
        answers = self.session.transport(hr.name).probe(probes)
        return facts_for(inst.key, answers), None

    def _result(
        self,
        hr: HostRun,
        inst: Instance,
        status: ResultStatus,
        start: float,
        attempt: int,
        message: str,
        run: _Try | None = None,
        data: Any = None,
    ) -> StepResult:
        r = StepResult(
            hr.name,
            inst.step.id,
            inst.key,
            status,
            rc=run.rc if run else None,
            stdout=run.stdout if run else "",
            stderr=run.stderr if run else "",
            attempts=attempt,
            duration=time.monotonic() - start,
            message=message,
            data=data,
        )
        self._finish(hr, inst.step, r)
        return r

    def _run_instance(self, hr: HostRun, inst: Instance) -> StepResult:
        step = inst.step
        policy = pol.merge(self.session.playbook.policy, step.policy)
        timeout = step.timeout or policy.timeout
        start = time.monotonic()
        attempt = 0
        tried: tuple[str, ...] = ()
        history: list[dict[str, Any]] = []
        seen_fixes: set[str] = set()
        if inst.skip:
            return self._result(hr, inst, "skipped", start, 0, inst.skip)
        self.emit("step_start", host=hr.name, step=step.id, instance=inst.key, title=step.title, kind=step.kind)
        while True:
            attempt += 1
            run: _Try | None = None
            sp: StepPlan | None = None
            try:
                facts, blocked = self._facts_now(hr, inst, fresh=attempt > 1)
                planned = self.deciders[hr.name].decide(inst, facts, blocked)
                if attempt == 1 and not tried:
                    refused = self._check_planned(hr, inst, planned)
                    if refused:
                        return self._result(hr, inst, "failed", start, attempt, refused)
            except TransportError as exc:
                outcome = self._transport_outcome(hr, exc)
                if outcome is None:
                    return self._unreachable(hr, step, inst, exc, attempt, start)
            else:
                sp = planned
                c = planned.change
                if c.status in ("noop", "skip"):
                    # after a failed try that changed something, "nothing left to do" is a change
                    status: ResultStatus = "changed" if attempt > 1 and hr.dirty else "ok"
                    return self._result(hr, inst, status, start, attempt, c.summary, data=c.data or None)
                if c.status == "blocked":
                    self.emit("blocked", host=hr.name, step=step.id, instance=inst.key, reason=c.reason)
                    return self._result(hr, inst, "blocked", start, attempt, c.reason)
                if c.status == "unknown" and not any(a.kind == "local" for a in c.actions):
                    return self._result(hr, inst, "failed", start, attempt, f"cannot decide: {c.reason or c.summary}")
                run = self._execute(hr, inst, c, attempt, timeout)
                if run.outcome is None:
                    return self._unreachable(hr, step, inst, None, attempt, start)
                outcome = run.outcome
            history.append(
                {
                    "attempt": attempt,
                    "outcome": outcome.kind,
                    "rc": run.rc if run else None,
                    "stderr": _tail(run.stderr if run else outcome.message)[-400:],
                }
            )
            decision = pol.decide(policy, attempt, outcome, tried=tried, run_failures=self.failures)
            if isinstance(decision, pol.Done):
                assert sp is not None and run is not None
                message = f"ran, rc {run.rc}" if sp.change.status == "run" else sp.change.summary
                if run.message:
                    message = run.message
                last_line = (run.stdout.strip().splitlines() or [""])[-1]
                if sp.change.status == "run" and last_line and not step.sensitive:
                    message += f": {last_line[:100]}"
                status = "ok" if outcome.message == "ok-unchanged" else "changed"
                data = {**sp.change.data, **run.data} if run.data else (sp.change.data or None)
                return self._result(hr, inst, status, start, attempt, message, run, data)
            if isinstance(decision, pol.RetryAfter):
                self.emit(
                    "retry",
                    host=hr.name,
                    step=step.id,
                    instance=inst.key,
                    attempt=attempt,
                    delay=round(decision.delay, 3),
                    reason=decision.reason,
                    failure=outcome.kind,
                )
                self.sleep(decision.delay)
                if not self.stop.is_set():
                    continue
                decision = pol.Fail("interrupted")
            again = False
            while isinstance(decision, pol.Escalate) and not again:
                tried = (*tried, decision.to)
                evidence = self._evidence(hr, inst, sp, run, outcome, history, tried, decision.reason)
                if decision.to == "llm":
                    again = self._escalate_llm(hr, inst, evidence, seen_fixes, policy.auto_fix, timeout)
                else:
                    verdict = self._escalate_human(hr, inst, evidence, policy)
                    if verdict == "retry":
                        again = True
                    elif verdict == "skip":
                        return self._result(hr, inst, "skipped", start, attempt, "skipped by a human")
                    elif verdict in ("abort", "wait"):
                        why = "aborted by a human" if verdict == "abort" else "waiting for a human"
                        return self._result(
                            hr, inst, "failed", start, attempt, f"{why}: {outcome.message or decision.reason}", run
                        )
                if not again:
                    decision = pol.decide(policy, attempt, outcome, tried=tried, run_failures=self.failures)
            if again:
                attempt = 0  # a fix or a human decision starts a fresh round of tries
                continue
            reason = decision.reason if isinstance(decision, pol.Fail) else outcome.kind
            fail_status: ResultStatus = "blocked" if outcome.kind == "blocked" else "failed"
            return self._result(hr, inst, fail_status, start, attempt, outcome.message or reason, run)

    def _check_planned(self, hr: HostRun, inst: Instance, now: StepPlan) -> str:
        """Compare the decision just made with the plan shown (or reviewed). A difference is
        journaled; with a reviewed plan file it refuses the step ("" when all is as planned)."""
        before = self.planned.get((hr.name, inst.key))
        if before is None or before.change.status == "unknown" or before.conditional_on:
            return ""
        was, c = before.change, now.change
        same_status = was.status == c.status or {was.status, c.status} <= {"noop", "skip"}
        if same_status and [a.digest() for a in was.actions] == [a.digest() for a in c.actions]:
            return ""
        why = (
            f"planned '{MARKERS[was.status]} {redact(was.summary)}', now '{MARKERS[c.status]} {redact(c.summary)}'"
            if not same_status
            else "the exact actions differ from the plan"
        )
        self.emit("plan_diverged", host=hr.name, step=inst.step.id, instance=inst.key, planned=was.status,
                  now=c.status, reason=why)
        if self.strict:
            return f"not as reviewed: {why} (plan again, or apply with --allow-drift)"
        return ""

    # ------------------------------------------------------------ escalation
    def _evidence(
        self,
        hr: HostRun,
        inst: Instance,
        sp: StepPlan | None,
        run: _Try | None,
        outcome: pol.Outcome,
        history: list[dict[str, Any]],
        tried: tuple[str, ...],
        reason: str,
    ) -> Evidence:
        step = inst.step
        commands = [a.display() for a in sp.change.actions] if sp is not None else []
        return Evidence(
            run_id=self.run_id,
            host=hr.name,
            transport=self.session.host(hr.name).transport,
            step_id=step.id,
            instance=inst.key,
            kind=step.kind,
            title=step.title,
            params=step.params,
            commands=commands,
            reason=reason or outcome.message or outcome.kind,
            rc=run.rc if run else None,
            stdout="" if step.sensitive else (run.stdout if run else ""),
            stderr="" if step.sensitive else (run.stderr if run else outcome.message),
            attempts=list(history),
            tried=list(tried),
        )

    def _escalate_human(self, hr: HostRun, inst: Instance, ev: Evidence, policy: pol.Policy) -> str:
        """retry | skip | abort | wait (no terminal: the run stops for a human)."""
        self.emit("escalate", host=hr.name, step=inst.step.id, instance=inst.key, to="human", reason=ev.reason)
        if self.human is None:
            with self._lock:
                first = self.waiting_for_human is None
                if first:
                    self.waiting_for_human = ev
            if first:
                path = self.journal.write_artifact("escalation.md", report_markdown(ev))
                note = ""
                if policy.notify.get("webhook"):
                    note = notify_webhook(str(policy.notify["webhook"]), ev, base_dir=self.session.playbook.dir)
                self.emit(
                    "waiting_for_human",
                    host=hr.name,
                    step=inst.step.id,
                    instance=inst.key,
                    report=str(path),
                    notify_error=note,
                )
            self.stop.set()
            return "wait"
        with self._lock:  # one conversation at a time, even with hosts in parallel
            choice, new_command = self.human(ev)
        self.emit(
            "human_decision",
            host=hr.name,
            step=inst.step.id,
            instance=inst.key,
            choice=choice,
            command=new_command or None,
        )
        if choice == "edit":
            if inst.params is not None and "command" in inst.params:
                inst.params = {**inst.params, "command": new_command}
                return "retry"
            self.emit("note", host=hr.name, instance=inst.key, note="only command steps can be edited; retrying")
            return "retry"
        if choice == "abort":
            self.aborted_by_human = True
            self.stop.set()
        return choice

    def _escalate_llm(
        self, hr: HostRun, inst: Instance, ev: Evidence, seen: set[str], auto_fix: bool, timeout: float | None
    ) -> bool:
        """Ask the fixer; run its (validated, safety-checked) steps when allowed. True: retry the step."""
        if self.fixer is None:
            self.emit(
                "escalate",
                host=hr.name,
                step=inst.step.id,
                instance=inst.key,
                to="llm",
                note="no LLM fixer available (install opsrun[llm] and configure gateway.yaml); skipping",
            )
            return False
        self.emit("escalate", host=hr.name, step=inst.step.id, instance=inst.key, to="llm", reason=ev.reason)
        attempt = self.fixer(ev)
        self.emit("llm_fix", host=hr.name, step=inst.step.id, instance=inst.key, **attempt.journal())
        if not attempt.ok or attempt.fingerprint in seen:
            if attempt.ok:
                self.emit("note", host=hr.name, instance=inst.key, note="the same fix was already tried; not again")
            return False
        seen.add(attempt.fingerprint)
        if not (auto_fix or (self.human is not None and attempt.approve())):
            self.emit(
                "note", host=hr.name, instance=inst.key, note="fix not run: needs auto_fix: true or a human's approval"
            )
            return False
        ok = self._run_fragment(hr, inst, attempt.steps, timeout, label="fix")
        self.emit("llm_fix_result", host=hr.name, step=inst.step.id, instance=inst.key, ok=ok)
        return ok

    def _run_fragment(
        self, hr: HostRun, inst: Instance, fragments: list[dict[str, Any]], timeout: float | None, label: str
    ) -> bool:
        """Plan and run ad-hoc steps (an LLM fix, an undo) on the host; True when all succeeded."""
        from runner.config import STEP_COMMON
        from runner.steps import base as steps_base

        kinds = set(steps_base.load_all())
        for i, frag in enumerate(fragments):
            kind = next((k for k in frag if k not in STEP_COMMON and k in kinds), None)
            if kind is None:
                self.emit(label, host=hr.name, step=inst.step.id, ok=False, error=f"no step kind in {sorted(frag)}")
                return False
            step = Step(
                id=str(frag.get("id") or f"{label}_{i}"),
                kind=kind,
                params=frag[kind],
                name=str(frag.get("name", "")),
                index=inst.step.index,
                line=inst.step.line,
            )
            errors: list[Diagnostic] = []
            subs = self._expand(step, hr, inst.vars, errors)
            if errors:
                self.emit(label, host=hr.name, step=inst.step.id, ok=False, error=errors[0].message)
                return False
            for sub in subs:
                try:
                    facts, blocked = self._facts_now(hr, sub, fresh=True)
                    sp = self.deciders[hr.name].decide(sub, facts, blocked)
                except TransportError as exc:
                    self.emit(label, host=hr.name, step=inst.step.id, ok=False, error=exc.detail)
                    return False
                self.emit(f"{label}_plan", host=hr.name, step=inst.step.id, instance=inst.key, plan=sp.to_json())
                if sp.change.status in ("noop", "skip"):
                    continue
                if sp.change.status in ("blocked", "unknown"):
                    self.emit(
                        label, host=hr.name, step=inst.step.id, ok=False, error=sp.change.reason or sp.change.summary
                    )
                    return False
                run = self._execute(hr, sub, sp.change, 1, timeout, event=label)
                if run.outcome is None or run.outcome.kind != "ok":
                    return False
        return True

    def _rollback(self, hr: HostRun) -> None:
        """Run the undo of every step already changed on this host, newest first."""
        hr.rolled_back = True
        todo = [i for i in reversed(hr.changed_steps) if i.step.undo]
        self.emit("rollback_start", host=hr.name, steps=[i.key for i in todo])
        for inst in todo:
            undo = inst.step.undo
            fragment = {"run": undo} if isinstance(undo, str) else dict(undo)
            fragment.setdefault("id", f"undo_{inst.key}")  # names the undo in the journal and report
            ok = self._run_fragment(hr, inst, [fragment], inst.step.timeout, label="undo")
            self.emit("undo_end", host=hr.name, step=inst.step.id, instance=inst.key, ok=ok)
        self.emit("rollback_end", host=hr.name)

    def _transport_outcome(self, hr: HostRun, exc: TransportError) -> pol.Outcome | None:
        """A transport failure as a policy outcome; None when the host is unreachable for good."""
        if isinstance(exc, AuthError):
            return None
        if isinstance(exc, CommandTimeout):
            return pol.Outcome("timeout", message=exc.detail)
        if isinstance(exc, ConnectError):
            self.session.drop(hr.name)
            return pol.Outcome("connection", message=exc.detail)
        return pol.Outcome("nonzero", message=exc.detail)

    def _execute(
        self, hr: HostRun, inst: Instance, change: Any, attempt: int, timeout: float | None, event: str = "attempt"
    ) -> _Try:
        """Send the change's actions; stop at the first failure or when asked to stop."""
        step = inst.step
        results: list[CommandResult] = []
        data: dict[str, Any] = {}
        try:
            transport = self.session.transport(hr.name)
            for action in change.actions:
                if self.stop.is_set() and results:
                    self.emit(
                        "interrupted",
                        host=hr.name,
                        step=step.id,
                        instance=inst.key,
                        note="stopped after the current action",
                    )
                    return _Try(pol.Outcome("nonzero", message="interrupted before the next action"))
                t0 = time.monotonic()
                if action.kind == "local":
                    res = inst.kind.run_local(inst.params or {}, inst.ctx)
                    if res.data:
                        data.update(res.data)
                else:
                    res = transport.execute(action, timeout=timeout)
                    hr.dirty = True
                results.append(res)
                self._attempt_event(
                    hr,
                    inst,
                    attempt,
                    action.display(),
                    res,
                    time.monotonic() - t0,
                    event,
                    quiet=bool(change.data.get("quiet_output")),
                )
                if action.kind in ("cmd", "local") and res.rc != 0:
                    break

            def evaluate(expr: str, names: dict[str, Any]) -> Any:
                return render.evaluate(expr, {**inst.vars, **names})

            status, message = inst.kind.outcome(inst.params or {}, change, results, evaluate)
            last = results[-1] if results else CommandResult(0)
            if status != "failed":  # files a step saved in the run folder (adb.screenshot)
                for path in change.data.get("artifacts") or []:
                    if os.path.isfile(path):
                        self.emit(
                            "artifact",
                            host=hr.name,
                            step=step.id,
                            instance=inst.key,
                            path=os.path.relpath(path, self.journal.dir),
                            bytes=os.path.getsize(path),
                        )
            if status == "failed":
                return _Try(pol.Outcome("nonzero", last.rc, last.out, last.err, message), last.rc, last.out, last.err)
            if status == "changed" and step.verify:
                vres = self._verify(hr, inst, timeout)
                if vres.rc != 0:
                    return _Try(
                        pol.Outcome("verify", vres.rc, vres.out, vres.err, f"verify failed (rc {vres.rc})"),
                        vres.rc,
                        vres.out,
                        vres.err,
                    )
            tag = "ok-unchanged" if status == "ok" else ""
            return _Try(pol.Outcome("ok", last.rc, message=tag), last.rc, last.out, last.err, data, message)
        except Blocked as exc:
            self.emit("blocked", host=hr.name, step=step.id, instance=inst.key, reason=exc.message)
            return _Try(pol.Outcome("blocked", message=exc.message))
        except render.RenderError as exc:
            return _Try(pol.Outcome("nonzero", message=exc.message))
        except TransportError as exc:
            self.emit(
                "attempt_error",
                host=hr.name,
                step=step.id,
                instance=inst.key,
                attempt=attempt,
                error=exc.detail,
                error_type=type(exc).__name__,
            )
            return _Try(self._transport_outcome(hr, exc), stderr=exc.detail)
        except OpsrunError as exc:
            return _Try(pol.Outcome("nonzero", message=exc.message), stderr=exc.message)

    def _verify(self, hr: HostRun, inst: Instance, timeout: float | None) -> CommandResult:
        spec = inst.step.verify
        command = spec if isinstance(spec, str) else str(spec.get("command", ""))
        retries = 0 if isinstance(spec, str) else int(spec.get("retries", 0))
        delay = 1.0 if isinstance(spec, str) else float(spec.get("delay", 1.0))
        command = render.render_text(command, inst.vars, shell=True)
        res = CommandResult(1)
        for i in range(retries + 1):
            t0 = time.monotonic()
            res = self.session.transport(hr.name).run(command, timeout=timeout)
            self.emit(
                "verify",
                host=hr.name,
                step=inst.step.id,
                instance=inst.key,
                command=command,
                rc=res.rc,
                duration=round(time.monotonic() - t0, 4),
                stdout_tail=self._out(inst, res.out),
                stderr_tail=self._out(inst, res.err),
            )
            if res.rc == 0 or i == retries:
                break
            self.sleep(delay)
        return res

    def _out(self, inst: Instance, text: str) -> str:
        return "(sensitive output hidden)" if inst.step.sensitive and text else _tail(text)

    def _attempt_event(
        self,
        hr: HostRun,
        inst: Instance,
        attempt: int,
        display: str,
        res: CommandResult,
        took: float,
        event: str = "attempt",
        quiet: bool = False,
    ) -> None:
        # quiet: the output is data the step keeps elsewhere (a screenshot, a pulled file)
        out = f"({len(res.stdout)} bytes of data, not kept in the journal)" if quiet else self._out(inst, res.out)
        self.emit(
            event,
            host=hr.name,
            step=inst.step.id,
            instance=inst.key,
            attempt=attempt,
            command=display,
            rc=res.rc,
            duration=round(took, 4),
            stdout_tail=out,
            stderr_tail=self._out(inst, res.err),
        )

    def _unreachable(
        self, hr: HostRun, step: Step, inst: Instance, exc: Exception | None, attempt: int, start: float
    ) -> StepResult:
        hr.unreachable = True
        msg = exc.detail if isinstance(exc, TransportError) else "connection lost"
        r = StepResult(
            hr.name, step.id, inst.key, "unreachable", message=msg, attempts=attempt, duration=time.monotonic() - start
        )
        self._finish(hr, step, r)
        return r

    def _finish(self, hr: HostRun, step: Step, r: StepResult) -> None:
        if step.sensitive:
            r.stdout = r.stderr = ""
        hr.results.append(r)
        hr.counts[r.status] = hr.counts.get(r.status, 0) + 1
        if r.status in ("failed", "blocked"):
            hr.failed = True
            with self._lock:
                self.failures += 1
        self.emit(
            "step_end",
            host=hr.name,
            step=step.id,
            instance=r.instance,
            status=r.status,
            rc=r.rc,
            attempts=r.attempts,
            duration=round(r.duration, 4),
            message=redact(r.message),
            table=r.data.get("table") if isinstance(r.data, dict) else None,
        )
