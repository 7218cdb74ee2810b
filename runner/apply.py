"""Executes a plan: hosts in parallel (linear or free strategy, serial batches), each step
re-planned just before it runs (guards re-checked), actions sent through the host's
transport, outcomes decided by policy.py, every event journaled. The only module that
changes targets.
"""

from __future__ import annotations

import math
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
from runner.expand import Instance, expand, select_steps, step_hosts
from runner.journal import Journal
from runner.model import CommandResult, Plan, ProbeResult, ResultStatus, Step, StepResult
from runner.plan import facts_for, plan_instance
from runner.planner import HostPlan, default_forks, probes_for
from runner.secrets import redact
from runner.session import Session

TAIL = 2000  # characters of stdout/stderr kept per attempt in the journal
EventSink = Callable[[dict[str, Any]], None]


@dataclass
class HostRun:
    """Progress of one host through the run."""

    name: str
    facts: dict[str, ProbeResult] = field(default_factory=dict)  # plan-time answers
    known: dict[str, Any] = field(default_factory=dict)  # step id -> registered result
    dirty: bool = False  # something changed on the host since the facts were taken
    failed: bool = False
    unreachable: bool = False
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("ok", "changed", "failed", "skipped", "blocked", "unreachable"), 0)
    )
    results: list[StepResult] = field(default_factory=list)


@dataclass
class Recap:
    hosts: dict[str, HostRun]
    aborted: str = ""

    @property
    def ok(self) -> bool:
        return not self.aborted and not any(h.failed or h.unreachable for h in self.hosts.values())

    def totals(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for h in self.hosts.values():
            for k, v in h.counts.items():
                out[k] = out.get(k, 0) + v
        return out


def _tail(text: str) -> str:
    return text[-TAIL:]


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
        sleep: Callable[[float], None] = time.sleep,
        stop: threading.Event | None = None,
    ) -> None:
        self.session = session
        self.plan = plan
        self.journal = journal
        self.forks = forks or int(session.playbook.settings.get("forks") or 0) or default_forks(len(plan.hosts))
        self.on_event = on_event
        self.sleep = sleep
        self.stop = stop or threading.Event()
        self.failures = 0
        self._lock = threading.Lock()
        self.hosts = {h: HostRun(h, facts=host_plans[h].facts if h in host_plans else {}) for h in plan.hosts}
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
        host = self.session.host(hr.name)
        errors: list[Diagnostic] = []
        instances = expand(
            step,
            host,
            self.session.vars_for(hr.name),
            hr.known,
            set(),
            self.session.playbook.dir,
            errors,
            self.session.playbook.file,
        )
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
            if r.status == "unreachable":
                break
        hr.known[step.id] = self._register(step, results)

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
            have = facts_for(inst.key, hr.facts)
            if len(have) == len(probes):
                return have, None
        answers = self.session.transport(hr.name).probe(probes)
        return facts_for(inst.key, answers), None

    def _run_instance(self, hr: HostRun, inst: Instance) -> StepResult:
        step = inst.step
        policy = pol.merge(self.session.playbook.policy, step.policy)
        timeout = step.timeout or policy.timeout
        start = time.monotonic()
        attempt = 0
        tried: tuple[str, ...] = ()
        last_rc: int | None = None
        out_text = err_text = ""
        if inst.skip:
            r = StepResult(hr.name, step.id, inst.key, "skipped", message=inst.skip)
            self._finish(hr, step, r)
            return r
        self.emit("step_start", host=hr.name, step=step.id, instance=inst.key, title=step.title, kind=step.kind)
        while True:
            attempt += 1
            try:
                facts, blocked = self._facts_now(hr, inst, fresh=attempt > 1)
                sp = plan_instance(inst, facts, self.session.guard(hr.name), blocked)
            except TransportError as exc:
                outcome = self._transport_outcome(hr, exc)
                if outcome is None:
                    return self._unreachable(hr, step, inst, exc, attempt, start)
            else:
                c = sp.change
                if c.status in ("noop", "skip"):
                    r = StepResult(
                        hr.name,
                        step.id,
                        inst.key,
                        "ok",
                        message=c.summary,
                        attempts=attempt,
                        duration=time.monotonic() - start,
                        data=c.data or None,
                    )
                    if attempt > 1:  # an earlier try changed it after all
                        r.status = "changed"
                    self._finish(hr, step, r)
                    return r
                if c.status == "blocked":
                    self.emit("blocked", host=hr.name, step=step.id, instance=inst.key, reason=c.reason)
                    r = StepResult(
                        hr.name,
                        step.id,
                        inst.key,
                        "blocked",
                        message=c.reason,
                        attempts=attempt,
                        duration=time.monotonic() - start,
                    )
                    self._finish(hr, step, r)
                    return r
                if c.status == "unknown":
                    r = StepResult(
                        hr.name,
                        step.id,
                        inst.key,
                        "failed",
                        message=f"cannot decide: {c.reason or c.summary}",
                        attempts=attempt,
                        duration=time.monotonic() - start,
                    )
                    self._finish(hr, step, r)
                    return r
                outcome, last_rc, out_text, err_text = self._execute(hr, inst, c, attempt, timeout)
                if outcome is None:
                    return self._unreachable(hr, step, inst, None, attempt, start)
            decision = pol.decide(policy, attempt, outcome, tried=tried, run_failures=self.failures)
            if isinstance(decision, pol.Done):
                status: ResultStatus = "changed" if outcome.message != "ok-unchanged" else "ok"
                message = sp.change.summary
                if sp.change.status == "run":
                    message = f"ran, rc {last_rc}"
                r = StepResult(
                    hr.name,
                    step.id,
                    inst.key,
                    status,
                    rc=last_rc,
                    stdout=out_text,
                    stderr=err_text,
                    attempts=attempt,
                    duration=time.monotonic() - start,
                    message=message,
                    data=sp.change.data or None,
                )
                self._finish(hr, step, r)
                return r
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
                self.stop.wait(decision.delay) if self.sleep is time.sleep else self.sleep(decision.delay)
                if self.stop.is_set():
                    decision = pol.Fail("interrupted")
                else:
                    continue
            while isinstance(decision, pol.Escalate):
                self.emit(
                    "escalate",
                    host=hr.name,
                    step=step.id,
                    instance=inst.key,
                    to=decision.to,
                    reason=decision.reason,
                    note=f"escalation to {decision.to} is not available in this version; skipping",
                )
                tried = (*tried, decision.to)
                decision = pol.decide(policy, attempt, outcome, tried=tried, run_failures=self.failures)
            reason = decision.reason if isinstance(decision, pol.Fail) else outcome.kind
            fail_status: ResultStatus = "blocked" if outcome.kind == "blocked" else "failed"
            r = StepResult(
                hr.name,
                step.id,
                inst.key,
                fail_status,
                rc=last_rc,
                stdout=out_text,
                stderr=err_text,
                attempts=attempt,
                duration=time.monotonic() - start,
                message=outcome.message or reason,
            )
            self._finish(hr, step, r)
            return r

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
        self, hr: HostRun, inst: Instance, change: Any, attempt: int, timeout: float | None
    ) -> tuple[pol.Outcome | None, int | None, str, str]:
        step = inst.step
        results: list[CommandResult] = []
        try:
            transport = self.session.transport(hr.name)
            for action in change.actions:
                t0 = time.monotonic()
                res = transport.execute(action, timeout=timeout)
                results.append(res)
                hr.dirty = True
                self._attempt_event(hr, inst, attempt, action.display(), res, time.monotonic() - t0)
                if action.kind == "cmd" and res.rc != 0:
                    break
            evaluate = lambda expr, names: render.evaluate(expr, {**inst.vars, **names})  # noqa: E731
            status, message = inst.kind.outcome(inst.params or {}, change, results, evaluate)
            last = results[-1] if results else CommandResult(0)
            if status == "failed":
                return (pol.Outcome("nonzero", last.rc, last.out, last.err, message), last.rc, last.out, last.err)
            if status == "changed" and step.verify:
                vres = self._verify(hr, inst, timeout)
                if vres.rc != 0:
                    return (
                        pol.Outcome("verify", vres.rc, vres.out, vres.err, f"verify failed (rc {vres.rc})"),
                        vres.rc,
                        vres.out,
                        vres.err,
                    )
            tag = "ok-unchanged" if status == "ok" else ""
            return pol.Outcome("ok", last.rc, message=tag), last.rc, last.out, last.err
        except Blocked as exc:
            self.emit("blocked", host=hr.name, step=step.id, instance=inst.key, reason=exc.message)
            return pol.Outcome("blocked", message=exc.message), None, "", ""
        except render.RenderError as exc:
            return pol.Outcome("nonzero", message=exc.message), None, "", ""
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
            return self._transport_outcome(hr, exc), None, "", exc.detail
        except OpsrunError as exc:
            return pol.Outcome("nonzero", message=exc.message), None, "", exc.message

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
        self, hr: HostRun, inst: Instance, attempt: int, display: str, res: CommandResult, took: float
    ) -> None:
        self.emit(
            "attempt",
            host=hr.name,
            step=inst.step.id,
            instance=inst.key,
            attempt=attempt,
            command=display,
            rc=res.rc,
            duration=round(took, 4),
            stdout_tail=self._out(inst, res.out),
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
