"""A uvicorn on 127.0.0.1:PORT serving runner.mcp.http.asgi_app(PROJECT, auth) alone, with a job
worker thread beside it, for tests/test_mcp_http.py: `python tests/mcp_http_server.py PROJECT PORT`.

Test helper (a process of its own, stopped by its PID); tokens: tok-apply (alice, apply),
tok-read (bob, read), tok-none (carol, no role).
"""

from __future__ import annotations

import sys
import threading

import uvicorn

from runner.mcp.http import asgi_app
from runner.service.jobs import JobQueue
from runner.service.project import Project
from runner.service.worker import Worker

TOKENS = {"tok-apply": ("alice", "apply"), "tok-read": ("bob", "read"), "tok-none": ("carol", "nothing")}


class Tokens:
    """An auth object with an `authenticate` method (asgi_app takes one, or a plain function)."""

    def authenticate(self, token: str) -> tuple[str, str] | None:
        return TOKENS.get(token)


def main() -> None:
    project = Project.at(sys.argv[1])
    port = int(sys.argv[2])
    stop = threading.Event()
    queue = JobQueue(project)
    worker = Worker(project, queue)
    worker.recover()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        uvicorn.run(asgi_app(project, Tokens()), host="127.0.0.1", port=port, log_level="warning")
    finally:
        stop.set()
        thread.join(timeout=10)


if __name__ == "__main__":
    main()
