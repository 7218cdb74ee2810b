"""`opsrun apply` run on the terminal (runner.apply.usecase): confirm, the live display, the
human prompt, the recap. Imports no typer (its prompt only when asking a person), apply inside.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from runner import formats
from runner.cli.ci import failure_documents, write_junit
from runner.cli.output import CommandExit, Lines, err, out
from runner.errors import EXIT_ERROR, EXIT_OK, OpsrunError, resume_command


def run_apply(
    target: str | None = None,
    inventory: str | None = None,
    var: list[str] | None = None,
    limit: str | None = None,
    shard: str | None = None,
    run_id: str | None = None,
    tags: list[str] | None = None,
    skip_tags: list[str] | None = None,
    forks: int | None = None,
    yes: bool = False,
    allow_drift: bool = False,
    resume: str | None = None,
    as_json: bool = False,
    junit: str | None = None,
) -> int:
    """Plan, confirm, then make the changes (or apply a saved plan exactly, or resume a run):
    the exit code (CommandExit when a person cancels)."""
    import os

    from runner import report
    from runner.apply.usecase import ApplyRequest
    from runner.apply.usecase import apply as apply_run

    interactive = sys.stdin.isatty()
    request = ApplyRequest(
        target=target,
        inventory=inventory,
        variables=tuple(var or ()),
        limit=limit,
        tags=tuple(tags or ()),
        skip_tags=tuple(skip_tags or ()),
        forks=forks,
        allow_drift=allow_drift,
        resume=resume,
        interactive=interactive,
        shard=shard,
        env=dict(os.environ),
        run_group=run_id,
    )
    color = report.use_color(sys.stdout)
    console = _ApplyConsole(as_json=as_json, yes=yes, color=color, resume=resume)
    with failure_documents("apply", "json" if as_json else "text", junit, json_lines=True):
        run = apply_run(request, console, make_fixer=_make_fixer)
    out(formats.recap(run.recap, run.run_id, "json" if as_json else "text", color=color, events=run.events))
    if junit:
        from runner.ci_report import junit_apply

        recap = report.recap_json(run.recap, run.run_id, events=run.events)
        write_junit(junit, junit_apply(recap, console.planned_steps))
    needed = run.human_needed()
    if needed is not None:
        raise needed
    return EXIT_OK if run.recap.ok else EXIT_ERROR



class _ApplyConsole:
    """The person's side of `opsrun apply` (runner.apply.usecase.ApplyUI) on the terminal."""

    def __init__(self, *, as_json: bool, yes: bool, color: bool, resume: str | None = None) -> None:
        self.as_json = as_json
        self.yes = yes
        self.color = color
        self.resume = resume
        self.planned_steps: list[tuple[str, str]] = []  # (host, instance): the JUnit report's cases

    def note(self, text: str) -> None:
        err(text)

    def stale_lock(self, note: str) -> None:
        if not self.as_json:
            err(f"note: {note}")

    def planned(self, the_plan: Any) -> None:
        self.planned_steps = [(sp.host, sp.instance) for sp in the_plan.steps]
        if not self.as_json:
            out(formats.plan(the_plan, "text", color=self.color))

    def confirm(self, the_plan: Any) -> None:
        if self.yes:
            return
        if not sys.stdin.isatty():
            hint = (f"without a terminal a resume needs --yes: {resume_command(self.resume, interactive=False)}"
                    if self.resume else "pass --yes (CI), or apply a reviewed plan file")
            raise OpsrunError("not applying: no terminal to confirm on", hint=hint)
        import typer  # a person at a terminal: typer's prompt

        if not typer.confirm("Apply these changes?", default=False):
            err("cancelled: nothing was changed")
            raise CommandExit(EXIT_ERROR)

    def starting(self, run_id: str, resuming: bool) -> None:
        if not self.as_json:
            out(f"{'Resuming' if resuming else 'Applying'} (run {run_id})\n")

    def running(self, the_plan: Any) -> ApplyDisplay:
        return ApplyDisplay(the_plan, as_json=self.as_json, color=self.color)


def _make_fixer(session: Any) -> Any:
    """The LLM fixer (apply builds it only when some step's policy escalates to it)."""
    from runner.llm.fixer import make_fixer

    return make_fixer(session, approve=approve_fix if sys.stdin.isatty() else None)


def approve_fix(fix: Any) -> bool:
    """Show an LLM's proposed fix and ask a human to run it."""
    import typer
    import yaml

    from runner.secrets import redact

    err(redact(f"\nLLM fix proposed ({fix.provider}/{fix.model}, confidence {fix.confidence:.2f}): {fix.diagnosis}"))
    err(redact(yaml.safe_dump(fix.steps, sort_keys=False)))
    return typer.confirm("Run this fix, then retry the step?", default=False)


class ApplyDisplay:
    """Terminal output while applying: every event line for a few hosts; for many, only
    what changed or went wrong, under a live progress bar (hosts x steps done, current step)."""

    QUIET_ABOVE = 5

    def __init__(self, the_plan: Any, *, as_json: bool, color: bool) -> None:
        self.as_json = as_json
        self.color = color
        self.quiet = len(the_plan.hosts) > self.QUIET_ABOVE
        self.total = len(the_plan.steps)
        self.done = 0
        self.progress: Any = None
        self.task: Any = None
        self.live = not as_json and sys.stdout.isatty()
        self.human: Any = None  # a person asked at the terminal when a step escalates to one
        self.lines = Lines()

    def __enter__(self) -> ApplyDisplay:
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task("starting", total=self.total)
        if sys.stdin.isatty() and not self.as_json:
            from runner.escalate import terminal_prompt

            self.human = self.paused(terminal_prompt(ask=input, say=err))
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()
        self.lines.close()

    def paused(self, fn: Any) -> Any:
        """Wrap a terminal conversation so the live progress bar steps aside for it."""

        def call(*args: Any) -> Any:
            if self.progress is not None:
                self.progress.stop()
            try:
                return fn(*args)
            finally:
                if self.progress is not None:
                    self.progress.start()

        return call

    def event(self, ev: dict[str, Any]) -> None:
        from runner import report

        if self.as_json:
            self.lines.write(json.dumps(ev, default=str) + "\n")
            return
        t = ev.get("type")
        if t == "step_start" and self.progress is not None:
            self.progress.update(self.task, description=f"{ev.get('instance')} on {ev.get('host')}")
        if t == "step_end":
            self.done += 1
            if self.progress is not None:
                self.progress.update(self.task, completed=min(self.done, self.total))
            if self.quiet and ev.get("status") in ("ok", "skipped") and not ev.get("table"):
                return
        line = report.event_line(ev, color=self.color)
        if line:
            if self.progress is not None:
                from rich.text import Text

                self.progress.console.print(Text.from_ansi(line))
            else:
                self.lines.write(line + "\n")
