"""Run records: .opsrun/runs/<run-id>/events.jsonl (append-only, flushed and fsynced per
event, secrets redacted), the state lock (owner, pid, expiry; stale locks detected), and
reading runs back (a torn last line is tolerated). Talks to no target.
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

from runner.errors import InvalidInput, LockError
from runner.secrets import redact_data

LOCK_TTL_S = 6 * 3600


def state_dir() -> Path:
    return Path(os.environ.get("OPSRUN_STATE_DIR", ".opsrun"))


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + _random.token_hex(3)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Journal:
    """Append-only event log of one run."""

    def __init__(self, run_id: str, root: Path | None = None) -> None:
        self.run_id = run_id
        self.dir = (root or state_dir()) / "runs" / run_id
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "events.jsonl"
        self._lock = threading.Lock()
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept for the run
        self._seq = 0

    def event(self, type_: str, **fields: Any) -> dict[str, Any]:
        masked = redact_data(fields)  # non-plain values (an exception, a Path) become masked text
        with self._lock:
            self._seq += 1
            record = {"seq": self._seq, "ts": now_iso(), "type": type_, **masked}
            self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())
            return record

    def write_artifact(self, name: str, data: bytes | str) -> Path:
        path = self.dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = "wb" if isinstance(data, bytes) else "w"
        with open(path, mode) as fh:
            fh.write(data)
        return path

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.close()


# ---------------------------------------------------------------- reading runs


def read_events(path: Path) -> list[dict[str, Any]]:
    """All events of a run; a torn (partial) last line from a crash is skipped."""
    out: list[dict[str, Any]] = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return out
    for line in text.split("\n"):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn tail from a crash, or one damaged line: never lose the rest
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
        return next((e for e in reversed(self.events) if e.get("type") == "run_end"), None)

    @property
    def outcome(self) -> str:
        end = self.end
        if end is None:
            return "incomplete"
        return str(end.get("outcome", "?"))


def list_runs(root: Path | None = None) -> list[RunInfo]:
    base = (root or state_dir()) / "runs"
    if not base.is_dir():
        return []
    runs = []
    for d in sorted(base.iterdir()):
        if d.is_dir():
            runs.append(RunInfo(d.name, d, read_events(d / "events.jsonl")))
    return runs


def get_run(run_id: str, root: Path | None = None) -> RunInfo:
    base = (root or state_dir()) / "runs"
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
    return RunInfo(d.name, d, read_events(d / "events.jsonl"))


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
        self.root.mkdir(parents=True, exist_ok=True)
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
        with open(self.root / "lock.guard", "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            return self._acquire(info)

    def _acquire(self, info: dict[str, Any]) -> StateLock:
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
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
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else None
        except (OSError, ValueError):
            return None

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
