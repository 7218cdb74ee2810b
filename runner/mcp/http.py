"""MCP over streamable HTTP: `asgi_app(project, auth)`, the ASGI app `opsrun serve` mounts at
/mcp (or uvicorn serves alone), bearer tokens checked by the `TokenAuth` the caller hands in.

Imports runner.mcp.server, runner.service and below; never runner.serve (it imports us).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import Receive, Scope, Send

from runner.approval_policy import AutoLimits
from runner.mcp.server import CALLER_KEY, OpsrunMCP, build, grants
from runner.service.project import Project

LOOPBACK_HOSTS = ("127.0.0.1:*", "localhost:*", "[::1]:*", "127.0.0.1", "localhost", "[::1]")
ANONYMOUS = ("anonymous", "apply")  # auth=None: no token asked (tests, a loopback you trust)


@runtime_checkable
class TokenAuth(Protocol):
    """What maps a bearer token to who holds it: `auth(token) -> (name, role)`, or None when the
    token is unknown (answered 401). Only with asgi_app(anonymous=True) is it called for a
    request without a token, with token "": it may answer an anonymous (name, role) to let
    such requests in, or None to refuse them. The role is read, plan, approve or apply, each implying the ones
    before it (runner.mcp.server.ROLE_GRANTS says what each tool needs). A plain function fits;
    so does an object with this `__call__`, or one with an `authenticate(token)` method of the
    same meaning (asgi_app accepts both). An auth that raises counts as None."""

    def __call__(self, token: str) -> tuple[str, str] | None: ...


class McpHttpApp:
    """The ASGI app: MCP's streamable HTTP transport behind a bearer-token check.

    It needs its lifespan run (it starts the SDK's session manager): served alone by uvicorn
    that happens by itself; mounted inside another app (Starlette/FastAPI do not run a mounted
    app's lifespan), enter `async with mcp_app.lifespan():` in the host app's own lifespan."""

    def __init__(self, server: OpsrunMCP, auth: Callable[[str], tuple[str, str] | None] | None,
                 allowed_hosts: Sequence[str] | None = None, *, anonymous: bool = False) -> None:
        self.server = server
        self._auth = auth
        self._anonymous = anonymous
        if allowed_hosts is not None and "*" in allowed_hosts:
            security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
        else:
            hosts = list(allowed_hosts or LOOPBACK_HOSTS)
            security = TransportSecuritySettings(
                enable_dns_rebinding_protection=True, allowed_hosts=hosts,
                allowed_origins=[f"{scheme}://{h}" for h in hosts for scheme in ("http", "https")])
        server.streamable_http_app(streamable_http_path="/mcp", transport_security=security)  # makes the manager
        self._manager = server.session_manager
        self._running = False

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Run the session manager (once per app) for as long as the block lasts."""
        async with self._manager.run():
            self._running = True
            try:
                yield
            finally:
                self._running = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan_protocol(receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        if path.rstrip("/") not in ("", "/mcp"):
            await _answer(send, 404, {"error": "not found: the MCP endpoint is /mcp"})
            return
        if not self._running:
            await _answer(send, 503, {"error": "the MCP session manager is not running (the host app must "
                                               "run McpHttpApp.lifespan)"})
            return
        who = self._identify(scope)
        if who is None:
            await _answer(send, 401, {"error": "a valid bearer token is required (Authorization: Bearer TOKEN)"},
                          [(b"www-authenticate", b'Bearer realm="opsrun"')])
            return
        if not grants(who[1]) & {"read"}:
            await _answer(send, 403, {"error": f"token '{who[0]}' has no role that may use MCP"})
            return
        scope = {**scope, CALLER_KEY: who, "path": "/mcp", "root_path": ""}
        await self._manager.handle_request(scope, receive, send)

    def _identify(self, scope: Scope) -> tuple[str, str] | None:
        if self._auth is None:
            return ANONYMOUS
        token = ""
        for key, value in scope.get("headers") or []:
            if key.lower() == b"authorization":
                kind, _, rest = value.decode("latin-1").partition(" ")
                if kind.lower() == "bearer":
                    token = rest.strip()
        if not token and not self._anonymous:
            return None
        try:
            who = self._auth(token)
        except Exception:  # an auth that raises for a bad token: the same 401
            return None
        if who is None:
            return None
        name, role = who
        return str(name), role

    async def _lifespan_protocol(self, receive: Receive, send: Send) -> None:
        stack = contextlib.AsyncExitStack()
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await stack.enter_async_context(self.lifespan())
            except Exception as exc:
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
        if message["type"] == "lifespan.shutdown":
            await stack.aclose()
            await send({"type": "lifespan.shutdown.complete"})


async def _answer(send: Send, status: int, body: dict[str, Any], headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})


def http_caller(ctx: Context[Any, Any]) -> tuple[str, str]:
    """Who calls a tool over HTTP: what McpHttpApp put in the request's scope."""
    request = getattr(ctx.request_context, "request", None)
    who = getattr(request, "scope", {}).get(CALLER_KEY) if request is not None else None
    if who is None:
        raise ToolError("permission denied: no caller identity on this request")
    name, role = who
    return str(name), role


def asgi_app(project: Project | str | Path, auth: TokenAuth | Any | None = None, *,
             auto_limits: AutoLimits | None = None, allowed_hosts: Sequence[str] | None = None,
             anonymous: bool = False) -> McpHttpApp:
    """The MCP server of `project` as an ASGI app (streamable HTTP at its root and at /mcp).

    auth: maps a bearer token to (name, role) (see TokenAuth); None asks for no token and lets
    every caller act as 'anonymous' with the apply role (tests, a trusted loopback only).
    auto_limits: plans within them are approved by policy at `apply`; None: a person approves.
    allowed_hosts: the Host headers accepted (DNS-rebinding protection), default loopback only;
    ["*"] accepts any (behind a token). anonymous: a request without a token asks auth("")
    (which may answer an anonymous principal); off (the default, as opsrun serve mounts it),
    such a request is answered 401 without asking. The job worker is not started here: the
    host runs one."""
    proj = project if isinstance(project, Project) else Project.at(project)
    check = getattr(auth, "authenticate", None) if auth is not None else None
    fn: Callable[[str], tuple[str, str] | None] | None = check if callable(check) else auth
    server = build(proj, caller=http_caller, auto_limits=auto_limits)
    return McpHttpApp(server, fn, allowed_hosts, anonymous=anonymous)
