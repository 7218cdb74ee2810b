"""MCP over streamable HTTP: runner.mcp.http.asgi_app served alone by a uvicorn on loopback (a
process of its own, stopped by its PID), driven by the SDK's real ClientSession with a bearer
token; tokens and roles enforced, the same scenario as over stdio."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from tests.mcp_flow import ROOT, drive, free_port, make_project, server_env, wait_listening


@pytest.fixture(params=["alone", "mounted"])
def served(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[str, Path, Path]]:
    """The app served alone, or mounted at /mcp inside a Starlette app (as opsrun serve does)."""
    project, out = make_project(tmp_path)
    port = free_port()
    extra = ["--mounted"] if request.param == "mounted" else []
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "mcp_http_server.py"), str(project), str(port),
                             *extra], env=server_env(), cwd=str(ROOT), stderr=subprocess.PIPE, text=True)
    try:
        try:
            wait_listening(port)
        except AssertionError:
            proc.kill()
            raise AssertionError(proc.communicate(timeout=10)[1]) from None
        yield f"http://127.0.0.1:{port}/mcp", project, out
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()


async def _session_run(url: str, token: str, body) -> None:  # type: ignore[no-untyped-def]
    async with create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}) as http, \
            streamable_http_client(url, http_client=http) as (read, write), ClientSession(read, write) as session:
        await body(session)


def test_http_validate_plan_approve_apply(served: tuple[str, Path, Path]) -> None:
    url, project, out = served

    async def body(session: ClientSession) -> None:
        await drive(session, project, out)

    anyio.run(lambda: _in_time(_session_run(url, "tok-apply", body), 90))


def test_http_tokens_and_roles(served: tuple[str, Path, Path]) -> None:
    url, _project, out = served
    hello = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
             "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                        "clientInfo": {"name": "t", "version": "0"}}}
    headers = {"Accept": "application/json, text/event-stream"}

    def post(**more: str) -> httpx.Response:  # mounted: /mcp answers 307 to /mcp/
        return httpx.post(url, json=hello, headers={**headers, **more}, timeout=10, follow_redirects=True)

    assert post().status_code == 401
    bad = post(Authorization="Bearer nope")
    assert bad.status_code == 401 and "bearer" in bad.headers.get("www-authenticate", "").lower()
    assert "nope" not in bad.text
    assert post(Authorization="Bearer tok-none").status_code == 403
    evil = httpx.post(url.rstrip("/") + "/", json=hello, timeout=10,
                      headers={**headers, "Authorization": "Bearer tok-read", "Host": "evil.example:80"})
    assert evil.status_code in (400, 421), evil.status_code  # DNS rebinding: only loopback Host headers
    assert post(Authorization="Bearer tok-read").status_code == 200

    async def reader(session: ClientSession) -> None:
        await session.initialize()
        inv = await session.call_tool("inventory", {})
        assert not inv.is_error
        for name, args in (("plan", {"path": "playbooks/demo.yaml"}), ("apply", {"plan_id": "x"}),
                           ("author", {"request": "anything"})):
            got = await session.call_tool(name, args)
            text = got.content[0].text  # type: ignore[union-attr]
            assert got.is_error and "permission denied" in text and "'bob'" in text, (name, text)
        assert not out.exists()

    anyio.run(lambda: _in_time(_session_run(url, "tok-read", reader), 60))


async def _in_time(coro, seconds: float) -> None:  # type: ignore[no-untyped-def]
    with anyio.fail_after(seconds):
        await coro
