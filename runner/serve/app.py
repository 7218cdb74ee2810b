"""The `opsrun serve` app: create_app() (routes, auth, limits, problems, OpenAPI 3.1), the worker thread, MCP.
Must not import runner.cli; runner.mcp only as runner.mcp.http (optional).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from runner.serve import jobs, openai, problems, routes
from runner.serve.config import ServeConfig, is_loopback
from runner.serve.limits import BodyLimit, RateLimit, TokenBucket
from runner.serve.problems import ApiProblem

log = logging.getLogger("opsrun.serve")

DESCRIPTION = """\
opsrun runs declarative YAML playbooks on servers (SSH), Proxmox VE and Android (ADB).

Nothing changes a target without a person's say-so: **validate** a playbook, **create a plan**
(the exact changes, as markdown and JSON), have it **approved** (a token with the approve role,
bound to the plan's digest), then **create a job** that applies it; follow the job's events.
Read-only calls: inventory, plans, jobs, runs. `/v1` is an OpenAI-compatible face of opsrun's
LLM gateway. Authenticate with `Authorization: Bearer TOKEN`; roles read < plan < approve < apply.
"""


WORKER_RETRY_S = 5.0  # another worker (`opsrun jobs work`) holds the project: serve's takes over after it


class ServeWorker:
    """The project's job worker (runner.service WorkerThread) while serve runs, and the queue
    the job routes use: a 503 problem when the queue is not there."""

    def __init__(self, project: Any) -> None:
        self.project = project
        self.background: Any = None
        self.error = ""

    def start(self) -> None:
        try:
            from runner.service.worker import WorkerThread
        except ImportError as exc:
            self.error = f"the job queue is not available ({exc})"
            log.warning("%s", self.error)
            return
        self.background = WorkerThread(self.project, retry_s=WORKER_RETRY_S)
        self.background.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self.background is not None:
            self.background.stop(timeout)

    def state(self) -> str:
        return "unavailable" if self.background is None else str(self.background.state())

    def jobs(self) -> Any:
        if self.background is None:
            raise ApiProblem(503, self.error or "the job queue is not running")
        return self.background.queue


class Prefix:
    """Hand requests for `prefix` and below to `sub` (scope unchanged), the rest to the app."""

    def __init__(self, app: Any, prefix: str, sub: Any) -> None:
        self.app, self.prefix, self.sub = app, prefix, sub

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = str(scope.get("path", "")) if scope["type"] == "http" else ""
        if path == self.prefix or path.startswith(self.prefix + "/"):
            await self.sub(scope, receive, send)
            return
        await self.app(scope, receive, send)


def open_project(root: str | Path) -> Any:
    from runner.service.project import Project

    return Project.at(root)


def gateway_file(project: Any, cfg: ServeConfig) -> Path:
    from runner.gateway.config import packaged_default

    if cfg.gateway:
        return Path(cfg.gateway)
    local = Path(project.root) / "gateway.yaml"
    return local if local.is_file() else packaged_default()


def _mcp(project: Any, cfg: ServeConfig, host: str) -> Any:
    try:
        from runner.mcp.http import asgi_app
    except ImportError:
        return None

    def auth(token: str) -> tuple[str, str] | None:
        who = cfg.principal(token or None)
        return (who.name, who.role) if who is not None else None

    return asgi_app(project, auth, allowed_hosts=None if is_loopback(host) else ["*"])


def create_app(project_root: str | Path, cfg: ServeConfig | None = None, *, host: str = "127.0.0.1",
               worker: bool = True, mount_mcp: bool = True) -> FastAPI:
    """The app for the project at `project_root`, bound (for the checks) to `host`."""
    from runner import __version__

    cfg = (cfg or ServeConfig()).for_bind(host)
    project = open_project(project_root)
    runner_ = ServeWorker(project)
    mcp_app = _mcp(project, cfg, host) if mount_mcp else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if worker:
            runner_.start()
        async with contextlib.AsyncExitStack() as stack:
            if mcp_app is not None and hasattr(mcp_app, "lifespan"):
                await stack.enter_async_context(mcp_app.lifespan())
            try:
                yield
            finally:
                runner_.stop()

    app = FastAPI(title="opsrun", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  openapi_tags=[
                      {"name": "playbooks", "description": "Check playbooks before planning them."},
                      {"name": "plans", "description": "Plans (exact previews), and approving them."},
                      {"name": "jobs", "description": "Applying approved plans, and following them."},
                      {"name": "runs", "description": "What past applies did."},
                      {"name": "inventory", "description": "Hosts and groups."},
                      {"name": "openai", "description": "The LLM gateway, OpenAI-compatible."},
                      {"name": "server", "description": "The server itself."},
                  ])
    app.state.project = project
    app.state.serve_config = cfg
    app.state.worker_state = runner_.state
    app.state.queue = runner_.jobs
    app.state.mcp = mcp_app is not None
    app.state.face = openai.Face(gateway_file(project, cfg), Path(project.state),
                                 cfg.limits.llm_requests_per_minute, cfg.limits.llm_burst)
    problems.install(app)
    app.include_router(routes.router)
    app.include_router(jobs.router)
    app.include_router(openai.router)
    if mcp_app is not None:  # /mcp itself (a Mount would redirect it to /mcp/), inside the limits
        app.add_middleware(Prefix, prefix="/mcp", sub=mcp_app)
    limits = cfg.limits
    app.add_middleware(RateLimit, bucket=TokenBucket(limits.requests_per_minute, limits.burst))
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    if cfg.cors_origins:  # outermost, so a 413 or 429 reaches the browser too: Open WebUI user tool servers
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cfg.cors_origins), allow_credentials=False,
                           allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type",
                                                                        "Last-Event-ID"])

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _problem_media(get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes,
                tags=app.openapi_tags))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _problem_media(doc: dict[str, Any]) -> dict[str, Any]:
    """Error responses are application/problem+json (but on the OpenAI face, which keeps
    OpenAI's JSON errors); the markdown route answers text/markdown only."""
    problem = {problems.PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path, item in doc.get("paths", {}).items():
        if path.startswith("/v1/"):
            continue
        for op in item.values():
            for code, resp in (op.get("responses") or {}).items():
                if code[:1] in ("4", "5") and resp.get("content"):
                    resp["content"] = dict(problem)
                elif "text/markdown" in (resp.get("content") or {}):
                    resp["content"].pop("text/plain", None)
    return doc
