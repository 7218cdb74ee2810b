"""`opsrun mcp --project DIR` over stdio, driven by the SDK's real ClientSession (a spawned
`python -m runner mcp`): the whole validate → plan → approve → apply scenario, and tool errors."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import anyio
from mcp import ClientSession, StdioServerParameters, stdio_client

from tests.mcp_flow import ROOT, children, drive, make_project, server_env


def _params(project: Path, *extra: str) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "runner", "mcp", "--project", str(project), *extra],
                                 env=server_env(), cwd=str(ROOT))


def _stop_leftovers(before: set[int]) -> None:
    """stdio_client ends the server it spawned; one that outlived it is stopped here by its PID."""
    for pid in set(children(os.getpid())) - before:
        os.kill(pid, signal.SIGKILL)


def test_stdio_validate_plan_approve_apply(tmp_path: Path) -> None:
    project, out = make_project(tmp_path)
    before = set(children(os.getpid()))

    async def main() -> None:
        with anyio.fail_after(90):
            async with stdio_client(_params(project)) as (read, write), ClientSession(read, write) as session:
                spawned = set(children(os.getpid())) - before
                assert spawned, "no server process was spawned"
                await drive(session, project, out)

    try:
        anyio.run(main)
    finally:
        _stop_leftovers(before)
    assert not set(children(os.getpid())) - before


def test_stdio_needs_approval_even_with_the_policy_when_the_plan_is_outside_it(tmp_path: Path) -> None:
    """--auto-approve 1: a three-change plan is still refused, naming the policy's reason."""
    project, out = make_project(tmp_path)
    before = set(children(os.getpid()))

    async def main() -> None:
        with anyio.fail_after(60):
            async with stdio_client(_params(project, "--auto-approve", "1")) as (read, write), \
                    ClientSession(read, write) as session:
                await session.initialize()
                planned = await session.call_tool("plan", {"path": "playbooks/demo.yaml"})
                assert not planned.is_error
                plan_id = (planned.structured_content or {})["plan_id"]
                got = await session.call_tool("apply", {"plan_id": plan_id, "wait_seconds": 0})
                text = got.content[0].text  # type: ignore[union-attr]
                assert got.is_error and "needs approval" in text and "more than the limit of 1" in text, text
                assert not out.exists()

    try:
        anyio.run(main)
    finally:
        _stop_leftovers(before)
