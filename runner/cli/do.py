"""`opsrun do "REQUEST"`: the terminal side of runner.llm.do (drafts, the plan, the y/N approval, the
live apply display, recaps). Imports neither litellm, the gateway nor the loop at load.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from runner import formats
from runner.cli.options import GatewayOpt, InventoryOpt, LimitOpt
from runner.cli.output import err, out, user_errors
from runner.errors import OpsrunError


def do(
    request: Annotated[str, typer.Argument(help="What to do, in words.")],
    limit: LimitOpt = None,
    inventory: InventoryOpt = None,
    gateway: GatewayOpt = None,
    out_file: Annotated[
        Path | None,
        typer.Option("--out", "-o", show_default=False,
                     help="Keep the final playbook here (the drafts beside it as NAME.draftN.yaml), "
                          "to review and repeat with `opsrun apply` without a model."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Approve plans without asking, within the limits "
                                               "(gateway.yaml `do:`, or the flags below).")
    ] = False,
    max_changes: Annotated[
        int | None, typer.Option("--max-changes", min=0, show_default=False,
                                 help="--yes approves at most this many changing steps (default: do.max_changes, 10).")
    ] = None,
    max_replans: Annotated[
        int | None, typer.Option("--max-replans", min=0, max=10, show_default=False,
                                 help="Revised playbooks after the fixes ran out (default: do.max_replans, 2).")
    ] = None,
    max_fixes: Annotated[
        int | None, typer.Option("--max-fixes", min=0, max=5, show_default=False,
                                 help="LLM fixes per failing step before a replan (default: do.max_fixes, 1).")
    ] = None,
    allow_unknown: Annotated[
        bool | None, typer.Option("--allow-unknown/--no-unknown", show_default=False,
                                  help="Whether --yes may approve `?` steps (counted as changes) "
                                       "(default: do.allow_unknown, true).")
    ] = None,
    deadline_s: Annotated[
        float | None, typer.Option("--deadline", min=1, show_default=False, metavar="SECONDS",
                                   help="One deadline for every model request of the run: drafts, repairs, fixes, "
                                        "replans (default: do.deadline_s, else routing.deadline_s).")
    ] = None,
    max_repairs: Annotated[
        int, typer.Option("--max-repairs", min=0, max=10,
                          help="How many times the model may repair a draft our checks rejected.")
    ] = 3,
) -> None:
    """Ask the LLM for a playbook, check it as `author` does, show the plan, ask for approval
    (--yes: within limits), apply it with the fixer ladder, and on a failure the fixes do not
    mend ask for a revised playbook of the remaining work (max_replans), then a human.
    Exit 0 done, 1 error / no model / declined, 3 a human is needed, 4 bad input."""
    from runner import report
    from runner.gateway import Gateway
    from runner.llm.do import DoLimits, DoRequest
    from runner.llm.do import do as run_do

    color = report.use_color(sys.stdout)
    console = _DoConsole(color=color)
    with user_errors():
        if out_file is not None and out_file.exists() and not force:
            raise OpsrunError(f"{out_file} exists; nothing was written", hint="pass --force to overwrite it")
        gw = Gateway.from_file(gateway)
        limits = DoLimits.from_config(gw.config.do, max_changes=max_changes, max_replans=max_replans,
                                      max_fixes=max_fixes, allow_unknown=allow_unknown, deadline_s=deadline_s)
        req = DoRequest(request, inventory=inventory, limit=limit, out=out_file, yes=yes, max_repairs=max_repairs)
        done = run_do(req, console, gw, limits=limits)
    where = f"; kept {done.final}" if done.final is not None else ""
    err(f"done: do run {done.run_id} in {len(done.passes)} pass{'es' if len(done.passes) != 1 else ''}{where}")


class _DoConsole:
    """The person's side of `opsrun do` (runner.llm.do.DoUI) on the terminal."""

    def __init__(self, *, color: bool) -> None:
        self.color = color
        self.interactive = sys.stdin.isatty()

    def note(self, text: str) -> None:
        err(text)

    def begin(self, run_id: str) -> None:
        err(f"-- do run {run_id} (its timeline: opsrun runs show {run_id})")

    def drafted(self, n: int, draft: Any, path: Path) -> None:
        tries = f" after {draft.tries} tries" if draft.tries > 1 else ""
        err(f"-- draft {n} written by {draft.answer.provider} ({draft.answer.model}) in "
            f"{draft.answer.latency_s:.2f}s{tries}; checked: schema, safety rules, offline plan; {path}")

    def planned(self, plan: Any) -> None:
        out(formats.plan(plan, "text", color=self.color))

    def refused(self, reasons: list[str]) -> None:
        err("--yes may not approve this plan:\n" + "\n".join(f"  - {r}" for r in reasons))

    def ask(self, plan: Any) -> bool:
        return typer.confirm("Apply these changes?", default=False)

    def approve_fix(self, fix: Any) -> bool:
        from runner.cli.apply import _approve_fix

        return _approve_fix(fix)

    def starting(self, run_id: str) -> None:
        out(f"Applying (run {run_id})\n")

    def running(self, plan: Any) -> Any:
        from runner.cli.apply import _ApplyDisplay

        return _ApplyDisplay(plan, as_json=False, color=self.color)

    def applied(self, outcome: Any) -> None:
        out(formats.recap(outcome.recap, outcome.run_id, "text", color=self.color, events=outcome.events))


def register(app: typer.Typer) -> None:
    app.command("do")(do)
