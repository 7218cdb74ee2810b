"""One step's actions on one host, the lower half of apply: probe the host now, send the
actions through its transport, verify, and record and journal each result. Imports no cli or llm.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runner import policy as pol
from runner import render
from runner.errors import AuthError, Blocked, CommandTimeout, ConnectError, Diagnostic, OpsrunError, TransportError
from runner.expand import expand
from runner.journal import Journal
from runner.model import CommandResult, ProbeResult, ResultStatus, Step, StepResult
from runner.planner import StepDecider, facts_for, probes_for
from runner.recap import HostRun
from runner.secrets import redact
from runner.session import Session
from runner.steps.base import Instance

TAIL = 2000  # characters of stdout/stderr kept per attempt in the journal
EventSink = Callable[[dict[str, Any]], None]


@dataclass
class Try:
    """One try of a step's actions: the policy outcome (None: host lost for good) and output."""

    outcome: pol.Outcome | None
    rc: int | None = None
    stdout: str = ""
    stderr: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    message: str = ""  # what the step kind said about a successful try


def compact(registered: dict[str, Any]) -> dict[str, Any]:
    """A registered result small enough for the journal (resume reads it back)."""
    out = dict(registered)
    for key in ("stdout", "stderr"):
        if isinstance(out.get(key), str):
            out[key] = redact(out[key])[-TAIL * 4 :]  # redact, then cut: no half secret at the cut
    out.pop("stdout_lines", None)
    if isinstance(out.get("results"), list):
        out["results"] = [compact(r) for r in out["results"]]
    return out


def tail(text: str) -> str:
    return redact(text)[-TAIL:]  # redact, then cut: a secret at the cut would survive partly


class HostActions:
    """What the executor does with one instance on one host, short of deciding what comes next
    (engine.py) or climbing the escalation ladder (ladder.py). Executor.__init__ sets the state."""

    session: Session
    journal: Journal
    on_event: EventSink | None
    stop: threading.Event
    sleep: Callable[[float], Any]
    failures: int
    hosts: dict[str, HostRun]
    deciders: dict[str, StepDecider]
    _lock: threading.Lock
    _plan_facts: dict[str, dict[str, dict[str, ProbeResult]]]

    def emit(self, type_: str, **fields: Any) -> None:
        record = self.journal.event(type_, **fields)
        if self.on_event is not None:
            self.on_event(record)

    def emit_later(self, type_: str, **fields: Any) -> None:
        """An event the journal may write with the next one (Journal.defer): a step's start,
        attempts and end. Before an action is sent they are written (_execute), and the
        `register` that marks a step done after it sent one is written at once."""
        record = self.journal.defer(type_, **fields)
        if self.on_event is not None:
            self.on_event(record)

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
        run: Try | None = None,
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
    ) -> Try:
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
                    return Try(pol.Outcome("nonzero", message="interrupted before the next action"))
                self.journal.flush()  # the step's start (and all before) on the OS before it acts
                hr.sent += 1
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
                if action.kind in ("cmd", "local", "sftp") and res.rc != 0:
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
                return Try(pol.Outcome("nonzero", last.rc, last.out, last.err, message), last.rc, last.out, last.err)
            if status == "changed" and step.verify:
                vres = self._verify(hr, inst, timeout)
                if vres.rc != 0:
                    return Try(
                        pol.Outcome("verify", vres.rc, vres.out, vres.err, f"verify failed (rc {vres.rc})"),
                        vres.rc,
                        vres.out,
                        vres.err,
                    )
            tag = "ok-unchanged" if status == "ok" else ""
            return Try(pol.Outcome("ok", last.rc, message=tag), last.rc, last.out, last.err, data, message)
        except Blocked as exc:
            self.emit("blocked", host=hr.name, step=step.id, instance=inst.key, reason=exc.message)
            return Try(pol.Outcome("blocked", message=exc.message))
        except render.RenderError as exc:
            return Try(pol.Outcome("nonzero", message=exc.message))
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
            return Try(self._transport_outcome(hr, exc), stderr=exc.detail)
        except OpsrunError as exc:
            return Try(pol.Outcome("nonzero", message=exc.message), stderr=exc.message)

    def _verify(self, hr: HostRun, inst: Instance, timeout: float | None) -> CommandResult:
        spec = inst.step.verify
        command = spec if isinstance(spec, str) else str(spec.get("command", ""))
        retries = 0 if isinstance(spec, str) else int(spec.get("retries", 0))
        delay = 1.0 if isinstance(spec, str) else float(spec.get("delay", 1.0))
        command = render.render_text(command, inst.vars, shell=True)
        res = CommandResult(1)
        for i in range(retries + 1):
            t0 = time.monotonic()
            res = self.session.transport(hr.name).run(command, timeout=timeout, sudo=inst.step.sudo)
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
        return "(sensitive output hidden)" if inst.step.sensitive and text else tail(text)

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
        self.emit_later(
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
        self.emit_later(
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
