"""The escalation ladder's rungs in apply (an LLM fix, a human at the terminal or a report to
wait on) and ad-hoc steps run on a host (fixes, undos, rollback). Imports no cli or llm.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from runner import policy as pol
from runner.apply.host import HostActions, Try
from runner.errors import Diagnostic, TransportError
from runner.escalate import Evidence, FixAttempt, notify_webhook, report_markdown
from runner.model import Step, StepPlan
from runner.recap import HostRun
from runner.steps.base import Instance


class Ladder(HostActions):
    """Escalation and fragments on top of HostActions; engine.py's Executor climbs it."""

    run_id: str
    human: Callable[[Evidence], tuple[str, str]] | None
    fixer: Callable[[Evidence], FixAttempt] | None
    waiting_for_human: Evidence | None
    aborted_by_human: bool

    def _evidence(
        self,
        hr: HostRun,
        inst: Instance,
        sp: StepPlan | None,
        run: Try | None,
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
                sudo=frag["sudo"] if isinstance(frag.get("sudo"), bool) else inst.step.sudo,
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
            self.journal.commit()  # an undo's end is on disk before the next undo starts
        self.emit("rollback_end", host=hr.name)
