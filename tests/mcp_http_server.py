"""A uvicorn on 127.0.0.1:PORT serving runner.mcp.http.asgi_app(PROJECT, auth) alone, with a job
worker thread beside it, for tests/test_mcp_http.py: `python tests/mcp_http_server.py PROJECT PORT
[--mounted]` (--mounted: inside a Starlette app at /mcp, as opsrun serve mounts it).

Test helper (a process of its own, stopped by its PID); tokens: tok-apply (alice, apply),
tok-read (bob, read), tok-none (carol, no role).
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from runner.mcp.http import McpHttpApp, asgi_app
from runner.service.jobs import JobQueue
from runner.service.project import Project
from runner.service.worker import Worker

TOKENS = {"tok-apply": ("alice", "apply"), "tok-read": ("bob", "read"), "tok-none": ("carol", "nothing")}


class Tokens:
    """An auth object with an `authenticate` method (asgi_app takes one, or a plain function)."""

    def authenticate(self, token: str) -> tuple[str, str] | None:
        return TOKENS.get(token)


def mounted(app: McpHttpApp) -> Starlette:
    """The app inside another one: a mounted app's lifespan is the host's to run."""

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with app.lifespan():
            yield

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/health", health), Mount("/mcp", app=app)], lifespan=lifespan)


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
        app = asgi_app(project, Tokens())
        uvicorn.run(mounted(app) if "--mounted" in sys.argv else app, host="127.0.0.1", port=port,
                    log_level="warning")
    finally:
        stop.set()
        thread.join(timeout=10)


if __name__ == "__main__":
    main()
