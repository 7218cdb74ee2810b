"""The audit log, state/audit.jsonl: who planned, approved, submitted, cancelled and applied what
(append-only, one fsynced JSON line each, 0600, secrets redacted). Imports journal helpers only.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from typing import TYPE_CHECKING, Any

from runner.files import open_private
from runner.journal import now_iso, read_events
from runner.secrets import redact_data

if TYPE_CHECKING:
    from runner.service.project import Project

# the fields whose value is never written whatever it holds (a token, a password given as a var)
_HIDDEN = ("token", "password", "secret", "authorization", "api_key")


def _masked(fields: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in fields.items():
        out[key] = "***" if any(h in key.lower() for h in _HIDDEN) and value not in (None, "") else value
    return redact_data(out)


def record(project: Project, actor: str, action: str, **fields: Any) -> None:
    """Append one audit record: {ts, actor, action, pid, machine, **fields}, secrets masked."""
    entry = {"ts": now_iso(), "actor": actor, "action": action, **_masked(fields),
             "pid": os.getpid(), "machine": socket.gethostname()}
    line = (json.dumps(redact_data(entry), ensure_ascii=False, default=str) + "\n").encode()
    project.private()
    fd = open_private(project.state / "audit.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # one whole line per writer, even across processes
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read(project: Project, limit: int = 200) -> list[dict[str, Any]]:
    """The last `limit` audit records, oldest first (a torn last line is skipped)."""
    events = read_events(project.state / "audit.jsonl")
    return events[-limit:] if limit > 0 else events
