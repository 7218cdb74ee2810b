"""The `opsrun` command line (typer): the only module that prints or exits.

Imports stay light at start-up: litellm, proxmoxer, adbutils and fabric load only when a
command needs them (a playbook with such hosts, or an LLM command).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

try:  # typer >= 0.20 vendors click; older versions use the click package
    from typer._click.exceptions import ClickException, UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException, UsageError  # type: ignore[assignment]

from runner.errors import (
    EXIT_CHANGES,
    EXIT_ERROR,
    EXIT_INVALID,
    EXIT_OK,
    InvalidInput,
    OpsrunError,
)

EXIT_CODES_HELP = (
    "Exit codes: 0 success / no changes, 1 error, 2 changes present (plan --detailed-exitcode), "
    "3 stopped waiting for a human, 4 invalid input."
)

app = typer.Typer(
    name="opsrun",
    help="Run declarative YAML playbooks on servers (SSH), Proxmox VE and Android (ADB): "
    "validate, plan (exact previews), apply (with retry and escalation).\n\n" + EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
runs_app = typer.Typer(help="Past runs recorded in .opsrun/runs/.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")

InventoryOpt = Annotated[
    str | None,
    typer.Option(
        "--inventory", "-i", help="Inventory file (default: ./inventory.yaml, else the embedded one with `local`)."
    ),
]
VarOpt = Annotated[
    list[str] | None, typer.Option("--var", "-e", help="Set a variable: NAME=VALUE or @vars.yaml (highest precedence).")
]
LimitOpt = Annotated[str | None, typer.Option("--limit", "-l", help="Only these hosts/groups (pattern).")]
TagsOpt = Annotated[list[str] | None, typer.Option("--tags", "-t", help="Only steps with these tags.")]
SkipTagsOpt = Annotated[list[str] | None, typer.Option("--skip-tags", help="Skip steps with these tags.")]
ForksOpt = Annotated[
    int | None, typer.Option("--forks", "-f", min=1, help="Hosts worked on in parallel (default: all, up to 64).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


def _out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _err(text: str) -> None:
    sys.stderr.write(text if text.endswith("\n") else text + "\n")
    sys.stderr.flush()


# ---------------------------------------------------------------- validate


@app.command()
def validate(
    paths: Annotated[list[str], typer.Argument(help="Playbook/inventory files or folders.")],
    inventory: InventoryOpt = None,
    var: VarOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check playbooks and inventories against the JSON Schema, for semantic mistakes and for
    what plan would find without a host (undefined variables per host, missing sources)."""
    import gc

    from runner import config, load, offline, schema
    from runner.errors import Diagnostic

    gc.disable()  # a short run over one big object graph: collections only cost time (#11)
    files = load.yaml_files(paths)
    diags: list[Diagnostic] = []
    checked: list[dict[str, Any]] = []
    inv = None
    try:
        inv = config.load_inventory(inventory)
    except InvalidInput as exc:
        diags += exc.diagnostics or [Diagnostic(inventory or "inventory", 0, 0, exc.message)]
    cli_vars = config.parse_cli_vars(list(var or []))
    explicit = {str(Path(p)) for p in paths if not Path(p).is_dir()}
    warnings: list[Diagnostic] = []
    for f in files:
        try:
            doc = load.read(f)
        except InvalidInput as exc:
            diags += exc.diagnostics
            checked.append({"file": str(f), "kind": None, "valid": False})
            continue
        kind = schema.detect(doc)
        if kind is None:
            if str(f) in explicit:
                diags.append(
                    Diagnostic(
                        str(f),
                        1,
                        1,
                        "not an opsrun playbook, inventory or gateway file",
                        hint="a playbook has 'opsrun: 1' and 'steps:'",
                    )
                )
            checked.append({"file": str(f), "kind": None, "valid": str(f) not in explicit})
            continue
        if kind == "playbook":
            found = offline.validate_playbook(doc, inv, cli_vars)
            if not found and inv is not None:
                warnings += _conflicts(doc, inv, cli_vars)
        elif kind == "inventory":
            found = schema.validate_inventory(doc)
        else:
            found = schema.validate_gateway(doc)
        diags += found
        checked.append({"file": str(f), "kind": kind, "valid": not found})
    if not files:
        diags.append(Diagnostic(" ".join(paths), 0, 0, "no YAML files found"))
    if as_json:
        doc_out = {
            "valid": not diags,
            "files": checked,
            "errors": [d.as_dict() for d in diags],
            "warnings": [d.as_dict() for d in warnings],
        }
        _out(json.dumps(doc_out, indent=2) + "\n")
    else:
        for d in [*diags, *warnings]:
            _err(d.render())
        n = sum(1 for c in checked if c["kind"])
        if diags:
            _err(f"{len(diags)} error{'s' if len(diags) != 1 else ''} in {len(files)} file(s)")
        else:
            extra = f" ({len(warnings)} warning{'s' if len(warnings) != 1 else ''})" if warnings else ""
            _out(f"ok: {n} file{'s' if n != 1 else ''} valid{extra}\n")
    raise typer.Exit(EXIT_INVALID if diags else EXIT_OK)


def _conflicts(doc: Any, inv: Any, cli_vars: dict[str, Any]) -> list[Any]:
    """Warnings for steps that can never converge (planned on a blank host, no I/O)."""
    from runner import config, schema
    from runner.planner import conflict_diagnostics

    try:
        playbook = config.build_playbook(doc, set(schema.kind_names()))
        return conflict_diagnostics(playbook, inv, cli_vars)
    except Exception:  # a warning pass never fails validate: errors are reported elsewhere
        return []


# ---------------------------------------------------------------- plan


@app.command()
def plan(
    playbook: Annotated[str, typer.Argument(help="The playbook to plan.")],
    inventory: InventoryOpt = None,
    var: VarOpt = None,
    limit: LimitOpt = None,
    tags: TagsOpt = None,
    skip_tags: SkipTagsOpt = None,
    forks: ForksOpt = None,
    offline: Annotated[bool, typer.Option("--offline", help="Do not probe hosts: every step shows as '?'.")] = False,
    out: Annotated[
        str | None, typer.Option("--out", "-o", help="Save the plan (JSON) for `opsrun apply FILE`.")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="text | markdown | json")] = "text",
    as_json: JsonOpt = False,
    detailed_exitcode: Annotated[
        bool, typer.Option("--detailed-exitcode", help="Exit 2 when there are changes, 0 when none, 1 on error.")
    ] = False,
) -> None:
    """Dry run: what would change on each host, with the exact commands and diffs."""
    from runner import report
    from runner.planner import make_plan
    from runner.session import open_session, select_hosts, split_names

    if as_json:
        fmt = "json"
    if fmt not in ("text", "markdown", "json"):
        raise InvalidInput(f"--format {fmt!r}: use text, markdown or json")
    with open_session(playbook, inventory, var) as session:
        hosts = select_hosts(session.inventory, session.playbook, limit)
        the_plan, _ = make_plan(
            session,
            hosts,
            tags=split_names(tags),
            skip_tags=split_names(skip_tags),
            offline=offline,
            forks=forks,
            limit=limit,
        )
    if out:
        _save_plan(Path(out), report.plan_json(the_plan))
    if fmt == "json":
        _out(report.plan_json(the_plan))
    elif fmt == "markdown":
        _out(report.plan_markdown(the_plan))
    else:
        _out(report.plan_text(the_plan, color=report.use_color(sys.stdout)))
        if out:
            _out(f"Saved plan to {out}; apply it exactly with: opsrun apply {out}\n")
    if the_plan.unreachable:
        raise typer.Exit(EXIT_ERROR)
    if detailed_exitcode and the_plan.has_changes:
        raise typer.Exit(EXIT_CHANGES)
    raise typer.Exit(EXIT_OK)


def _save_plan(path: Path, text: str) -> None:
    """A saved plan holds diffs of private files: written 0600, atomically."""
    from runner.files import write_private

    try:
        write_private(path, text.encode())
    except OSError as exc:
        raise OpsrunError(f"cannot write the plan to {path}: {exc.strerror or exc}") from None


# ---------------------------------------------------------------- apply


@app.command()
def apply(
    target: Annotated[
        str | None, typer.Argument(help="A playbook, or a plan file saved with `plan -o`.", show_default=False)
    ] = None,
    inventory: InventoryOpt = None,
    var: VarOpt = None,
    limit: LimitOpt = None,
    tags: TagsOpt = None,
    skip_tags: SkipTagsOpt = None,
    forks: ForksOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    allow_drift: Annotated[
        bool, typer.Option("--allow-drift", help="Apply a saved plan even if the hosts' state moved since.")
    ] = False,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume", help="Continue RUN_ID (after a crash or a human's fix): steps that finished are not re-run."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Stream events as JSON lines (for CI).")] = False,
) -> None:
    """Plan, confirm, then make the changes (or apply a saved plan exactly, or resume a run)."""
    from runner import report
    from runner.apply.usecase import ApplyRequest
    from runner.apply.usecase import apply as apply_run

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
    )
    color = report.use_color(sys.stdout)
    run = apply_run(request, _ApplyConsole(as_json=as_json, yes=yes, color=color), make_fixer=_make_fixer)
    if as_json:
        recap = report.recap_json(run.recap, run.run_id, events=run.events)
        _out(json.dumps({"type": "recap", **recap}, default=str) + "\n")
    else:
        _out(report.recap_text(run.recap, run.run_id, color=color, events=run.events))
    needed = run.human_needed()
    if needed is not None:
        raise needed
    raise typer.Exit(EXIT_OK if run.recap.ok else EXIT_ERROR)


class _ApplyConsole:
    """The person's side of `opsrun apply` (runner.apply.usecase.ApplyUI) on the terminal."""

    def __init__(self, *, as_json: bool, yes: bool, color: bool) -> None:
        self.as_json = as_json
        self.yes = yes
        self.color = color

    def note(self, text: str) -> None:
        _err(text)

    def stale_lock(self, note: str) -> None:
        if not self.as_json:
            _err(f"note: {note}")

    def planned(self, the_plan: Any) -> None:
        from runner import report

        if not self.as_json:
            _out(report.plan_text(the_plan, color=self.color))

    def confirm(self, the_plan: Any) -> None:
        if self.yes:
            return
        if not sys.stdin.isatty():
            raise OpsrunError(
                "not applying: no terminal to confirm on", hint="pass --yes (CI), or apply a reviewed plan file"
            )
        if not typer.confirm("Apply these changes?", default=False):
            _err("cancelled: nothing was changed")
            raise typer.Exit(EXIT_ERROR)

    def starting(self, run_id: str, resuming: bool) -> None:
        if not self.as_json:
            _out(f"{'Resuming' if resuming else 'Applying'} (run {run_id})\n")

    def running(self, the_plan: Any) -> _ApplyDisplay:
        return _ApplyDisplay(the_plan, as_json=self.as_json, color=self.color)


def _make_fixer(session: Any) -> Any:
    """The LLM fixer (apply builds it only when some step's policy escalates to it)."""
    from runner.llm.fixer import make_fixer

    return make_fixer(session, approve=_approve_fix if sys.stdin.isatty() else None)


def _approve_fix(fix: Any) -> bool:
    """Show an LLM's proposed fix and ask a human to run it."""
    import yaml

    from runner.secrets import redact

    _err(redact(f"\nLLM fix proposed ({fix.provider}/{fix.model}, confidence {fix.confidence:.2f}): {fix.diagnosis}"))
    _err(redact(yaml.safe_dump(fix.steps, sort_keys=False)))
    return typer.confirm("Run this fix, then retry the step?", default=False)


class _ApplyDisplay:
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

    def __enter__(self) -> _ApplyDisplay:
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

            self.human = self.paused(terminal_prompt(ask=input, say=_err))
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

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
            _out(json.dumps(ev, default=str) + "\n")
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
                _out(line + "\n")


# ---------------------------------------------------------------- schema / runs


@app.command("schema")
def schema_cmd(
    name: Annotated[str, typer.Argument(help="playbook | inventory | gateway")] = "playbook",
) -> None:
    """Print a JSON Schema (for editors and LLMs)."""
    from runner import schema

    if name not in ("playbook", "inventory", "gateway"):
        raise InvalidInput(f"no schema '{name}'", hint="use playbook, inventory or gateway")
    _out(schema.schema_text(name))


@runs_app.command("list")
def runs_list(as_json: JsonOpt = False) -> None:
    """List recorded runs."""
    from runner import journal, report

    runs = journal.list_runs()
    if as_json:
        _out(
            json.dumps(
                [
                    {
                        "run_id": r.run_id,
                        "started": r.start.get("ts"),
                        "playbook": r.start.get("playbook"),
                        "outcome": r.outcome,
                    }
                    for r in runs
                ],
                indent=2,
            )
            + "\n"
        )
    else:
        _out(report.runs_table(runs))


@runs_app.command("show")
def runs_show(
    run_id: Annotated[str, typer.Argument(help="Run id (a unique prefix, or 'last').")],
    as_json: JsonOpt = False,
) -> None:
    """Timeline of one run: steps, attempts, escalations, fixes, undos, durations, outcome."""
    from runner import journal, report
    from runner.tally import host_summary

    run = journal.get_run(run_id)
    if as_json:
        doc = {"run_id": run.run_id, "outcome": run.outcome, "hosts": host_summary(run.events), "events": run.events}
        _out(json.dumps(doc, indent=2, default=str) + "\n")
    else:
        _out(report.run_timeline(run))


@app.command()
def version() -> None:
    """Print the version."""
    from runner import __version__

    _out(f"opsrun {__version__}\n")


def _mount_optional() -> None:
    """Sub-apps from later modules, when present (they import nothing heavy at load)."""
    import importlib

    try:
        from runner.llm import author_cmd
    except ModuleNotFoundError:
        pass
    else:
        author_cmd.register(app)
    for module, name in (("runner.llm.commands", "gateway"),):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError:
            continue
        sub = getattr(mod, "app", None)
        if sub is not None:
            app.add_typer(sub, name=name)


_mount_optional()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning our errors into messages and exit codes."""
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="opsrun", standalone_mode=False)
    except OpsrunError as exc:
        _err(f"error: {exc.render()}" if not isinstance(exc, InvalidInput) or not exc.diagnostics else exc.render())
        sys.exit(exc.exit_code)
    except typer.Abort:
        _err("aborted")
        sys.exit(EXIT_ERROR)
    except UsageError as exc:
        _err(exc.format_message() if not exc.ctx else f"{exc.ctx.get_usage()}\nerror: {exc.format_message()}")
        sys.exit(EXIT_INVALID)
    except ClickException as exc:
        _err(f"error: {exc.format_message()}")
        sys.exit(EXIT_INVALID)
    except KeyboardInterrupt:
        _err("interrupted")
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(EXIT_ERROR)
    except RecursionError:  # last resort: the loaders bound depth, this must never show a traceback
        _err("error: the input is nested too deeply to process\n  hint: flatten the data "
             "(docs/playbooks.md, Input limits)")
        sys.exit(EXIT_INVALID)
    except MemoryError:
        _err("error: out of memory while processing the input\n  hint: the input is too large "
             "(docs/playbooks.md, Input limits)")
        sys.exit(EXIT_INVALID)
    sys.exit(code if isinstance(code, int) else EXIT_OK)
