"""The `opsrun` command line (typer): the only module that prints or exits.

Imports stay light at start-up: litellm, proxmoxer, adbutils and fabric load only when a
command needs them (a playbook with such hosts, or an LLM command).
"""

from __future__ import annotations

import json
import os
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
    DriftError,
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


def _split(values: list[str] | None) -> tuple[str, ...]:
    out: list[str] = []
    for v in values or []:
        out += [p.strip() for p in v.split(",") if p.strip()]
    return tuple(out)


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


def _prepare(
    playbook: str, inventory: str | None, variables: list[str] | None, base_vars: dict[str, Any] | None = None
) -> Any:
    from runner import config
    from runner.session import Session

    inv = config.load_inventory(inventory)
    pb = config.load_playbook(playbook, inv)
    cli_vars = dict(base_vars or {})
    cli_vars.update(config.parse_cli_vars(list(variables or [])))
    return Session(inv, pb, cli_vars)


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
    from runner.session import select_hosts

    if as_json:
        fmt = "json"
    if fmt not in ("text", "markdown", "json"):
        raise InvalidInput(f"--format {fmt!r}: use text, markdown or json")
    with _prepare(playbook, inventory, var) as session:
        hosts = select_hosts(session.inventory, session.playbook, limit)
        the_plan, _ = make_plan(
            session, hosts, tags=_split(tags), skip_tags=_split(skip_tags), offline=offline, forks=forks, limit=limit
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
    from runner import plan as planmod
    from runner import report
    from runner.journal import StateLock, new_run_id

    saved = None
    done: dict[tuple[str, str], dict[str, Any]] = {}
    if resume:
        if target or var or limit or tags or skip_tags:
            raise InvalidInput(
                "--resume continues a run with its own playbook, inventory and options",
                hint=f"opsrun apply --resume {resume}",
            )
        session, run_id, done, opts = _resume_session(resume, inventory)
        limit, tags, skip_tags = opts.get("limit"), opts.get("tags"), opts.get("skip_tags")
    elif target is None:
        raise InvalidInput("apply needs a playbook, a saved plan file, or --resume RUN_ID")
    elif target.endswith(".json"):
        try:
            text = Path(target).read_text()
        except OSError as exc:
            raise InvalidInput(f"cannot read plan file {target}: {exc.strerror or exc}") from None
        saved = planmod.read_saved(text, target)
        opts = saved.data.get("options") or {}
        if var or limit or tags or skip_tags:
            raise InvalidInput(
                "a saved plan is applied exactly as planned: --var, --limit, --tags "
                "and --skip-tags are fixed by the plan",
                hint="plan again with them",
            )
        inventory = inventory or (None if saved.inventory_file.startswith("<") else saved.inventory_file)
        limit, tags, skip_tags = opts.get("limit"), opts.get("tags"), opts.get("skip_tags")
        session = _prepare(saved.playbook_file, inventory, None, saved.data.get("vars") or {})
        run_id = new_run_id()
    else:
        session = _prepare(target, inventory, var)
        run_id = new_run_id()
    color = report.use_color(sys.stdout)
    lock = StateLock(run_id)
    with session, lock:
        if lock.stale_note and not as_json:
            _err(f"note: {lock.stale_note}")
        recap, waiting = _apply_locked(
            session,
            run_id,
            saved,
            done,
            lock,
            target=target or "",
            limit=limit,
            tags=_split(tags),
            skip_tags=_split(skip_tags),
            forks=forks,
            yes=yes,
            allow_drift=allow_drift,
            as_json=as_json,
            color=color,
        )
    events = _journal_events(run_id)  # the recap counts fixes, undos and rollbacks from them
    if as_json:
        _out(json.dumps({"type": "recap", **report.recap_json(recap, run_id, events=events)}, default=str) + "\n")
    else:
        _out(report.recap_text(recap, run_id, color=color, events=events))
    if waiting is not None:
        from runner.errors import HumanNeeded
        from runner.journal import state_dir

        report_path = state_dir() / "runs" / run_id / "escalation.md"
        raise HumanNeeded(run_id, str(report_path), f"step '{waiting.instance}' on {waiting.host}: {waiting.reason}")
    raise typer.Exit(EXIT_OK if recap.ok else EXIT_ERROR)


def _journal_events(run_id: str) -> list[dict[str, Any]]:
    from runner.journal import get_run

    try:
        return get_run(run_id).events
    except OpsrunError:
        return []


def _resume_session(
    run_id: str, inventory: str | None
) -> tuple[Any, str, dict[tuple[str, str], dict[str, Any]], dict[str, Any]]:
    """The session, run id, finished steps and options of a run to continue."""
    from runner import journal

    run = journal.get_run(run_id)
    start = run.start
    if not start:
        raise InvalidInput(f"run {run.run_id} has no run_start event: nothing to resume")
    if run.outcome == "ok":
        raise InvalidInput(f"run {run.run_id} finished ok: nothing to resume")
    inv = inventory or start.get("inventory_arg")
    session = _prepare(str(start["playbook"]), inv, None, dict(start.get("vars") or {}))
    _refuse_if_still_running(run, session)
    if session.playbook.digest != start.get("playbook_digest"):
        _err(f"note: {start['playbook']} changed since run {run.run_id} started; the changed steps run as now written")
    done = {
        (str(e["host"]), str(e["step"])): dict(e.get("result") or {}) for e in run.events if e.get("type") == "register"
    }
    return session, run.run_id, done, dict(start.get("options") or {})


# Is process group PGID alive on the host? Zombies do not count (kill -0 would count them);
# without ps, kill -0 decides.
_REMOTE_GROUP_ALIVE = (
    "if ! kill -0 -PGID 2>/dev/null; then echo gone; "
    "elif procs=$(ps -e -o pgid= -o stat= 2>/dev/null); then "
    "echo \"$procs\" | awk '$1 == PGID && $2 !~ /^Z/ {a = 1} END {print (a ? \"alive\" : \"gone\")}'; "
    "else echo alive; fi"
)


def _refuse_if_still_running(run: Any, session: Any) -> None:
    """Resume never starts a step beside its earlier copy: a process the stopped run started
    for a step that never ended, and that still runs, stops the resume (exit 1)."""
    import socket

    from runner import journal
    from runner.transports.local import group_alive

    alive: list[str] = []
    for p in journal.unfinished_processes(run.events):
        pgid = p.get("pgid")
        what = f"step '{p['instance']}' on {p.get('host')}"
        if p.get("transport") == "local" and isinstance(pgid, int):
            if p.get("machine") != socket.gethostname():
                _err(f"note: {what} ran on another machine ({p.get('machine')}): cannot check it still runs")
            elif group_alive(pgid, int(p.get("start") or 0), str(p.get("boot") or "")):
                alive.append(f"{what}: process group {pgid} (stop it: kill -TERM -- -{pgid})")
        elif isinstance(pgid, int):
            try:
                res = session.transport(str(p.get("host"))).run(
                    _REMOTE_GROUP_ALIVE.replace("PGID", str(pgid)),
                    timeout=30,
                    sudo=bool(p.get("sudo")),
                )
            except OpsrunError as exc:
                _err(f"note: {what}: cannot check whether its process group {pgid} still runs: {exc.message}")
                continue
            if res.out.strip() != "gone":
                alive.append(f"{what}: remote process group {pgid} (stop it there: kill -TERM -{pgid})")
        else:
            _err(f"note: {what} was running a command on {p.get('remote') or p.get('host')} when the run "
                 "stopped; opsrun cannot see whether it still runs there: check before it runs again")
    if alive:
        raise OpsrunError(
            f"not resuming run {run.run_id}: the step it stopped in may still be running\n  "
            + "\n  ".join(alive),
            hint=f"wait for it to end (or stop it), then: opsrun apply --resume {run.run_id}",
        )


def _apply_locked(
    session: Any,
    run_id: str,
    saved: Any,
    done: dict[tuple[str, str], dict[str, Any]],
    lock: Any,
    *,
    target: str,
    limit: str | None,
    tags: tuple[str, ...],
    skip_tags: tuple[str, ...],
    forks: int | None,
    yes: bool,
    allow_drift: bool,
    as_json: bool,
    color: bool,
) -> tuple[Any, Any]:
    """Plan (and check a saved plan), confirm, run, journal. Returns (recap, evidence if waiting for a human)."""
    import signal
    import threading

    from runner import report
    from runner.apply import Executor
    from runner.escalate import terminal_prompt
    from runner.journal import Journal
    from runner.planner import make_plan
    from runner.session import select_hosts

    hosts = select_hosts(session.inventory, session.playbook, limit)
    the_plan, host_plans = make_plan(session, hosts, tags=tags, skip_tags=skip_tags, forks=forks, limit=limit)
    if saved is not None:
        _check_saved(saved, the_plan, session, target, allow_drift)
    if not as_json:
        _out(report.plan_text(the_plan, color=color))
    if saved is None and the_plan.has_changes and not yes:
        if not sys.stdin.isatty():
            raise OpsrunError(
                "not applying: no terminal to confirm on", hint="pass --yes (CI), or apply a reviewed plan file"
            )
        if not typer.confirm("Apply these changes?", default=False):
            _err("cancelled: nothing was changed")
            raise typer.Exit(EXIT_ERROR)
    journal = Journal(run_id)
    session.on_spawn = lambda info: journal.note("process", **info)  # what resume must check
    stop = threading.Event()

    def on_sigint(signum: int, frame: Any) -> None:
        if stop.is_set():
            session.stop_running()  # the steps' process groups end with opsrun, not after it
            raise KeyboardInterrupt
        stop.set()
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        _err(f"\nstopping after the current action ({name}; again to stop at once)")

    # SIGTERM (systemd, CI cancel, kill) and SIGHUP (terminal gone) stop like Ctrl-C.
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            previous[sig] = signal.signal(sig, on_sigint)
    try:
        journal.write_artifact(
            "plan.json" if not done else f"plan-resume-{len(list(journal.dir.glob('plan*.json')))}.json",
            report.plan_json(the_plan),
        )
        if done:
            journal.event("resume", run_id=run_id, finished=sorted(f"{h}/{s}" for h, s in done), pid=os.getpid())
        else:
            journal.event(
                "run_start",
                run_id=run_id,
                playbook=session.playbook.file,
                playbook_name=session.playbook.name,
                playbook_digest=session.playbook.digest,
                hosts=hosts,
                inventory=session.inventory.file,
                inventory_arg=None if session.inventory.file.startswith("<") else session.inventory.file,
                vars=session.cli_vars,
                options={"limit": limit, "tags": list(tags), "skip_tags": list(skip_tags)},
                plan_file=saved.path if saved else None,
                user=_user(),
                pid=os.getpid(),
                argv=sys.argv[1:],
                summary=the_plan.counts(),
                lock_note=lock.stale_note,
            )
        if not as_json:
            _out(f"{'Resuming' if done else 'Applying'} (run {run_id})\n")
        with _ApplyDisplay(the_plan, as_json=as_json, color=color) as display:
            human = None
            if sys.stdin.isatty() and not as_json:
                human = display.paused(terminal_prompt(ask=input, say=_err))
            executor = Executor(
                session,
                the_plan,
                host_plans,
                journal,
                forks=forks,
                on_event=display.event,
                stop=stop,
                run_id=run_id,
                human=human,
                fixer=_fixer(session),
                done=done,
                strict=saved is not None and not allow_drift,
            )
            recap = executor.run()
        waiting = executor.waiting_for_human
        if waiting is not None:
            outcome = "waiting_for_human"
        elif stop.is_set() and not executor.aborted_by_human:
            outcome = "interrupted"
            recap.aborted = recap.aborted or "interrupted (Ctrl-C or a signal)"
        else:
            outcome = "ok" if recap.ok else "failed"
        journal.event("run_end", outcome=outcome, totals=recap.totals(), aborted=recap.aborted)
        return recap, waiting
    except KeyboardInterrupt:
        journal.event("run_end", outcome="interrupted")
        _err(f"interrupted: stopped at once (running commands were ended); go on with: "
             f"opsrun apply --resume {run_id}")
        raise
    finally:
        session.on_spawn = None
        journal.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _check_saved(saved: Any, the_plan: Any, session: Any, target: str, allow_drift: bool) -> None:
    from runner import plan as planmod

    problems = planmod.check_inputs(saved, session.playbook.digest, session.inventory.digest, session.cli_vars)
    if problems:
        raise DriftError(
            "the saved plan no longer matches its inputs: " + "; ".join(problems),
            hint="make a new plan: opsrun plan ... -o " + target,
        )
    drifted = []
    for sp in the_plan.steps:
        s = saved.step(sp.host, sp.instance)
        why = "not in the saved plan" if s is None else planmod.drift(s, sp)
        if s is not None and (s.get("status") == "unknown" or sp.conditional_on or sp.change.read_only):
            why = None
        if why:
            drifted.append(f"step '{sp.instance}' on {sp.host}: {why}")
    if drifted and not allow_drift:
        raise DriftError(
            "state moved since the plan was made:\n  " + "\n  ".join(drifted),
            hint="review a new plan, or pass --allow-drift to apply anyway",
        )


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


def _fixer(session: Any) -> Any:
    """The LLM fixer for the escalation ladder, when some step's policy asks for it; the
    gateway itself loads only when a fix is first asked for."""
    from runner import policy as pol

    pb = session.playbook
    if not any("llm" in pol.merge(pb.policy, s.policy).escalate for s in pb.steps):
        return None
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
