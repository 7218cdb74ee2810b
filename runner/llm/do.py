"""`opsrun do`'s loop: request -> draft (author's gates) -> plan -> approval -> apply (fixer ladder) -> replan
of the remaining work, journaled as one timeline. Prints nothing (the UI is handed in); imports no cli.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from runner import approval_policy
from runner.apply import usecase
from runner.errors import EXIT_HUMAN, HumanNeeded, InvalidInput, OpsrunError
from runner.gateway.config import DoConfig
from runner.journal import Journal, new_run_id
from runner.llm.author import Author, AuthorError, Draft
from runner.llm.gates import compact_json, one_line, to_yaml
from runner.secrets import redact

if TYPE_CHECKING:
    from runner.gateway import Gateway
    from runner.llm.fixer import Fix
    from runner.model import Inventory, Plan

TAIL_CHARS = 600  # of a failed step's stdout / stderr in a replan prompt
MAX_FAILURES_SHOWN = 3


@dataclass(frozen=True)
class DoLimits(DoConfig):
    """What one do run may do without a person: gateway.yaml's `do:` section (DoConfig's
    fields), flags on top, and where the deadline came from (for messages)."""

    deadline_from: str = "do.deadline_s"

    @classmethod
    def from_config(cls, cfg: DoConfig, **flags: Any) -> DoLimits:
        """The config's limits, each flag given (not None) replacing its value."""
        given = {k: v for k, v in flags.items() if v is not None}
        if "deadline_s" in given:
            given.setdefault("deadline_from", "--deadline")
        return cls(**{**{f.name: getattr(cfg, f.name) for f in fields(DoConfig)}, **given})

    def auto(self) -> approval_policy.AutoLimits:
        return approval_policy.AutoLimits(max_changes=self.max_changes, allow_unknown=self.allow_unknown)


@dataclass(frozen=True)
class DoRequest:
    """What the person asked for."""

    request: str
    inventory: str | None = None
    limit: str | None = None
    out: Path | None = None  # keep the final playbook here, the drafts beside it
    yes: bool = False  # approve automatically, within the limits
    max_repairs: int = 3


class ApprovalNeeded(OpsrunError):
    """The plan needs a person's approval and none can be asked (no terminal): exit 3."""

    exit_code = EXIT_HUMAN


class Declined(OpsrunError):
    """The person said no at the prompt: nothing was changed (exit 1)."""


class DoUI(Protocol):
    """The person's side of a do run (the CLI's console)."""

    interactive: bool  # a person at a terminal can be asked

    def note(self, text: str) -> None: ...

    def begin(self, run_id: str) -> None:
        """The do run is journaled under this id."""

    def drafted(self, n: int, draft: Draft, path: Path) -> None: ...

    def planned(self, plan: Plan) -> None: ...

    def refused(self, reasons: list[str]) -> None:
        """--yes may not approve this plan, for these reasons."""

    def ask(self, plan: Plan) -> bool:
        """y/N at the terminal (only called when interactive)."""

    def approve_fix(self, fix: Fix) -> bool:
        """Run this LLM fix? (only called when interactive and fixes are not automatic)."""

    def starting(self, run_id: str) -> None: ...

    def running(self, plan: Plan) -> AbstractContextManager[usecase.RunView]: ...

    def applied(self, outcome: usecase.ApplyOutcome) -> None: ...


@dataclass
class DoOutcome:
    """A finished do run: its id, the apply runs of its passes, the drafts written."""

    run_id: str
    ok: bool
    passes: list[usecase.ApplyOutcome] = field(default_factory=list)
    drafts: list[Path] = field(default_factory=list)
    final: Path | None = None  # the last draft applied (-o FILE when given)


@dataclass(frozen=True)
class Failure:
    """A step that did not finish, with what its last try said."""

    host: str
    instance: str
    status: str
    message: str
    rc: Any = None
    command: str = ""
    stdout: str = ""
    stderr: str = ""

    def lines(self) -> list[str]:
        out = [f"- FAILED: step '{self.instance}' on {self.host}: {self.status}: {one_line(self.message, 300)}"
               + (f" (rc {self.rc})" if self.rc is not None and f"rc {self.rc}" not in self.message else "")]
        if self.command:
            out.append(f"    $ {one_line(self.command, 300)}")
        for name, text in (("stderr", self.stderr), ("stdout", self.stdout)):
            if text.strip():
                out.append(f"    {name}: " + text.strip()[-TAIL_CHARS:].replace("\n", "\n      "))
        return out


@dataclass
class Evidence:
    """What one apply pass left: finished steps, failures, fixes tried, steps never reached."""

    apply_run: str
    finished: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, outcome: usecase.ApplyOutcome, data: dict[str, Any]) -> Evidence:
        last: dict[tuple[str, str], dict[str, Any]] = {}
        ends: dict[tuple[str, str], dict[str, Any]] = {}
        fixes: list[str] = []
        for ev in outcome.events:
            t, pair = ev.get("type"), (str(ev.get("host")), str(ev.get("instance") or ev.get("step")))
            if t == "attempt":
                last[pair] = ev
            elif t == "step_end":
                ends[pair] = ev
            elif t == "llm_fix":
                what = (f"proposed {len(ev.get('steps') or [])} step(s)" if ev.get("ok")
                        else f"no usable fix ({one_line(str(ev.get('error') or ''), 200)})")
                fixes.append(f"- fix for '{pair[1]}' on {pair[0]}: {one_line(str(ev.get('diagnosis') or ''), 200)}"
                             f" -> {what}")
            elif t == "llm_fix_result":
                fixes.append(f"  it {'ran, and the step was tried again' if ev.get('ok') else 'did not complete'}")
        me = cls(outcome.run_id, fixes=fixes)
        for pair, ev in ends.items():
            status = str(ev.get("status"))
            if status in ("ok", "changed", "skipped"):
                me.finished.append(f"{pair[0]}/{pair[1]} ({status})")
                continue
            a = last.get(pair, {})
            me.failures.append(Failure(pair[0], pair[1], status, str(ev.get("message") or ""), ev.get("rc"),
                                       str(a.get("command") or ""), str(a.get("stdout_tail") or ""),
                                       str(a.get("stderr_tail") or "")))
        ended = {inst.split("[", 1)[0] for _, inst in ends}
        raw = data.get("steps")
        steps = raw if isinstance(raw, list) else []
        me.not_run = [str(s.get("id")) for s in steps if isinstance(s, dict) and str(s.get("id")) not in ended]
        return me

    def summary(self) -> str:
        if not self.failures:
            return "the run did not finish"
        f = self.failures[0]
        more = f" (and {len(self.failures) - 1} more)" if len(self.failures) > 1 else ""
        return f"step '{f.instance}' on {f.host} {f.status}: {one_line(f.message, 160)}{more}"

    def text(self) -> str:
        lines = [f"finished: {', '.join(self.finished) or 'nothing'}"]
        for f in self.failures[:MAX_FAILURES_SHOWN]:
            lines += f.lines()
        lines += self.fixes
        if self.not_run:
            lines.append(f"not run: {', '.join(self.not_run)}")
        return redact("\n".join(lines))


def replan_context(n: int, data: dict[str, Any], ev: Evidence) -> str:
    """The end of the author prompt for draft n+1: the playbook that ran and what happened."""
    shown = {k: v for k, v in data.items() if k != "policy"}
    return redact("\n".join([
        f"Playbook {n} for this request was applied and stopped:",
        compact_json(shown),
        "What happened:",
        ev.text(),
        "",
        "Write a revised playbook for the work that remains only: leave out the steps that finished, "
        "and do what failed another way (the fixes above did not help).",
    ]))


def escalation_markdown(run_id: str, request: str, why: str, ev: Evidence | None) -> str:
    lines = [f"# opsrun do {run_id}: a human is needed", "", f"Request: {request.strip()}", "", f"Why: {why}", ""]
    if ev is not None:
        lines += [f"Last apply run: {ev.apply_run}", "", "```", ev.text(), "```", ""]
    lines.append(f"The drafts, plans and approvals: opsrun runs show {run_id}")
    return redact("\n".join(lines)) + "\n"


class DoRun:
    """One do run. `apply` is the apply use case (handed in for tests); `make_fixer` builds
    the LLM fixer for a pass (default runner.llm.fixer.make_fixer on this gateway and deadline)."""

    def __init__(self, req: DoRequest, ui: DoUI, gateway: Gateway, inventory: Inventory, limits: DoLimits, *,
                 apply: Callable[..., usecase.ApplyOutcome] = usecase.apply,
                 make_fixer: usecase.FixerFactory | None = None) -> None:
        self.req, self.ui, self.gateway, self.inventory, self.limits = req, ui, gateway, inventory, limits
        self.apply = apply
        self.run_id = new_run_id()
        self.journal = Journal(self.run_id)
        seconds = limits.deadline_s if limits.deadline_s is not None else gateway.config.routing.deadline_s
        which = limits.deadline_from if limits.deadline_s is not None else "routing.deadline_s"
        self.deadline_text = f"the deadline of {seconds:g}s for the whole do run, {which}"
        self.deadline = gateway.deadline(seconds)
        self._make_fixer = make_fixer
        self.outcome = DoOutcome(self.run_id, False)
        self.ended = False

    def end(self, outcome: str, **fields: Any) -> None:
        """The do_end event (once)."""
        if not self.ended:
            self.ended = True
            self.journal.event("do_end", outcome=outcome, passes=len(self.outcome.passes), **fields)

    # ------------------------------------------------------------ files
    def draft_path(self, n: int) -> Path:
        out = self.req.out
        if out is None:
            return self.journal.dir / f"draft-{n}.yaml"
        return out.with_name(f"{out.stem}.draft{n}{out.suffix or '.yaml'}")

    def policy(self) -> dict[str, Any]:
        """The failure policy do adds to every draft: fixes by the LLM, never a human rung
        (a failure the fixes do not mend goes back to the author)."""
        return {"escalate": ["llm"], "max_llm_fixes": self.limits.max_fixes,
                "auto_fix": bool(self.req.yes and self.limits.auto_fix)}

    def keep(self, n: int, draft: Draft, revision_of: str) -> tuple[Path, str]:
        """The draft as it is applied (do's policy added), written where apply reads it and
        stored beside the run (redacted)."""
        data = {**draft.data, "policy": {**(draft.data.get("policy") or {}), **self.policy()}}
        head, _, _ = draft.text.partition(draft.body)
        note = f"# Draft {n} of do run {self.run_id}{revision_of}; `policy:` added by opsrun do.\n"
        text = redact(head + note + to_yaml(data))
        path = self.draft_path(n)
        if self.req.out is None:
            self.journal.write_artifact(path.name, text)
        else:
            path.write_text(text, encoding="utf-8")
            self.journal.write_artifact(f"draft-{n}.yaml", text)
        return path, text

    # ------------------------------------------------------------ the loop
    def run(self) -> DoOutcome:
        self.journal.event(
            "do_start", run_id=self.run_id, request=self.req.request, inventory=self.inventory.file,
            limit=self.req.limit, yes=self.req.yes, limits=asdict(self.limits), deadline=self.deadline_text,
            out=str(self.req.out) if self.req.out else None, user=_user(), pid=os.getpid(), argv=sys.argv[1:])
        self.ui.begin(self.run_id)
        try:
            return self._loop()
        except BaseException as exc:
            outcome = "waiting_for_human" if isinstance(exc, ApprovalNeeded | HumanNeeded) else (
                "cancelled" if isinstance(exc, Declined) else
                "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed")
            self.end(outcome, reason=redact(exc.message) if isinstance(exc, OpsrunError) else type(exc).__name__)
            raise
        finally:
            self.journal.close()

    def _loop(self) -> DoOutcome:
        req, limits = self.req, self.limits
        author = Author(self.gateway, self.inventory, max_repairs=req.max_repairs, command="do")
        scope = f"The run is limited to these hosts or groups: {req.limit}" if req.limit else ""
        context = scope
        evidence: Evidence | None = None
        last_data: dict[str, Any] = {}
        for n in range(1, limits.max_replans + 2):
            if n > 1:
                assert evidence is not None
                if self.gateway.out_of_time(self.deadline):
                    return self.stop(f"{self.deadline_text}, was reached after {evidence.summary()}", evidence)
                self.journal.event("replan", n=n, after_run=evidence.apply_run, failed=evidence.summary(),
                                   evidence=evidence.text())
                self.ui.note(f"replan {n - 1} of {limits.max_replans}: {redact(evidence.summary())}; "
                             "asking for a revised playbook of the remaining work")
                context = "\n\n".join(c for c in (scope, replan_context(n - 1, last_data, evidence)) if c)
            author.file = str(self.draft_path(n))
            try:
                draft = author.write(req.request, context=context, deadline=self.deadline,
                                     deadline_text=self.deadline_text)
            except OpsrunError as exc:
                self.journal.event("draft", n=n, ok=False, error=redact(exc.render()),
                                   tries=getattr(exc, "tries", None), rule=getattr(exc, "rule", None))
                if n == 1 or (isinstance(exc, InvalidInput) and not isinstance(exc, AuthorError)):
                    raise
                return self.stop(f"the revised playbook {n} is not usable: {redact(exc.message)}", evidence)
            path, text = self.keep(n, draft, f", revising draft {n - 1} after run {evidence.apply_run}"
                                   if evidence else "")
            self.outcome.drafts.append(path)
            last_data = draft.data
            self.journal.event("draft", n=n, ok=True, file=str(path), artifact=f"draft-{n}.yaml",
                               provider=draft.answer.provider, model=draft.answer.model, tries=draft.tries,
                               latency_s=round(draft.answer.latency_s, 3),
                               steps=[str(s.get("id")) for s in draft.data.get("steps") or [] if isinstance(s, dict)],
                               bytes=len(text))
            self.ui.drafted(n, draft, path)
            result = self.apply_pass(n, path)
            self.outcome.passes.append(result)
            self.journal.event("applied", n=n, apply_run=result.run_id, ok=result.recap.ok,
                               totals=result.recap.totals(), waiting=result.waiting is not None)
            self.ui.applied(result)
            self.outcome.final = path
            if result.waiting is not None:  # a human rung the playbook asked for itself
                self.finish(n)
                self.end("waiting_for_human", reason=result.waiting.reason, apply_run=result.run_id)
                needed = result.human_needed()
                assert needed is not None
                raise needed
            if result.recap.ok:
                self.finish(n)
                self.outcome.ok = True
                self.end("ok", apply_run=result.run_id, final=str(self.outcome.final))
                return self.outcome
            evidence = Evidence.of(result, draft.data)
        assert evidence is not None
        return self.stop(f"the fixes and {limits.max_replans} replan(s) ran out: {evidence.summary()}", evidence)

    def apply_pass(self, n: int, path: Path) -> usecase.ApplyOutcome:
        areq = usecase.ApplyRequest(target=str(path), inventory=self.req.inventory, limit=self.req.limit,
                                    interactive=self.ui.interactive)
        return self.apply(areq, _Pass(self, n), make_fixer=self.fixer_factory())

    def fixer_factory(self) -> usecase.FixerFactory:
        if self._make_fixer is not None:
            return self._make_fixer
        from runner.llm.fixer import make_fixer

        approve = self.ui.approve_fix if self.ui.interactive else None
        return lambda session: make_fixer(session, self.gateway, approve=approve, deadline=self.deadline)

    def finish(self, n: int) -> None:
        """-o FILE: the last draft applied becomes FILE (the drafts stay beside it)."""
        out = self.req.out
        if out is None or self.outcome.final is None:
            return
        out.write_text(self.outcome.final.read_text(encoding="utf-8"), encoding="utf-8")
        self.outcome.final = out

    def stop(self, why: str, ev: Evidence | None) -> NoReturn:
        """A human is needed: the report beside the run, do_end, HumanNeeded (exit 3)."""
        if self.outcome.final is not None:
            self.finish(len(self.outcome.drafts))
        report = self.journal.write_artifact("escalation.md",
                                             escalation_markdown(self.run_id, self.req.request, why, ev))
        self.end("waiting_for_human", reason=redact(why), apply_run=ev.apply_run if ev else None, report=str(report))
        if ev is not None:
            self.ui.note("what the last pass left:\n" + ev.text())
        resume = ev.apply_run if ev is not None else self.run_id
        raise HumanNeeded(resume, str(report), redact(why), interactive=self.ui.interactive)

    # ------------------------------------------------------------ approval
    def approve(self, n: int, plan: Plan, doc: dict[str, Any], digest: str) -> None:
        """Approve this pass's plan, or raise: --yes within the limits, else a person at the
        terminal; without one the run stops for a human (ApprovalNeeded, exit 3)."""
        refusals = approval_policy.auto_refusals(doc, self.limits.auto())
        blocked = any(s.get("status") == "blocked" for s in doc.get("steps", []))
        if not plan.has_changes and not blocked:
            self.journal.event("approval", n=n, digest=digest, decision="not_needed", reason="no changes")
            return
        if self.req.yes and not refusals:
            self.journal.event("approval", n=n, digest=digest, decision="auto", by="--yes",
                               limits=asdict(self.limits.auto()))
            return
        if self.req.yes:
            self.ui.refused(refusals)
        if not self.ui.interactive:
            self.journal.event("approval", n=n, digest=digest, decision="refused", reasons=refusals,
                               by="--yes" if self.req.yes else None)
            why = ("--yes may not approve this plan: " + "; ".join(refusals) if self.req.yes and refusals
                   else "nobody at a terminal to approve this plan")
            raise ApprovalNeeded(
                f"not applying: a human is needed ({why}); nothing was changed",
                hint=f"review it: opsrun plan {self.draft_path(n)}; then apply it yourself, "
                     "or run `opsrun do` at a terminal")
        if self.ui.ask(plan):
            self.journal.event("approval", n=n, digest=digest, decision="human", by=_user(), refusals=refusals)
            return
        self.journal.event("approval", n=n, digest=digest, decision="declined", by=_user())
        raise Declined("cancelled: nothing was changed")


class _Pass:
    """One apply pass's ApplyUI: shows and journals the plan, approves it (before anything is
    applied), relays the run's events and journals its fixes in the do run's timeline."""

    def __init__(self, run: DoRun, n: int) -> None:
        self.run, self.n = run, n
        self.apply_run = ""

    def note(self, text: str) -> None:
        self.run.ui.note(text)

    def stale_lock(self, note: str) -> None:
        self.run.ui.note(f"note: {note}")

    def planned(self, plan: Plan) -> None:
        from runner.plan import to_json

        doc = json.loads(json.dumps(to_json(plan), default=str))
        digest = approval_policy.plan_digest(doc)
        self.run.journal.write_artifact(f"plan-{self.n}.json", json.dumps(doc, indent=2) + "\n")
        self.run.journal.event("plan", n=self.n, digest=digest, counts=plan.counts(), changes=plan.has_changes,
                               hosts=list(plan.hosts), artifact=f"plan-{self.n}.json")
        self.run.ui.planned(plan)
        self.run.approve(self.n, plan, doc, digest)

    def confirm(self, plan: Plan) -> None:
        """Approved in planned(), before apply asks."""

    def starting(self, run_id: str, resuming: bool) -> None:
        self.apply_run = run_id
        self.run.journal.event("apply", n=self.n, apply_run=run_id)
        self.run.ui.starting(run_id)

    @contextmanager
    def running(self, plan: Plan) -> Iterator[usecase.RunView]:
        with self.run.ui.running(plan) as inner:
            yield _View(inner, self)

    def fix_event(self, ev: dict[str, Any]) -> None:
        t = ev.get("type")
        keep = {k: ev.get(k) for k in ("host", "step", "instance", "ok", "diagnosis", "confidence", "steps",
                                        "provider", "model", "error") if ev.get(k) is not None}
        self.run.journal.event("fix" if t == "llm_fix" else "fix_result", n=self.n, apply_run=self.apply_run, **keep)


class _View:
    """The UI's run view, with the fixes journaled on the way."""

    def __init__(self, inner: usecase.RunView, owner: _Pass) -> None:
        self.inner, self.owner = inner, owner
        self.human = inner.human

    def event(self, ev: dict[str, Any]) -> None:
        if ev.get("type") in ("llm_fix", "llm_fix_result"):
            self.owner.fix_event(ev)
        self.inner.event(ev)


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


def do(req: DoRequest, ui: DoUI, gateway: Gateway, *, limits: DoLimits | None = None) -> DoOutcome:
    """One call: load the inventory, run the loop (see DoRun)."""
    from runner import config

    if not req.request.strip():
        raise InvalidInput("the request is empty", hint='opsrun do "install nginx on the web group"')
    if req.out is not None and not req.out.parent.is_dir():
        raise OpsrunError(f"cannot write {req.out}: folder {req.out.parent} does not exist")
    inventory = config.load_inventory(req.inventory)
    from runner.gateway.adapter import load_litellm

    load_litellm()  # the import costs seconds once: before the run's deadline starts
    return DoRun(req, ui, gateway, inventory, limits or DoLimits.from_config(gateway.config.do)).run()
