"""Run records: .opsrun/runs/<run-id>/events.jsonl (append-only, secrets redacted; events
written to the OS as they happen, or with the next one where losing them changes nothing
resume does, so opsrun dying loses no result; fsynced by commit() at each step's end, one
fsync shared by every host ending a step meanwhile: a group commit), the state lock
(owner, pid, expiry; stale locks detected), and reading runs back (a torn last line is tolerated).
Everything under .opsrun/ is private (folders 0700, files 0600, symlinks refused). Talks to no target.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import secrets as _random
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runner.errors import InvalidInput, LockError, OpsrunError
from runner.files import open_private, private_dir, write_private
from runner.secrets import redact_data

LOCK_TTL_S = 6 * 3600
_HEAD_KEYS = frozenset({"seq", "ts", "type"})  # every event's first keys, in this order


def state_dir() -> Path:
    return Path(os.environ.get("OPSRUN_STATE_DIR", ".opsrun"))


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + _random.token_hex(3)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Journal:
    """Append-only event log of one run.

    An event() is written to the OS at once: if opsrun dies (kill -9) the file holds it. A
    defer()red one is written with the next event(), flush() or commit(): apply defers what a
    kill -9 may lose without changing what resume does, and flushes before it sends an action.
    `commit()` makes everything so far survive the machine crashing too (fsync); the executor
    commits at the end of every step on every host, before that host's next step starts, and
    callers that commit while an fsync runs share the next one."""

    def __init__(self, run_id: str, root: Path | None = None) -> None:
        self.run_id = run_id
        base = root or state_dir()
        self.dir = base / "runs" / run_id
        private_dir(self.dir, base)
        self.path = self.dir / "events.jsonl"
        self._lock = threading.Lock()  # one writer at a time
        self._fd = open_private(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        self._seq = 0
        self._pending: list[str] = []  # deferred lines, in number order, not yet written
        self._sync = threading.Condition()  # commit(): who waits for which fsync
        self._synced = 0  # every event up to this seq is on disk
        self._syncing = False
        self.fsyncs = 0

    def event(self, type_: str, **fields: Any) -> dict[str, Any]:
        """Write an event (flushed to the OS: it survives opsrun dying); commit() for a crash.

        The fields are masked and turned into JSON before the lock is taken; under it the
        event gets its number and time and goes to the file in one write(2) (O_APPEND), so
        the file's order is the numbers' order and hosts wait for each other only that long."""
        return self._add(type_, fields, now=True)

    def defer(self, type_: str, **fields: Any) -> dict[str, Any]:
        """An event that may wait in memory until the next event(), flush() or commit(),
        all of which write it first (the file's order stays the numbers' order): for records
        whose loss in a kill -9 changes nothing resume does (a step starting, its attempts
        and end before the `register` that makes it done, a step that sent nothing)."""
        return self._add(type_, fields, now=False)

    def flush(self) -> None:
        """Write the deferred events (to the OS, not fsynced): before an action is sent."""
        with self._lock:
            if self._pending:
                self._write("")

    def _add(self, type_: str, fields: dict[str, Any], now: bool) -> dict[str, Any]:
        masked = redact_data(fields)  # non-plain values (an exception, a Path) become masked text
        if _HEAD_KEYS.isdisjoint(masked):
            body = json.dumps(masked, ensure_ascii=False)
            rest = ", " + body[1:] if len(body) > 2 else "}"
            kind = json.dumps(type_, ensure_ascii=False)
            with self._lock:
                self._seq += 1
                seq, ts = self._seq, now_iso()
                (self._write if now else self._later)(f'{{"seq": {seq}, "ts": "{ts}", "type": {kind}{rest}\n')
            return {"seq": seq, "ts": ts, "type": type_, **masked}
        with self._lock:  # a field named like a head key: the head's own value wins
            self._seq += 1
            record = {"seq": self._seq, "ts": now_iso(), "type": type_}
            record.update((k, v) for k, v in masked.items() if k not in _HEAD_KEYS)
            (self._write if now else self._later)(json.dumps(record, ensure_ascii=False) + "\n")
            return record

    def _later(self, line: str) -> None:
        if self._fd < 0:
            raise ValueError(f"the journal of run {self.run_id} is closed")
        self._pending.append(line)

    def _write(self, line: str) -> None:
        """The deferred lines, then `line`, in one write(2). Called with the lock held."""
        if self._fd < 0:
            raise ValueError(f"the journal of run {self.run_id} is closed")
        text = "".join([*self._pending, line]) if self._pending else line
        data = memoryview(text.encode("utf-8", "backslashreplace"))
        while data:  # a regular file takes it whole; a signal or a full disk may cut it short
            data = data[os.write(self._fd, data):]
        self._pending.clear()  # only once written: a failed write leaves them for the next one

    note = event  # an event no commit waits for on its own (a process started): the same write

    def commit(self) -> None:
        """Return once every event written so far is on disk. One fsync covers all the events
        written before it starts, so threads committing meanwhile wait for it (or the next)
        instead of each paying their own: a group commit."""
        with self._lock:
            wanted = self._seq
            if self._pending and self._fd >= 0:
                self._write("")
        with self._sync:
            while self._synced < wanted:
                if self._syncing:
                    self._sync.wait()
                    continue
                self._syncing = True
                with self._lock:
                    upto = self._seq
                    fd = self._fd
                self._sync.release()
                try:
                    if fd >= 0:
                        self._fsync(fd)
                finally:
                    self._sync.acquire()
                    self._syncing = False
                    self._sync.notify_all()
                self._synced = max(self._synced, upto)

    def _fsync(self, fd: int) -> None:
        os.fsync(fd)
        self.fsyncs += 1

    def write_artifact(self, name: str, data: bytes | str) -> Path:
        path = self.dir / name
        private_dir(path.parent, self.dir)
        write_private(path, data.encode() if isinstance(data, str) else data)
        return path

    def close(self) -> None:
        """Commit what was written, then close (safe twice)."""
        if self._fd >= 0:
            self.commit()
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


# ---------------------------------------------------------------- reading runs


def _no_link(path: Path) -> Path:
    if path.is_symlink():
        raise OpsrunError(
            f"{path} is a symbolic link: opsrun reads and keeps its state only in real folders",
            hint=f"remove the link ({path}) or point OPSRUN_STATE_DIR at a real folder",
        )
    return path


def read_events(path: Path) -> list[dict[str, Any]]:
    """All events of a run; a torn (partial) last line from a crash, or a line that is not
    a JSON object, is skipped."""
    out: list[dict[str, Any]] = []
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return out
    except OSError:
        _no_link(path)
        raise
    with os.fdopen(fd, encoding="utf-8", errors="replace") as fh:
        text = fh.read()
    for line in text.split("\n"):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            continue  # a torn tail from a crash, or one damaged line: never lose the rest
        if isinstance(record, dict):
            out.append(record)
    return out


@dataclass
class RunInfo:
    run_id: str
    dir: Path
    events: list[dict[str, Any]]

    @property
    def start(self) -> dict[str, Any]:
        return next((e for e in self.events if e.get("type") == "run_start"), {})

    @property
    def end(self) -> dict[str, Any] | None:
        """The last run_end (an apply) or do_end (an `opsrun do` run) event."""
        return next((e for e in reversed(self.events) if e.get("type") in ("run_end", "do_end")), None)

    @property
    def do_start(self) -> dict[str, Any]:
        """The do_start event of an `opsrun do` run ({} for an apply run)."""
        return next((e for e in self.events if e.get("type") == "do_start"), {})

    @property
    def head(self) -> dict[str, Any]:
        """What lists show of a run's start: run_start, or do_start with `do: REQUEST` as playbook."""
        if self.start or not self.do_start:
            return self.start
        first = str(self.do_start.get("request", "")).strip().splitlines() or [""]
        return {**self.do_start, "playbook": f"do: {first[0]}"}

    @property
    def outcome(self) -> str:
        end = self.end
        if end is None:
            return "incomplete"
        return str(end.get("outcome", "?"))


def _runs_dir(root: Path | None) -> Path:
    state = root or state_dir()
    _no_link(state)
    return _no_link(state / "runs")


def list_runs(root: Path | None = None) -> list[RunInfo]:
    base = _runs_dir(root)
    if not base.is_dir():
        return []
    runs = []
    for d in sorted(base.iterdir()):
        if d.is_dir() and not d.is_symlink():
            runs.append(RunInfo(d.name, d, read_events(d / "events.jsonl")))
    return runs


def get_run(run_id: str, root: Path | None = None) -> RunInfo:
    base = _runs_dir(root)
    d = base / run_id
    if not d.is_dir():
        matches = sorted(p for p in base.glob(f"{run_id}*") if p.is_dir()) if base.is_dir() else []
        if len(matches) == 1:
            d = matches[0]
        elif run_id == "last" and base.is_dir() and any(base.iterdir()):
            d = sorted(p for p in base.iterdir() if p.is_dir())[-1]
        else:
            known = ", ".join(r.run_id for r in list_runs(root)[-5:]) or "none yet"
            raise InvalidInput(f"no run '{run_id}' in {base}", hint=f"recent runs: {known}")
    _no_link(d)
    return RunInfo(d.name, d, read_events(d / "events.jsonl"))


def unfinished_processes(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The `process` notes of steps that started and never ended (the run stopped while
    they ran), each with the step's `instance` added: what resume must not run beside."""
    current: dict[str, str] = {}  # host -> instance of the step it is in
    procs: list[dict[str, Any]] = []
    ended: set[tuple[str, str]] = set()
    for e in events:
        t, host = e.get("type"), str(e.get("host", ""))
        if t == "step_start":
            current[host] = str(e.get("instance") or e.get("step") or "")
            ended.discard((host, current[host]))
        elif t == "step_end":
            ended.add((host, str(e.get("instance") or e.get("step") or "")))
        elif t == "process":
            procs.append({**e, "instance": current.get(host, "")})
    return [p for p in procs if (str(p.get("host", "")), p["instance"]) not in ended]


# ---------------------------------------------------------------- lock


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StateLock:
    """One apply at a time per state folder. A lock whose process is gone (same machine)
    or whose expiry passed is stale and taken over, with a note."""

    def __init__(self, run_id: str, root: Path | None = None, ttl: float = LOCK_TTL_S) -> None:
        self.root = root or state_dir()
        self.path = self.root / "lock"
        self.run_id = run_id
        self.ttl = ttl
        self.stale_note = ""

    def acquire(self) -> StateLock:
        private_dir(self.root)
        info = {
            "owner": f"{getpass.getuser()}@{socket.gethostname()}",
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "run_id": self.run_id,
            "started": time.time(),
            "expires": time.time() + self.ttl,
        }
        # Every taker holds this guard while it reads, judges and replaces the lock: without
        # it two takers could both replace one stale lock, or read a lock still being written.
        with os.fdopen(open_private(self.root / "lock.guard", os.O_WRONLY | os.O_CREAT), "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            return self._acquire(info)

    def _acquire(self, info: dict[str, Any]) -> StateLock:
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
            except FileExistsError:
                held = self._read()
                if held is not None and not self._stale(held):
                    raise LockError(
                        f"another apply holds the lock: run {held.get('run_id')} by "
                        f"{held.get('owner')} (pid {held.get('pid')}) since "
                        f"{datetime.fromtimestamp(float(held.get('started', 0)), UTC):%Y-%m-%d %H:%M:%SZ}",
                        hint=f"wait for it to finish; if it is dead, remove {self.path}",
                    ) from None
                self.stale_note = (
                    f"took over a stale lock from run {held.get('run_id')} (pid {held.get('pid')})"
                    if held
                    else "replaced an unreadable lock"
                )
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(info, fh)
                fh.flush()
                os.fsync(fh.fileno())
            return self
        raise LockError(f"could not take the lock {self.path}")

    def _read(self) -> dict[str, Any] | None:
        try:
            with os.fdopen(os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)) as fh:
                data = json.loads(fh.read())
            return data if isinstance(data, dict) else None
        except (OSError, ValueError):
            return None  # a symlink in the lock's place reads as unreadable: replaced, not followed

    @staticmethod
    def _stale(held: dict[str, Any]) -> bool:
        try:
            expires, pid = float(held.get("expires", 0)), int(held.get("pid", 0))
        except (TypeError, ValueError):
            return True  # a lock we cannot make sense of
        if expires < time.time():
            return True
        if held.get("host") == socket.gethostname():
            return pid <= 0 or not _pid_alive(pid)  # kill(0 or -1, 0) would signal a group
        return False

    def release(self) -> None:
        held = self._read()
        if held is not None and held.get("pid") == os.getpid() and held.get("run_id") == self.run_id:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> StateLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
