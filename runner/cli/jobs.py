"""`opsrun jobs submit|list|show|cancel|work`: the job queue of runner.service from the terminal;
`work` runs the project's worker in the foreground until Ctrl-C. Imports service modules inside commands.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from runner.cli.approve import ProjectOpt
from runner.cli.options import JsonOpt
from runner.cli.output import err, out
from runner.errors import EXIT_OK

app = typer.Typer(help="Jobs that apply approved plans (.opsrun/jobs.sqlite), and the worker that runs them.",
                  no_args_is_help=True)


def _queue(project: str) -> Any:
    from runner.service.jobs import JobQueue
    from runner.service.project import Project

    return JobQueue(Project.at(project))


def _line(j: Any) -> str:
    return (f"{j.id:32} {j.state:11} {j.priority:>4} {j.attempts}/{j.max_retries + 1:<3} {j.plan_id:25} "
            f"{j.run_id or '-':24} {j.actor}")


@app.command("submit")
def jobs_submit(
    plan_id: Annotated[str, typer.Argument(help="An approved plan's id.")],
    priority: Annotated[int, typer.Option("--priority", "-p", help="Higher runs first (then oldest first).")] = 0,
    retries: Annotated[int, typer.Option("--retries", min=0, max=10,
                                         help="Attempts after a failure; each resumes the run.")] = 0,
    as_json: JsonOpt = False,
    project: ProjectOpt = ".",
) -> None:
    """Queue an approved plan for the worker (refused unless approved under its digest)."""
    from runner.service.project import terminal_user

    job = _queue(project).submit(plan_id, actor=terminal_user(), priority=priority, retries=retries)
    out(json.dumps(job.to_json(), indent=2) + "\n" if as_json else f"queued {job.id}\n")


@app.command("list")
def jobs_list(
    state: Annotated[str | None, typer.Option("--state", help="Only jobs in this state.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many, newest first.")] = 50,
    as_json: JsonOpt = False,
    project: ProjectOpt = ".",
) -> None:
    """Jobs, newest first: state, priority, attempts, plan, run."""
    jobs = _queue(project).list(state, limit)
    if as_json:
        out(json.dumps([j.to_json() for j in jobs], indent=2) + "\n")
        return
    if not jobs:
        out("no jobs\n")
        return
    out(f"{'job':32} {'state':11} {'prio':>4} {'try':5} {'plan':25} {'run':24} by\n")
    for j in jobs:
        out(_line(j) + "\n")


@app.command("show")
def jobs_show(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    as_json: JsonOpt = False,
    project: ProjectOpt = ".",
) -> None:
    """One job and its events (state changes and its run's journal)."""
    from runner import report

    q = _queue(project)
    job = q.get(job_id)
    events = q.events(job_id)
    if as_json:
        out(json.dumps({**job.to_json(), "events": events}, indent=2, default=str) + "\n")
        return
    out(f"job {job.id}: {job.state} (plan {job.plan_id}, attempt {job.attempts} of {job.max_retries + 1}, "
        f"priority {job.priority}, by {job.actor})\n")
    if job.error:
        out(f"error: {job.error}\n")
    for ev in events:
        if ev["source"] == "job":
            extra = ev.get("state") or ev.get("text") or ev.get("run_id") or ev.get("actor") or ""
            out(f"{ev['ts'][11:23]} job {ev['type']}: {extra}\n")
        else:
            line = report.event_line(ev)
            if line:
                out(f"{str(ev.get('ts', ''))[11:23]} {line}\n")


@app.command("cancel")
def jobs_cancel(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    project: ProjectOpt = ".",
) -> None:
    """Cancel a job: a queued one at once; a running one stops after its current action."""
    from runner.service.project import terminal_user

    job = _queue(project).cancel(job_id, actor=terminal_user())
    out(f"cancelled {job.id}\n" if job.state == "cancelled"
        else f"asked the worker to stop {job.id} (it stops after the current action)\n")


@app.command("work")
def jobs_work(
    once: Annotated[bool, typer.Option("--once", help="Run the queued jobs there are, then stop.")] = False,
    poll: Annotated[float, typer.Option("--poll", min=0.05, max=60, help="Seconds between looks at the queue.")] = 0.5,
    project: ProjectOpt = ".",
) -> None:
    """Run the project's worker in the foreground until Ctrl-C (one worker per project): it
    resumes jobs a dead worker left, then applies queued jobs, highest priority first."""
    import signal
    import threading

    from runner.service.project import Project
    from runner.service.worker import Worker

    proj = Project.at(project)
    q = _queue(project)
    worker = Worker(proj, q)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        recovered = worker.recover()
        for j in recovered:
            err(f"recovered {j.id}: {j.state}")
        err(f"worker {worker.pid} on {proj.root}: waiting for jobs (Ctrl-C to stop)")
        if once:
            while (job := worker.run_once()) is not None:
                err(f"{job.id}: {job.state}" + (f": {job.error}" if job.error else ""))
        else:
            worker.run(stop, poll)
    except KeyboardInterrupt:
        err("worker stopped")
    finally:
        worker.close()
        signal.signal(signal.SIGTERM, previous)
    raise typer.Exit(EXIT_OK)


def register(parent: typer.Typer) -> None:
    parent.add_typer(app, name="jobs")
