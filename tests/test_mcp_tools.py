"""The MCP tools in this process (the SDK's ClientSession on its in-memory transport): roles, the
auto-approve policy, the gateway tools on the fake LLM server, and errors as clear tool errors."""

from __future__ import annotations

import json
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from mcp import ClientSession
from mcp.client._memory import InMemoryTransport
from mcp.shared.exceptions import MCPError

from runner.approval_policy import AutoLimits
from runner.mcp.server import build, grants
from runner.service import plans
from runner.service.jobs import JobQueue
from runner.service.project import Project
from runner.service.worker import Worker
from tests.mcp_flow import CANARY, text_of
from tests.peers.fake_llm import FakeLLM, text

ONE_FILE = """\
opsrun: 1
name: one file
hosts: local
steps:
  - id: note
    file:
      path: {out}/note.txt
      content: "small change\\n"
"""


def test_roles_grant_what_they_name() -> None:
    """read < plan < approve < apply, as opsrun serve ranks its tokens' roles."""
    assert grants("read") == {"read"}
    assert grants("plan") == {"read", "plan"}
    assert "apply" not in grants("approve")
    assert grants("apply") == {"read", "plan", "approve", "apply"}
    assert grants("read, plan") == {"read", "plan"} == grants(["read", "plan"])
    assert grants("root") == frozenset() and grants(None) == frozenset() and grants("none") == frozenset()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    monkeypatch.delenv("OPSRUN_STATE_DIR", raising=False)
    root = tmp_path / "proj"
    root.mkdir()
    return Project.at(root)


def _session(project: Project, role: str = "apply", limits: AutoLimits | None = None,
             worker: bool = False) -> Callable[[Callable[[ClientSession], Awaitable[None]]], None]:
    """Run `body(session)` against a server of `project` for caller 'agent' with `role`."""
    server = build(project, caller=lambda ctx: ("agent", role), auto_limits=limits)

    def run(body: Callable[[ClientSession], Awaitable[None]]) -> None:
        stop = threading.Event()
        thread = None
        if worker:
            w = Worker(project, JobQueue(project))
            thread = threading.Thread(target=w.run, args=(stop,), daemon=True)
            thread.start()

        async def main() -> None:
            with anyio.fail_after(60):
                async with InMemoryTransport(server) as (read, write), ClientSession(read, write) as session:
                    await session.initialize()
                    await body(session)

        try:
            anyio.run(main)
        finally:
            stop.set()
            if thread is not None:
                thread.join(timeout=20)

    return run


def _data(result: Any) -> dict[str, Any]:
    assert not result.is_error, text_of(result)
    return result.structured_content or json.loads(text_of(result))


def test_the_auto_approve_policy_runs_a_small_plan(project: Project, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()

    async def body(session: ClientSession) -> None:
        planned = _data(await session.call_tool("plan", {"playbook": ONE_FILE.format(out=out)}))
        assert planned["changes"] == 1 and not planned["approved"]
        done = _data(await session.call_tool("apply", {"plan_id": planned["plan_id"], "wait_seconds": 30}))
        assert done["approval"] == "policy" and done["approved_by"] == "policy", done
        assert done["job"]["state"] == "succeeded", done
        assert done["job"]["actor"] == "agent", done

    _session(project, limits=AutoLimits(max_changes=1), worker=True)(body)
    assert (out / "note.txt").read_text() == "small change\n"


def test_a_plan_role_plans_but_may_not_apply(project: Project, tmp_path: Path) -> None:
    async def body(session: ClientSession) -> None:
        planned = _data(await session.call_tool("plan", {"playbook": ONE_FILE.format(out=tmp_path / "o")}))
        got = await session.call_tool("apply", {"plan_id": planned["plan_id"]})
        assert got.is_error and "needs the 'apply' role" in text_of(got), text_of(got)

    _session(project, role="plan", limits=AutoLimits(max_changes=10))(body)
    assert not (tmp_path / "o").exists()


def test_errors_are_clear_tool_errors_without_tracebacks(project: Project, tmp_path: Path) -> None:
    async def body(session: ClientSession) -> None:
        planned = _data(await session.call_tool("plan", {"playbook": ONE_FILE.format(out=tmp_path / "o")}))
        for f in plans.plan_dir(project, planned["plan_id"]).iterdir():  # a damaged plan store
            f.write_text("{not json")
        cases = [("plan_show", {"plan_id": planned["plan_id"]}),
                 ("plan", {"playbook": "opsrun: 1\nhosts: local\nsteps: [{id: x, nope: {}}]\n"}),
                 ("plan", {"playbook": "opsrun: 1\n  bad: [yaml\n"}),
                 ("run", {"run_id": "no-such-run"}),
                 ("job", {"job_id": "no-such-job"}),
                 ("validate", {})]
        for name, args in cases:
            got = await session.call_tool(name, args)
            said = text_of(got)
            assert got.is_error and said.strip(), (name, said)
            assert "Traceback" not in said and 'File "' not in said, (name, said)
        for uri in ("opsrun://playbooks/nope.yaml", "opsrun://playbooks/../../etc/passwd", "opsrun://runs/none"):
            with pytest.raises(MCPError) as caught:  # a resource that cannot be read: a protocol error
                await session.read_resource(uri)
            assert "Traceback" not in str(caught.value) and str(caught.value).strip(), caught.value

    _session(project)(body)


def test_ask_and_author_use_the_project_gateway(project: Project, fake_llm: FakeLLM, tmp_path: Path) -> None:
    doc = {"opsrun": 1, "providers": {"fake": {"kind": "openai", "model": "fake-model",
                                               "api_base": fake_llm.url + "/v1"}},
           "routing": {"retries_per_provider": 0, "deadline_s": 20}, "cache": {"enabled": False}}
    (project.root / "gateway.yaml").write_text(yaml.safe_dump(doc))
    drafted = yaml.safe_load(ONE_FILE.format(out=tmp_path / "a"))  # the author answers the playbook as JSON
    fake_llm.script("fake-model", text("forty-two"), json.dumps(drafted))

    async def body(session: ClientSession) -> None:
        answer = _data(await session.call_tool("ask", {"prompt": "What is six times seven?"}))
        assert answer["text"] == "forty-two" and answer["model"], answer
        written = _data(await session.call_tool("author", {"request": "write a note file"}))
        assert written["ok"] and "note.txt" in written["playbook"], written
        listed = await session.list_resources()
        assert not [r for r in listed.resources if "playbooks/" in str(r.uri)]  # author writes nothing

    _session(project, role="plan")(body)
    assert not (tmp_path / "a").exists()


def test_a_failing_step_that_prints_the_secret_leaks_it_nowhere(project: Project, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSRUN_SECRET_MCP_CANARY", CANARY)
    failing = ("opsrun: 1\nname: leaky\nhosts: local\nsteps:\n  - id: leak\n    run:\n"
               "      command: echo \"token={{ secret('MCP_CANARY') }}\" >&2; exit 3\n")
    seen: list[str] = []

    async def body(session: ClientSession) -> None:
        async def call(name: str, args: dict[str, Any]) -> Any:
            got = await session.call_tool(name, args)
            seen.append(text_of(got) + json.dumps(got.structured_content or {}))
            return got

        planned = _data(await call("plan", {"playbook": failing}))
        done = _data(await call("apply", {"plan_id": planned["plan_id"], "wait_seconds": 30}))
        assert done["job"]["state"] == "failed", done
        await call("job", {"job_id": done["job"]["id"]})
        await call("run", {"run_id": done["job"]["run_id"], "events": True})
        journal = await session.read_resource(f"opsrun://runs/{done['job']['run_id']}")
        seen.extend(getattr(c, "text", "") for c in journal.contents)

    _session(project, limits=AutoLimits(max_changes=1), worker=True)(body)
    assert seen and not [s[:300] for s in seen if CANARY in s]
    assert any("token=***" in s for s in seen), seen


@pytest.mark.parametrize(("allow", "anonymous", "status"), [
    (False, ("anonymous", "read"), 401), (True, None, 401), (True, ("anonymous", "read"), 200),
    (True, ("anonymous", "none"), 403)])
def test_a_request_without_a_token(project: Project, allow: bool, anonymous: tuple[str, str] | None,
                                   status: int) -> None:
    """No Authorization header: 401 without asking auth (as opsrun serve mounts it); with
    anonymous=True, auth("") decides (an anonymous principal, or None)."""
    import httpx

    from runner.mcp.http import asgi_app

    asked: list[str] = []

    def auth(token: str) -> tuple[str, str] | None:
        asked.append(token)
        return anonymous if token == "" else None

    app = asgi_app(project, auth, anonymous=allow)
    hello = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
             "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}

    async def main() -> int:
        async with app.lifespan(), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                     base_url="http://127.0.0.1:8000") as http:
            got = await http.post("/mcp", json=hello, headers={"Accept": "application/json, text/event-stream"})
            return got.status_code

    assert anyio.run(main) == status
    assert asked == ([""] if allow else [])
