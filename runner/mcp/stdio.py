"""`opsrun mcp` over stdio: the MCP server of one project on stdin/stdout, the caller being the
terminal user, with a job worker thread beside it so an approved `apply` runs.

Imports runner.mcp.server, runner.service and below; never runner.serve or runner.cli.
"""

from __future__ import annotations

import getpass
import logging
import threading
from typing import Any

from mcp.server.mcpserver import Context

from runner.approval_policy import AutoLimits
from runner.mcp.server import build
from runner.service.project import Project

log = logging.getLogger("opsrun.mcp")


def serve(project: Project, *, worker: bool = True, auto_limits: AutoLimits | None = None) -> None:
    """Serve MCP on stdio until the client closes it. worker: run approved jobs in this process
    (off: another `opsrun jobs work` or `opsrun serve` runs them)."""
    user = _user()

    def caller(ctx: Context[Any, Any]) -> tuple[str, str]:
        return user, "apply"  # approval still comes from a person (or the policy), never from this role

    server = build(project, caller=caller, auto_limits=auto_limits)
    stop = threading.Event()
    thread = _start_worker(project, stop) if worker else None
    try:
        server.run("stdio")
    finally:
        stop.set()
        if thread is not None:
            thread.join(timeout=30)


def _start_worker(project: Project, stop: threading.Event) -> threading.Thread:
    from runner.service.jobs import JobQueue
    from runner.service.worker import Worker

    w = Worker(project, JobQueue(project))
    w.recover()
    thread = threading.Thread(target=w.run, args=(stop,), name="opsrun-mcp-worker", daemon=True)
    thread.start()
    return thread


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "mcp"
