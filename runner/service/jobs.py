"""The durable job queue, state/jobs.sqlite (WAL, 0600): approved plans submitted as jobs with a
priority and a retry policy, cancelled, listed, and their events. Imports no cli; runs nothing (worker.py does).
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import secrets as _random
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from runner.errors import InvalidInput, OpsrunError
from runner.files import open_private
from runner.journal import get_run, now_iso
from runner.secrets import redact, redact_data
from runner.service import audit
from runner.service.approvals import approval_of
from runner.service.plans import get_plan
from runner.service.project import Project

STATES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted", "human")
FINAL = frozenset({"succeeded", "failed", "cancelled", "human"})
MAX_RETRIES = 10

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    plan_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    state TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_retries INTEGER NOT NULL DEFAULT 0,
    run_id TEXT,
    created TEXT NOT NULL,
    started TEXT,
    ended TEXT,
    actor TEXT NOT NULL,
    error TEXT,
    owner_pid INTEGER,
    owner_host TEXT,
    cancel_by TEXT,
    not_before REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_pick ON jobs (state, priority DESC, seq);
CREATE TABLE IF NOT EXISTS job_events (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    ts TEXT NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS job_events_job ON job_events (job_id, n);
"""


@dataclass
class Job:
    """One submitted plan and where it stands."""

    id: str
    plan_id: str
    state: str
    priority: int
    attempts: int
    max_retries: int
    run_id: str | None
    created: str
    started: str | None
    ended: str | None
    actor: str
    error: str | None
    digest: str = ""
    cancel_by: str | None = None
    owner_pid: int | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("owner_pid")
        return out

    @property
    def final(self) -> bool:
        return self.state in FINAL


def _job(row: sqlite3.Row) -> Job:
    return Job(row["id"], row["plan_id"], row["state"], row["priority"], row["attempts"], row["max_retries"],
               row["run_id"], row["created"], row["started"], row["ended"], row["actor"], row["error"],
               row["digest"], row["cancel_by"], row["owner_pid"])


def new_job_id() -> str:
    return "job-" + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + _random.token_hex(3)


class JobQueue:
    """The project's jobs. Every call opens its own short connection: safe from any thread or process."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.path = project.state / "jobs.sqlite"
        project.private()
        os.close(open_private(self.path, os.O_RDWR | os.O_CREAT))  # 0600 before sqlite opens it (its
        # -wal and -shm files take the database file's mode)
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _db(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA busy_timeout=30000")
            db.execute("PRAGMA synchronous=FULL")
            if write:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            else:
                yield db
        finally:
            db.close()

    # ------------------------------------------------------------ the faces' side

    def submit(self, plan_id: str, *, actor: str, priority: int = 0, retries: int = 0) -> Job:
        """Queue the plan for the worker; refused unless an approval bound to the plan's digest exists."""
        plan = get_plan(self.project, plan_id)
        if not -1000 <= int(priority) <= 1000:
            raise InvalidInput(f"priority {priority} is out of range", hint="give -1000 .. 1000 (higher runs first)")
        if not 0 <= int(retries) <= MAX_RETRIES:
            raise InvalidInput(f"retries {retries} is out of range", hint=f"give 0 .. {MAX_RETRIES}")
        approval = approval_of(self.project, plan_id)
        if approval is None:
            audit.record(self.project, actor, "submit_refused", plan_id=plan_id, digest=plan.digest,
                         reason="no approval bound to the plan's digest")
            raise InvalidInput(
                f"plan {plan_id} is not approved (no approval bound to its digest {plan.digest})",
                hint=f"a person approves it first: opsrun approve {plan_id} --digest {plan.digest}",
            )
        job = Job(new_job_id(), plan_id, "queued", int(priority), 0, int(retries), None, now_iso(), None, None,
                  actor, None, plan.digest)
        with self._db(write=True) as db:
            db.execute(
                "INSERT INTO jobs (id, plan_id, digest, state, priority, attempts, max_retries, created, actor)"
                " VALUES (?, ?, ?, 'queued', ?, 0, ?, ?, ?)",
                (job.id, plan_id, plan.digest, job.priority, job.max_retries, job.created, actor),
            )
            self._event(db, job.id, "job", state="queued", actor=actor, priority=job.priority)
        audit.record(self.project, actor, "submit", plan_id=plan_id, digest=plan.digest, job_id=job.id,
                     priority=job.priority, retries=job.max_retries, approved_by=approval.approver)
        return job

    def get(self, job_id: str) -> Job:
        with self._db() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise InvalidInput(f"no job '{job_id}'", hint="list them with: opsrun jobs list")
        return _job(row)

    def list(self, state: str | None = None, limit: int = 50) -> list[Job]:
        """Newest first; `state`: only jobs in it."""
        if state is not None and state not in STATES:
            raise InvalidInput(f"unknown job state {state!r}", hint="one of " + ", ".join(STATES))
        with self._db() as db:
            if state:
                rows = db.execute("SELECT * FROM jobs WHERE state = ? ORDER BY seq DESC LIMIT ?", (state, limit))
            else:
                rows = db.execute("SELECT * FROM jobs ORDER BY seq DESC LIMIT ?", (limit,))
            return [_job(r) for r in rows.fetchall()]

    def cancel(self, job_id: str, *, actor: str) -> Job:
        """A queued (or interrupted) job is cancelled at once; a running one is asked to stop: its
        worker stops the run as Ctrl-C does (after the current action) and records it cancelled."""
        with self._db(write=True) as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise InvalidInput(f"no job '{job_id}'", hint="list them with: opsrun jobs list")
            job = _job(row)
            if job.final:
                raise InvalidInput(f"job {job_id} already ended ({job.state}): nothing to cancel")
            if job.state in ("queued", "interrupted"):
                db.execute("UPDATE jobs SET state = 'cancelled', ended = ?, cancel_by = ?, error = ? WHERE id = ?",
                           (now_iso(), actor, f"cancelled by {actor}", job_id))
                self._event(db, job_id, "job", state="cancelled", actor=actor)
            else:
                db.execute("UPDATE jobs SET cancel_by = ? WHERE id = ?", (actor, job_id))
                self._event(db, job_id, "cancel_requested", actor=actor)
        audit.record(self.project, actor, "cancel", job_id=job_id, plan_id=job.plan_id, digest=job.digest,
                     was=job.state)
        return self.get(job_id)

    def events(self, job_id: str, after: int = 0) -> builtins.list[dict[str, Any]]:
        """The job's state changes and its run's journal events, in order, numbered from 1
        (`seq`); those after `after` (the last seq a client saw)."""
        job = self.get(job_id)
        with self._db() as db:
            rows = db.execute("SELECT ts, type, data FROM job_events WHERE job_id = ? ORDER BY n",
                              (job_id,)).fetchall()
        merged: builtins.list[tuple[str, int, dict[str, Any]]] = []
        for r in rows:
            data = json.loads(r["data"])
            rank = 2 if data.get("state") in FINAL or data.get("state") == "interrupted" else 0
            merged.append((r["ts"], rank, {"source": "job", "type": r["type"], "ts": r["ts"], **data}))
        if job.run_id:
            try:
                run_events = get_run(job.run_id, self.project.state).events
            except OpsrunError:
                run_events = []
            for e in run_events:
                body = {k: v for k, v in e.items() if k != "seq"}
                merged.append((str(e.get("ts", "")), 1, {"source": "run", "run_id": job.run_id,
                                                         "run_seq": e.get("seq"), **body}))
        merged.sort(key=lambda t: (t[0], t[1]))
        out = [{"seq": i, **ev} for i, (_, _, ev) in enumerate(merged, 1)]
        return redact_data(out[max(after, 0):])

    # ------------------------------------------------------------ the worker's side

    @staticmethod
    def _event(db: sqlite3.Connection, job_id: str, type_: str, **data: Any) -> None:
        db.execute("INSERT INTO job_events (job_id, ts, type, data) VALUES (?, ?, ?, ?)",
                   (job_id, now_iso(), type_, json.dumps(redact_data(data), default=str)))

    def event(self, job_id: str, type_: str, **data: Any) -> None:
        with self._db(write=True) as db:
            self._event(db, job_id, type_, **data)

    def claim(self, owner_pid: int, owner_host: str) -> Job | None:
        """Take the next queued job (highest priority, then the oldest) and mark it running."""
        with self._db(write=True) as db:
            row = db.execute(
                "SELECT * FROM jobs WHERE state = 'queued' AND not_before <= ? ORDER BY priority DESC, seq LIMIT 1",
                (time.time(),),
            ).fetchone()
            if row is None:
                return None
            job = _job(row)
            started = job.started or now_iso()
            db.execute(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, started = ?, owner_pid = ?, "
                "owner_host = ? WHERE id = ?", (started, owner_pid, owner_host, job.id))
            self._event(db, job.id, "job", state="running", attempt=job.attempts + 1, pid=owner_pid,
                        resume=job.run_id)
        return self.get(job.id)

    def set_run(self, job_id: str, run_id: str) -> None:
        with self._db(write=True) as db:
            db.execute("UPDATE jobs SET run_id = ? WHERE id = ?", (run_id, job_id))
            self._event(db, job_id, "run", run_id=run_id)

    def cancel_requested(self, job_id: str) -> str | None:
        with self._db() as db:
            row = db.execute("SELECT cancel_by FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else row["cancel_by"]

    def finish(self, job_id: str, state: str, error: str | None = None) -> Job:
        """The attempt ended in `state` (a final state, or interrupted)."""
        with self._db(write=True) as db:
            db.execute("UPDATE jobs SET state = ?, ended = ?, error = ?, owner_pid = NULL WHERE id = ?",
                       (state, now_iso(), redact(error) if error else None, job_id))
            self._event(db, job_id, "job", state=state, error=redact(error) if error else None)
        return self.get(job_id)

    def requeue(self, job_id: str, *, why: str, delay_s: float = 0.0, count: bool = True) -> Job:
        """Put the job back in the queue; its next attempt resumes its run. count=False: this
        attempt did not start the run (the lock was held, the last step still runs) and is not counted."""
        with self._db(write=True) as db:
            db.execute(
                "UPDATE jobs SET state = 'queued', owner_pid = NULL, not_before = ?, error = ?, "
                "attempts = attempts - ? WHERE id = ?",
                (time.time() + delay_s, redact(why), 0 if count else 1, job_id))
            self._event(db, job_id, "job", state="queued", why=redact(why))
        return self.get(job_id)

    def orphans(self) -> builtins.list[Job]:
        """Jobs left running or interrupted by a worker that is gone (the caller holds the worker lock)."""
        with self._db() as db:
            rows = db.execute("SELECT * FROM jobs WHERE state IN ('running', 'interrupted') ORDER BY seq").fetchall()
        return [_job(r) for r in rows]
