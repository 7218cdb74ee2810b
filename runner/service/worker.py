"""The worker: one per project (state/worker.lock), it runs queued jobs through the apply use case
(the approved plan file, strict drift check; a retried or recovered job resumes its run's journal),
headless: no terminal, no prompt. Imports apply, never cli.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

from runner.errors import DriftError, InvalidInput, LockError, OpsrunError
from runner.files import open_private
from runner.secrets import redact
from runner.service import audit
from runner.service.approvals import approval_of
from runner.service.jobs import Job, JobQueue
from runner.service.plans import get_plan
from runner.service.project import Project

log = logging.getLogger("opsrun.serve")  # what serve shows of its worker
RETRY_DELAY_S = 0.5  # a job whose run cannot start yet (lock held, last step still running)
NOT_RETRIED = (DriftError, InvalidInput)  # the plan or its approval no longer holds: retrying cannot help


class _View:
    """The headless run view: events are in the journal already; no human to ask."""

    human: Any = None

    def __init__(self, on_event: Any) -> None:
        self._on_event = on_event

    def __enter__(self) -> _View:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def event(self, ev: dict[str, Any]) -> None:
        self._on_event(ev)


class HeadlessUI:
    """runner.apply.usecase.ApplyUI for a job: notes go to the job's events, the run id to its row."""

    def __init__(self, queue: JobQueue, job: Job) -> None:
        self.queue = queue
        self.job = job
        self.run_id: str | None = None

    def note(self, text: str) -> None:
        self.queue.event(self.job.id, "note", text=text.strip())

    def stale_lock(self, note: str) -> None:
        self.queue.event(self.job.id, "note", text=note)

    def planned(self, plan: Any) -> None:
        return None

    def confirm(self, plan: Any) -> None:
        return None  # the job applies an approved plan file: apply asks nothing for one

    def starting(self, run_id: str, resuming: bool) -> None:
        self.run_id = run_id
        self.queue.set_run(self.job.id, run_id)

    def running(self, plan: Any) -> AbstractContextManager[_View]:
        return _View(lambda ev: None)


class Worker:
    """Runs the project's queued jobs, one at a time, highest priority first."""

    def __init__(self, project: Project, queue: JobQueue, *, lock_wait_s: float = 2.0) -> None:
        self.project = project
        # how long to wait for the worker lock: a worker killed a moment ago may leave it held
        # for a few milliseconds by a child between fork and exec
        self.lock_wait_s = lock_wait_s
        self.queue = queue
        self.pid = os.getpid()
        self.machine = socket.gethostname()
        self._lock_fd: int | None = None
        self.current: Job | None = None

    # ------------------------------------------------------------ the worker lock

    def _hold(self) -> None:
        """Take state/worker.lock for this worker's life (the OS drops it when the process dies)."""
        if self._lock_fd is not None:
            return
        self.project.private()
        fd = open_private(self.project.state / "worker.lock", os.O_RDWR | os.O_CREAT)
        deadline = time.monotonic() + self.lock_wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                os.close(fd)
                raise LockError(f"another worker runs the jobs of {self.project.root}",
                                hint="one worker per project: stop the other one (or let it work)") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{self.pid}@{self.machine}\n".encode())
        self._lock_fd = fd

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ------------------------------------------------------------ recovery and the loop

    def recover(self) -> list[Job]:
        """Jobs a dead worker left running (or a stopped one left interrupted) go back to the
        queue; their next attempt resumes the run from its journal, so no finished step runs again."""
        self._hold()
        out = []
        for job in self.queue.orphans():
            if self.current is not None and job.id == self.current.id:
                continue  # this worker's own job, running now
            if job.cancel_by:
                out.append(self.queue.finish(job.id, "cancelled", f"cancelled by {job.cancel_by}"))
                continue
            why = (f"recovered: its worker (pid {job.owner_pid}) is gone" if job.state == "running"
                   else "recovered: its worker stopped before the run ended")
            out.append(self.queue.requeue(job.id, why=why, count=False))
            audit.record(self.project, "worker", "recover", job_id=job.id, plan_id=job.plan_id, digest=job.digest,
                         run_id=job.run_id, was=job.state)
        return out

    def run(self, stop: threading.Event, poll_s: float = 0.2) -> None:
        """Work until `stop` is set: recover, then take and run jobs one by one. Setting `stop`
        while a job runs stops its run as Ctrl-C does; the job is left interrupted (resumed later)."""
        self._hold()
        try:
            self.recover()
            while not stop.is_set():
                job = self.queue.claim(self.pid, self.machine)
                if job is None:
                    stop.wait(poll_s)
                    continue
                self.run_job(job, stop)
        finally:
            self.close()

    def run_once(self) -> Job | None:
        """Run the next queued job, if any (tests, `jobs work --once`)."""
        self._hold()
        job = self.queue.claim(self.pid, self.machine)
        return None if job is None else self.run_job(job, threading.Event())

    # ------------------------------------------------------------ one job

    def run_job(self, job: Job, shutdown: threading.Event) -> Job:
        """One attempt of `job` (claimed: running). Returns the job as it is after it."""
        self.current = job
        halt = threading.Event()
        reason: dict[str, str] = {}
        done = threading.Event()

        def watch() -> None:
            while not done.wait(0.1):
                who = self.queue.cancel_requested(job.id)
                if who:
                    reason.setdefault("why", "cancel")
                    reason.setdefault("by", who)
                    halt.set()
                    return
                if shutdown.is_set():
                    reason.setdefault("why", "shutdown")
                    halt.set()
                    return

        watcher = threading.Thread(target=watch, name=f"watch-{job.id}", daemon=True)
        watcher.start()
        try:
            return self._attempt(job, halt, reason, shutdown)
        finally:
            done.set()
            watcher.join()
            self.current = None

    def _attempt(self, job: Job, halt: threading.Event, reason: dict[str, str], shutdown: threading.Event) -> Job:
        from runner.apply.usecase import ApplyRequest, StillRunning, apply

        q = self.queue
        try:
            plan = get_plan(self.project, job.plan_id)
            approval = approval_of(self.project, job.plan_id)
            if approval is None or approval.digest != job.digest or plan.digest != job.digest:
                raise DriftError(f"plan {job.plan_id} changed since it was approved and submitted "
                                 f"(digest {plan.digest}, approved {approval.digest if approval else 'never'}, "
                                 f"submitted {job.digest})", hint="plan, approve and submit it again")
            inventory = str(plan.meta.get("inventory") or "") or None
            if job.run_id:
                req = ApplyRequest(resume=job.run_id, inventory=inventory, bound_plan=str(plan.plan_file),
                                   interactive=False, state=self.project.state)
            else:
                req = ApplyRequest(target=str(plan.plan_file), inventory=inventory, interactive=False,
                                   state=self.project.state)
            audit.record(self.project, job.actor, "apply_start", job_id=job.id, plan_id=job.plan_id,
                         digest=job.digest, attempt=job.attempts, resume=job.run_id, worker=self.pid)
            ui = HeadlessUI(q, job)
            outcome = apply(req, ui, stop=halt)
        except (StillRunning, LockError) as exc:
            return q.requeue(job.id, why=exc.message, delay_s=RETRY_DELAY_S, count=False)
        except KeyboardInterrupt:  # a second Ctrl-C: the run stopped at once
            shutdown.set()
            return self._ended(q.finish(job.id, "interrupted", "interrupted (Ctrl-C)"))
        except DriftError as exc:  # a job cannot --allow-drift: the way on is a new plan
            return self._ended(q.finish(job.id, "failed", exc.message + "\n  hint: plan it again, approve the new "
                                        "plan and submit that"))
        except NOT_RETRIED as exc:
            return self._ended(q.finish(job.id, "failed", exc.render()))
        except OpsrunError as exc:
            return self._failed(job, exc.render())
        except Exception as exc:  # a bug must not take the worker down with it
            return self._failed(job, f"internal error: {type(exc).__name__}: {exc}")
        needed = outcome.human_needed()
        if needed is not None:
            return self._ended(q.finish(job.id, "human", needed.render()))
        ends = [e for e in outcome.events if e.get("type") == "run_end"]
        if ends and ends[-1].get("outcome") == "interrupted":  # the run saw the stop (cancel, signal, shutdown)
            if reason.get("why") == "cancel":
                return self._ended(q.finish(job.id, "cancelled", f"cancelled by {reason.get('by')}"))
            if reason.get("why") != "shutdown":
                shutdown.set()  # a signal reached apply (Ctrl-C on `jobs work`): the worker stops too
            return self._ended(q.finish(job.id, "interrupted", "the worker stopped; the run resumes when one starts"))
        if outcome.recap.ok:
            return self._ended(q.finish(job.id, "succeeded"))
        return self._failed(job, outcome.recap.aborted or "some steps failed")

    def _failed(self, job: Job, error: str) -> Job:
        now = self.queue.get(job.id)
        if now.cancel_by:
            return self._ended(self.queue.finish(job.id, "cancelled", f"cancelled by {now.cancel_by}"))
        if now.attempts <= now.max_retries:
            self.queue.event(job.id, "retry", attempt=now.attempts, error=error)
            return self.queue.requeue(job.id, why=f"attempt {now.attempts} failed: {error}")
        return self._ended(self.queue.finish(job.id, "failed", error))

    def _ended(self, job: Job) -> Job:
        audit.record(self.project, job.actor, "apply_end", job_id=job.id, plan_id=job.plan_id, digest=job.digest,
                     run_id=job.run_id, state=job.state, error=job.error, attempts=job.attempts)
        return job


class WorkerThread:
    """The project's Worker in a daemon thread of this process (`opsrun serve`, tests): it
    recovers the jobs a dead worker left running, then runs queued jobs until stop(). While
    another worker holds the project it tries again every `retry_s` seconds (state `waiting`;
    None: it stops). What ends it early (a bug, the lock without retry_s) is kept in `error`,
    logged, and state() says `stopped`; the process stays up."""

    def __init__(self, project: Project, poll_s: float = 0.2, retry_s: float | None = None) -> None:
        self.worker = Worker(project, JobQueue(project))
        self.queue = self.worker.queue
        self.poll_s = poll_s
        self.retry_s = retry_s
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.error = ""
        self.waiting = False

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="opsrun-worker", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop_event.is_set():
            try:
                recovered = self.worker.recover()  # takes the project's worker lock first
            except LockError as exc:
                if self.retry_s is None:
                    self._stopped(exc)
                    return
                if not self.waiting:
                    log.warning("job worker waits: %s; trying again every %gs", exc.message, self.retry_s)
                self.waiting, self.error = True, redact(exc.message)
                self.stop_event.wait(self.retry_s)
                continue
            except Exception as exc:  # the process stays up; state() says the worker stopped
                self._stopped(exc)
                return
            self.waiting, self.error = False, ""
            if recovered:
                log.info("recovered %d job(s) left running: %s", len(recovered),
                         ", ".join(f"{j.id} {j.state}" for j in recovered))
            try:
                self.worker.run(self.stop_event, self.poll_s)
            except Exception as exc:
                self._stopped(exc)
            return

    def _stopped(self, exc: BaseException) -> None:
        self.error = redact(f"{type(exc).__name__}: {exc}")
        log.error("job worker stopped: %s", self.error)

    def stop(self, timeout: float | None = None) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout)

    def state(self) -> str:
        if self.thread is None:
            return "unavailable"
        if not self.thread.is_alive():
            return "stopped"
        return "waiting" if self.waiting else "running"


@contextlib.contextmanager
def running_worker(project: Project, poll_s: float = 0.1) -> Iterator[Worker]:
    """A worker in a thread of this process until the block ends (tests); refused at once, in
    the caller's thread, when another worker holds the project."""
    background = WorkerThread(project, poll_s)
    background.worker._hold()
    background.start()
    try:
        yield background.worker
    finally:
        background.stop()
