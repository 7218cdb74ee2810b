"""Executes a plan: hosts in parallel (linear or free, serial batches), each step re-planned just
before it runs, tried again while its `until:` is false, retried or escalated as policy.py decides,
notified handlers run at flush steps and at the end; with host.py and ladder.py the only code that
changes targets. Imports no cli or llm (the fixer and the human prompt are handed in).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from runner import handlers as H
from runner import policy as pol
from runner import render
from runner.apply.host import EventSink, Try, compact, tail
from runner.apply.ladder import Ladder
from runner.errors import Diagnostic, TransportError
from runner.escalate import Evidence, FixAttempt
from runner.expand import run_scope, select_steps, step_hosts
from runner.gc_passes import fewer_gc_passes
from runner.journal import Journal
from runner.model import MARKERS, Plan, ResultStatus, Step, StepPlan, StepResult
from runner.planner import HostPlan, StepDecider, by_instance, default_forks
from runner.recap import HostRun, Recap
from runner.secrets import redact
from runner.session import Session
from runner.steps.base import Instance


class Executor(Ladder):
    """Runs a plan on its hosts and returns the Recap; every event is journaled (and sent to on_event)."""

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
        self.handlers = {h: H.for_host(session.playbook, session.inventory, h) for h in plan.hosts}
        self.strict = strict  # a reviewed plan file: a step that would now do something else is refused
        self._free = session.playbook.settings.get("strategy") == "free"  # no barrier between steps
        for h, err in plan.unreachable.items():
            hr = self.hosts[h]
            hr.unreachable = True
            hr.counts["unreachable"] += 1
            self.emit("host_unreachable", host=h, error=err)

    def run(self) -> Recap:
        with fewer_gc_passes():
            return self._run()

    def _run(self) -> Recap:
        settings = self.session.playbook.settings
        steps = select_steps(self.session.playbook, self.plan.tags, self.plan.skip_tags)
        active = [h for h in self.plan.hosts if not self.hosts[h].unreachable]
        selected = {s.id for s in steps}
        for sp in self.plan.steps:  # left out by --tags but reading a step that runs: said, as planned
            if sp.step_id not in selected and sp.host in active and sp.change.status == "skip" and not sp.handler:
                step = next(s for s in self.session.playbook.steps if s.id == sp.step_id)
                self._finish(self.hosts[sp.host], step, StepResult(sp.host, sp.step_id, sp.instance, "skipped",
                                                                    message=sp.change.summary))
        self.journal.commit()  # those ends on disk before any step starts
        aborted = ""
        for batch in self._batches(active, settings.get("serial")):
            if len(batch) < len(active):
                self.emit("batch_start", hosts=batch)
            if self._free:
                with ThreadPoolExecutor(max_workers=self.forks) as pool:
                    list(pool.map(lambda h: self._run_host_all(h, steps), batch))
            else:
                aborted = self._run_linear(batch, steps)
                if not self.stop.is_set() and (not aborted or settings.get("force_handlers")):
                    self._flush_handlers(batch, H.END)
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
                if step.flush:
                    self._flush_handlers(step_hosts(self.session.inventory, batch, step), step.id, pool)
                    continue
                targets = [h for h in step_hosts(self.session.inventory, batch, step) if self._can_go_on(h)]
                if not targets:
                    continue
                list(pool.map(lambda h, s=step: self._run_step(self.hosts[h], s), targets))
                # no host starts the next step before this barrier: one fsync makes every
                # host's end of this step durable first (free strategy: each host commits)
                self.journal.commit()
                msg = self._check_fail_percentage(batch)
                if msg:
                    return msg
        return ""

    def _run_host_all(self, name: str, steps: list[Step]) -> None:
        for step in steps:
            if self.stop.is_set() or not self._can_go_on(name):
                break
            if name in step_hosts(self.session.inventory, [name], step):
                if step.flush:
                    self._flush_handlers([name], step.id)
                else:
                    self._run_step(self.hosts[name], step)
        if not self.stop.is_set():
            self._flush_handlers([name], H.END)

    # ------------------------------------------------------------ handlers
    def _notify(self, hr: HostRun, step: Step) -> None:
        """`step` changed something on the host: the handlers it names (that run there) are due."""
        due = [hid for hid in step.notify if hid in self.handlers[hr.name]]
        for hid in due:
            hr.notified.setdefault(hid, []).append(step.id)
        if due:
            self.emit("notify", host=hr.name, step=step.id, handlers=due)

    def _handlers_allowed(self, hr: HostRun) -> str:
        """Why the host's notified handlers do not run ("" when they do)."""
        if hr.unreachable:
            return "the host is unreachable"
        if hr.failed and not self.session.playbook.settings.get("force_handlers"):
            return "a step failed on this host (force_handlers: true runs them anyway)"
        return ""

    def _flush_handlers(self, names: list[str], at: str, pool: ThreadPoolExecutor | None = None) -> None:
        """Run the handlers notified on these hosts, each once, in the order they are listed
        (a handler may notify later ones); a host that failed runs none (force_handlers)."""
        live = [n for n in names if self.hosts[n].notified]
        for handler in self.session.playbook.handlers if live else ():
            if self.stop.is_set():
                return
            due = [self.hosts[n] for n in live if handler.id in self.hosts[n].notified]
            targets = [hr for hr in due if not self._handlers_allowed(hr)]
            copy = H.copy_at(handler, at)
            for hr in targets:
                by = hr.notified.pop(handler.id)
                self.emit("handler", host=hr.name, step=copy.id, handler=handler.id, at=at, notified_by=by)
            if pool is not None and len(targets) > 1:
                list(pool.map(lambda hr, c=copy: self._run_step(hr, c), targets))
            else:
                for hr in targets:
                    self._run_step(hr, copy)
            if targets and not self._free:  # a handler's end is on disk before the next handler
                self.journal.commit()  # (or step) starts on these hosts; free: _run_step commits
        for n in live:
            hr = self.hosts[n]
            if hr.notified:
                self.emit("handlers_not_run", host=n, at=at, handlers=list(hr.notified),
                          reason=self._handlers_allowed(hr) or "not run")
                hr.notified.clear()

    def _can_go_on(self, name: str) -> bool:
        hr = self.hosts[name]
        if hr.unreachable:
            return False
        return not (hr.failed and self.session.playbook.settings.get("on_failure", "stop") != "continue")

    def _run_step(self, hr: HostRun, step: Step) -> None:
        if (hr.name, step.id) in self.done:  # resumed run: this step finished before
            earlier = self.done[(hr.name, step.id)]
            if not step.handler:
                hr.known[step.id] = earlier
            self.emit("step_done_earlier", host=hr.name, step=step.id)
            if step.notify and earlier.get("changed"):
                self._notify(hr, step)
            return
        errors: list[Diagnostic] = []
        sent = hr.sent
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
        if not step.handler:  # no step reads a handler's result
            hr.known[step.id] = registered
        if step.notify and any(r.status == "changed" for r in results):
            self._notify(hr, step)
        finished = (
            bool(results)
            and len(results) == max(1, len(instances))
            and all(r.status in ("ok", "changed", "skipped") for r in results)
        )
        if finished or (not instances and not errors):
            # what makes the step done for --resume: on the OS at once (with the step's
            # start, attempts and end) when it sent something; else with the next write
            emit = self.emit if hr.sent != sent else self.emit_later
            emit("register", host=hr.name, step=step.id, result=compact(registered))
        if hr.failed and self.session.playbook.settings.get("on_failure") == "rollback" and not hr.rolled_back:
            self._rollback(hr)
        if self._free:  # the step's end is on disk before this host's next step starts (resume
            self.journal.commit()  # trusts it); hosts ending a step meanwhile share the fsync

    def _run_instance(self, hr: HostRun, inst: Instance) -> StepResult:
        step = inst.step
        policy = pol.merge(self.session.playbook.policy, step.policy)
        timeout = step.timeout or policy.timeout
        start = time.monotonic()
        attempt = 0
        tries = 0  # of `until:`: tries whose result it judged
        tried: tuple[str, ...] = ()
        history: list[dict[str, Any]] = []
        seen_fixes: set[str] = set()
        if inst.skip:
            return self._result(hr, inst, "skipped", start, 0, inst.skip)
        self.emit_later("step_start", host=hr.name, step=step.id, instance=inst.key, title=step.title,
                        kind=step.kind)
        while True:
            attempt += 1
            run: Try | None = None
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
                if step.until and outcome.kind in ("ok", "nonzero", "verify"):
                    tries += 1
                    met = self._until(hr, inst, run, attempt, tries)
                    if met is False and tries <= step.retries:
                        self.sleep(step.delay)
                        if not self.stop.is_set():
                            continue
                        return self._result(hr, inst, "failed", start, attempt, "interrupted", run)
                    if met is not True:
                        why = f"until: {met}" if isinstance(met, str) else (
                            f"until not met after {tries} tr{'ies' if tries != 1 else 'y'}: {step.until}")
                        outcome = pol.Outcome("until", run.rc, run.stdout, run.stderr, why)
            history.append(
                {
                    "attempt": attempt,
                    "outcome": outcome.kind,
                    "rc": run.rc if run else None,
                    "stderr": tail(run.stderr if run else outcome.message)[-400:],
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
                attempt = tries = 0  # a fix or a human decision starts a fresh round of tries
                continue
            reason = decision.reason if isinstance(decision, pol.Fail) else outcome.kind
            fail_status: ResultStatus = "blocked" if outcome.kind == "blocked" else "failed"
            return self._result(hr, inst, fail_status, start, attempt, outcome.message or reason, run)

    def _until(self, hr: HostRun, inst: Instance, run: Try, attempt: int, tries: int) -> bool | str:
        """Whether the step's `until:` holds over this try's result (journaled); a message when
        it cannot be evaluated. It reads what changed_when reads, changed, failed, the step's
        register name and steps.<its id> (this try's result)."""
        step = inst.step
        outcome = run.outcome
        status: ResultStatus = "failed" if outcome is None or outcome.kind != "ok" else (
            "ok" if outcome.message == "ok-unchanged" else "changed")
        result = StepResult(hr.name, step.id, inst.key, status, rc=run.rc, stdout=run.stdout, stderr=run.stderr,
                            attempts=attempt).as_vars()
        space = step.layers[-1].id if step.layers else ""
        names = {**inst.vars, **{k: result[k] for k in ("rc", "stdout", "stderr", "stdout_lines", "changed", "failed")},
                 "steps": render.StepResults({**hr.known, step.id: result}, set(), space)}
        if step.register:
            names[str(step.register)] = result
        try:
            met: bool | str = render.truthy(render.evaluate(str(step.until), names))
        except (render.RenderError, render.PendingResult) as exc:
            met = getattr(exc, "message", str(exc))
        left = step.retries + 1 - tries
        self.emit("until", host=hr.name, step=step.id, instance=inst.key, attempt=attempt, met=met is True,
                  tries=tries, of=step.retries + 1, error=met if isinstance(met, str) else None,
                  delay=step.delay if met is False and left > 0 else None, expression=step.until)
        return met

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
