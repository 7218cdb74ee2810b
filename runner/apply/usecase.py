"""The apply use case: a playbook, a saved plan or a run to resume, planned (a saved plan checked), locked,
run by the Executor and journaled. Imports no cli and no llm: the UI and the fixer are handed in.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Collection, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from runner import journal as journals
from runner import plan as planmod
from runner import policy as pol
from runner import shard as shards
from runner.apply.engine import Executor
from runner.errors import DriftError, HumanNeeded, InvalidInput, OpsrunError, resume_command
from runner.escalate import Evidence, FixAttempt
from runner.journal import Journal, RunInfo, StateLock, new_run_id
from runner.model import Plan
from runner.plan import SavedPlan
from runner.planner import make_plan
from runner.recap import Recap
from runner.report import plan_json
from runner.session import Session, open_session, select_hosts, split_names

Done = dict[tuple[str, str], dict[str, Any]]  # (host, step id) -> registered result of a finished step
FixerFactory = Callable[[Session], Callable[[Evidence], FixAttempt]]


@dataclass(frozen=True)
class ApplyRequest:
    """What the person asked for: a target (playbook or saved plan file) or a run to resume."""

    target: str | None = None
    inventory: str | None = None
    variables: tuple[str, ...] = ()  # NAME=VALUE or @vars.yaml
    limit: str | None = None
    tags: tuple[str, ...] = ()  # as given: repeated and/or comma lists
    skip_tags: tuple[str, ...] = ()
    forks: int | None = None
    allow_drift: bool = False
    resume: str | None = None
    interactive: bool = True  # a person can confirm at a terminal; False: hints add --yes
    shard: str | None = None  # --shard I/N, for a playbook only (a saved plan or a resumed run keeps its own)
    env: Mapping[str, str] = field(default_factory=dict)  # where CI engines name the shard (GitLab, Kubernetes)
    run_group: str | None = None  # --run-id: the id the shards of one run share (default: the CI pipeline's)
    state: Path | None = None  # the state folder (journal, lock); None: OPSRUN_STATE_DIR or ./.opsrun
    # with resume: the saved plan the run was approved under (the job queue's); the steps not
    # yet done must still match it, as a saved plan's do (drift refused, strict)
    bound_plan: str | None = None


class RunView(Protocol):
    """What the UI shows while the run goes: every event; `human` asks a person (None: no one to ask)."""

    human: Callable[[Evidence], tuple[str, str]] | None

    def event(self, ev: dict[str, Any]) -> None: ...


class ApplyUI(Protocol):
    """The person's side of apply (the CLI's console): told, shown, asked."""

    def note(self, text: str) -> None:
        """A line for the person (stderr): resume notes, a signal received."""

    def stale_lock(self, note: str) -> None:
        """The lock was taken over from a run that died."""

    def planned(self, plan: Plan) -> None:
        """The plan about to be applied."""

    def confirm(self, plan: Plan) -> None:
        """Before a playbook's changes are made (not a reviewed plan file's); raises to stop."""

    def starting(self, run_id: str, resuming: bool) -> None:
        """The run is journaled and about to start."""

    def running(self, plan: Plan) -> AbstractContextManager[RunView]:
        """The view of the run while the executor works."""


@dataclass
class ApplyOutcome:
    """The finished (or stopped) run: its recap, its events, and the evidence if it waits for a human."""

    run_id: str
    recap: Recap
    events: list[dict[str, Any]]
    waiting: Evidence | None = None
    interactive: bool = True
    state: Path | None = None

    def human_needed(self) -> HumanNeeded | None:
        """The error that says which human decision the run waits for (None: it does not)."""
        if self.waiting is None:
            return None
        w = self.waiting
        report_path = (self.state or journals.state_dir()) / "runs" / self.run_id / "escalation.md"
        return HumanNeeded(self.run_id, str(report_path), f"step '{w.instance}' on {w.host}: {w.reason}",
                           interactive=self.interactive)


def apply(
    req: ApplyRequest,
    ui: ApplyUI,
    *,
    make_fixer: FixerFactory | None = None,
    stop: threading.Event | None = None,
) -> ApplyOutcome:
    """Plan (and check a saved plan), confirm, run, journal; the recap and the run's events.
    `make_fixer(session)` builds the LLM fixer when some step's policy escalates to it;
    `stop` set from elsewhere (a job cancelled) stops the run as a first Ctrl-C does."""
    root = req.state
    saved: SavedPlan | None = None
    done: Done = {}
    limit, tags, skip_tags = req.limit, split_names(req.tags), split_names(req.skip_tags)
    part: shards.Shard | None = None
    keep: Collection[str] | None = None  # the hosts a saved plan or a resumed sharded run holds
    if req.resume:
        if req.target or req.variables or req.limit or req.tags or req.skip_tags or req.shard:
            raise InvalidInput(
                "--resume continues a run with its own playbook, inventory and options",
                hint=f"opsrun apply --resume {req.resume}",
            )
        session, run_id, done, opts = resume_session(req.resume, req.inventory, ui, req.interactive, root=root)
        if req.bound_plan:
            saved = _read_plan_file(req.bound_plan)
        limit, tags, skip_tags = opts.get("limit"), split_names(opts.get("tags")), split_names(opts.get("skip_tags"))
        part, keep = _kept_shard(journals.get_run(run_id, root).start, f"run {run_id}")
    elif req.target is None:
        raise InvalidInput("apply needs a playbook, a saved plan file, or --resume RUN_ID")
    elif req.target.endswith(".json"):
        saved = _read_plan_file(req.target)
        opts = saved.data.get("options") or {}
        if req.variables or req.limit or req.tags or req.skip_tags or req.shard:
            raise InvalidInput(
                "a saved plan is applied exactly as planned: --var, --limit, --shard, --tags "
                "and --skip-tags are fixed by the plan",
                hint="plan again with them",
            )
        inventory = req.inventory or (None if saved.inventory_file.startswith("<") else saved.inventory_file)
        limit, tags, skip_tags = opts.get("limit"), split_names(opts.get("tags")), split_names(opts.get("skip_tags"))
        session = open_session(saved.playbook_file, inventory, None, saved.data.get("vars") or {})
        run_id = new_run_id()
        part, keep = _kept_shard(saved.data, f"the saved plan {req.target}")
    else:
        part = shards.resolve(req.shard, req.env)
        session = open_session(req.target, req.inventory, list(req.variables))
        run_id = new_run_id()
    lock = StateLock(run_id, root)
    with session, lock:
        if lock.stale_note:
            ui.stale_lock(lock.stale_note)
        recap, waiting = _apply_locked(
            session, run_id, saved, done, lock, ui, make_fixer,
            target=req.target or req.bound_plan or "", limit=limit, tags=tags, skip_tags=skip_tags, forks=req.forks,
            allow_drift=req.allow_drift, interactive=req.interactive, shard=part, keep=keep,
            group=shards.run_group(req.run_group, req.env) if (part or req.run_group) else None,
            root=root, external_stop=stop,
        )
    # the recap counts fixes and undos from the events
    return ApplyOutcome(run_id, recap, journal_events(run_id, root), waiting, req.interactive, root)


def _read_plan_file(path: str) -> SavedPlan:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InvalidInput(f"cannot read plan file {path}: {exc.strerror or exc}") from None
    return planmod.read_saved(text, path)


def _kept_shard(doc: Mapping[str, Any], what: str) -> tuple[shards.Shard | None, Collection[str] | None]:
    """The shard a saved plan or a run was made for, and its hosts: applied again as they
    are, never re-split (the environment of the job applying it names no shard here)."""
    label = doc.get("shard")
    if not label:
        return None, None
    return shards.parse(str(label), what), frozenset(str(h) for h in doc.get("hosts") or [])


def journal_events(run_id: str, root: Path | None = None) -> list[dict[str, Any]]:
    """The run's journaled events ([] when it cannot be read back)."""
    try:
        return journals.get_run(run_id, root).events
    except OpsrunError:
        return []


def resume_session(
    run_id: str, inventory: str | None, ui: ApplyUI, interactive: bool = True, *, root: Path | None = None
) -> tuple[Session, str, Done, dict[str, Any]]:
    """The session, run id, finished steps and options of a run to continue."""
    run = journals.get_run(run_id, root)
    start = run.start
    if not start:
        raise InvalidInput(f"run {run.run_id} has no run_start event: nothing to resume")
    if run.outcome == "ok":
        raise InvalidInput(f"run {run.run_id} finished ok: nothing to resume")
    inv = inventory or start.get("inventory_arg")
    session = open_session(str(start["playbook"]), inv, None, dict(start.get("vars") or {}))
    refuse_if_still_running(run, session, ui, interactive)
    if session.playbook.digest != start.get("playbook_digest"):
        ui.note(f"note: {start['playbook']} changed since run {run.run_id} started; "
                "the changed steps run as now written")
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


class StillRunning(OpsrunError):
    """A resume refused because a process of the stopped run's last step still runs."""


def refuse_if_still_running(run: RunInfo, session: Session, ui: ApplyUI, interactive: bool = True) -> None:
    """Resume never starts a step beside its earlier copy: a process the stopped run started
    for a step that never ended, and that still runs, stops the resume (exit 1)."""
    import socket

    from runner.transports.local import group_alive

    alive: list[str] = []
    for p in journals.unfinished_processes(run.events):
        pgid = p.get("pgid")
        what = f"step '{p['instance']}' on {p.get('host')}"
        if p.get("transport") == "local" and isinstance(pgid, int):
            if p.get("machine") != socket.gethostname():
                ui.note(f"note: {what} ran on another machine ({p.get('machine')}): cannot check it still runs")
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
                ui.note(f"note: {what}: cannot check whether its process group {pgid} still runs: {exc.message}")
                continue
            if res.out.strip() != "gone":
                alive.append(f"{what}: remote process group {pgid} (stop it there: kill -TERM -{pgid})")
        else:
            ui.note(f"note: {what} was running a command on {p.get('remote') or p.get('host')} when the run "
                    "stopped; opsrun cannot see whether it still runs there: check before it runs again")
    if alive:
        raise StillRunning(
            f"not resuming run {run.run_id}: the step it stopped in may still be running\n  "
            + "\n  ".join(alive),
            hint=f"wait for it to end (or stop it), then: {resume_command(run.run_id, interactive=interactive)}",
        )


def _apply_locked(
    session: Session,
    run_id: str,
    saved: SavedPlan | None,
    done: Done,
    lock: StateLock,
    ui: ApplyUI,
    make_fixer: FixerFactory | None,
    *,
    target: str,
    limit: str | None,
    tags: tuple[str, ...],
    skip_tags: tuple[str, ...],
    forks: int | None,
    allow_drift: bool,
    interactive: bool = True,
    shard: shards.Shard | None = None,
    group: str | None = None,
    keep: Collection[str] | None = None,
    root: Path | None = None,
    external_stop: threading.Event | None = None,
) -> tuple[Recap, Evidence | None]:
    """Plan (and check a saved plan), confirm, run, journal. Returns (recap, evidence if waiting for a human).
    `shard`: only its hosts of the selection (after --limit); `keep`: exactly these (a saved shard)."""
    selected = select_hosts(session.inventory, session.playbook, limit)
    for d in session.inventory.warnings:  # Ansible variables with no equivalent, Proxmox sources
        ui.note(d.render())
    hosts = [h for h in selected if h in keep] if keep is not None else shards.select(selected, shard)
    if shard is not None:
        ui.note(shards.note(shard, hosts, selected))
    the_plan, host_plans = make_plan(session, hosts, tags=tags, skip_tags=skip_tags, forks=forks, limit=limit)
    the_plan.shard = str(shard) if shard else None
    if saved is not None:
        check_saved(saved, the_plan, session, target, allow_drift, done=done)
    ui.planned(the_plan)
    if saved is None and the_plan.has_changes:
        ui.confirm(the_plan)
    journal = Journal(run_id, root)
    session.on_spawn = lambda info: journal.note("process", **info)  # what resume must check
    stop = external_stop if external_stop is not None else threading.Event()

    def on_sigint(signum: int, frame: Any) -> None:
        if stop.is_set():
            session.stop_running()  # the steps' process groups end with opsrun, not after it
            raise KeyboardInterrupt
        stop.set()
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        ui.note(f"\nstopping after the current action ({name}; again to stop at once)")

    # SIGTERM (systemd, CI cancel, kill) and SIGHUP (terminal gone) stop like Ctrl-C.
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            previous[sig] = signal.signal(sig, on_sigint)
    try:
        journal.write_artifact(
            "plan.json" if not done else f"plan-resume-{len(list(journal.dir.glob('plan*.json')))}.json",
            plan_json(the_plan, compact=True),
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
                shard=str(shard) if shard else None,
                group=group,
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
        ui.starting(run_id, bool(done))
        with ui.running(the_plan) as view:
            executor = Executor(
                session,
                the_plan,
                host_plans,
                journal,
                forks=forks,
                on_event=view.event,
                stop=stop,
                run_id=run_id,
                human=view.human,
                fixer=_fixer(session, make_fixer),
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
        ui.note(f"interrupted: stopped at once (running commands were ended); go on with: "
                f"{resume_command(run_id, interactive=interactive)}")
        raise
    finally:
        session.on_spawn = None
        journal.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def check_saved(
    saved: SavedPlan, the_plan: Plan, session: Session, target: str, allow_drift: bool, done: Done | None = None
) -> None:
    """A saved plan applies only to the inputs it was made from, and (without --allow-drift)
    only while each step would still do what the plan file says (`done`: the steps a resumed
    run finished before, which need not)."""
    problems = planmod.check_inputs(saved, session.playbook.digest, session.inventory.digest, session.cli_vars)
    if problems:
        raise DriftError(
            "the saved plan no longer matches its inputs: " + "; ".join(problems),
            hint="make a new plan: opsrun plan ... -o " + target,
        )
    drifted = []
    for sp in the_plan.steps:
        if done and (sp.host, sp.step_id) in done:
            continue
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


def _fixer(session: Session, make_fixer: FixerFactory | None) -> Callable[[Evidence], FixAttempt] | None:
    """The LLM fixer for the escalation ladder, when some step's policy asks for it; the
    gateway itself loads only when a fix is first asked for."""
    pb = session.playbook
    steps = (*pb.steps, *pb.handlers)
    if make_fixer is None or not any("llm" in pol.merge(pb.policy, s.policy).escalate for s in steps):
        return None
    return make_fixer(session)
