"""The MCP scenario both transports' tests drive with the SDK's real ClientSession: list tools,
inventory, validate, plan, apply refused, approve (as a person, runner.service.approvals), apply,
job, runs, resources; judged with the plan/apply oracle and a re-plan that converges.

Test helper: talks to opsrun over MCP only, except the person's approval and the file checks.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, TextContent, TextResourceContents

from tests import oracle

ROOT = Path(__file__).resolve().parent.parent
CANARY = "mcp-canary-5f0c9e1d7b"  # the secret's value: must never appear in anything MCP answers
TOOLS = {"inventory", "validate", "plan", "plan_show", "apply", "job", "jobs", "runs", "run", "ask", "author"}

PLAYBOOK = """\
opsrun: 1
name: mcp-demo
hosts: local
vars:
  out: {out}
  token: "{{{{ secret('MCP_CANARY') }}}}"
steps:
  - id: dir
    file:
      path: "{{{{ out }}}}"
      state: directory
  - id: note
    file:
      path: "{{{{ out }}}}/note.txt"
      content: "hello from an agent\\n"
  - id: token
    sensitive: true
    file:
      path: "{{{{ out }}}}/token.txt"
      content: "token={{{{ token }}}}\\n"
      mode: "0600"
"""

BROKEN = """\
opsrun: 1
hosts: local
steps:
  - id: oops
    file:
      pathh: /tmp/x
"""


def make_project(tmp_path: Path) -> tuple[Path, Path]:
    """A project folder with playbooks/demo.yaml writing under `out` (which does not exist yet)."""
    project = tmp_path / "project"
    (project / "playbooks").mkdir(parents=True)
    out = tmp_path / "out"
    (project / "playbooks" / "demo.yaml").write_text(PLAYBOOK.format(out=out), encoding="utf-8")
    (project / "notes.yaml").write_text("just: data\n", encoding="utf-8")  # not a playbook: not listed
    return project, out


def server_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSRUN_")}
    env["PYTHONPATH"] = str(ROOT)
    env["OPSRUN_SECRET_MCP_CANARY"] = CANARY
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def children(pid: int) -> Iterator[int]:
    """The processes whose parent is `pid` (from /proc)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            yield int(entry)


def text_of(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


class Client:
    """A ClientSession that remembers every text it was given (for the secret check)."""

    def __init__(self, session: ClientSession) -> None:
        self.session = session
        self.seen: list[str] = []

    async def call(self, name: str, **args: Any) -> dict[str, Any]:
        result = await self.session.call_tool(name, args)
        text = text_of(result)
        self.seen.append(text + json.dumps(result.structured_content or {}))
        assert not result.is_error, f"{name}({args}) failed: {text}"
        return result.structured_content or json.loads(text)

    async def fails(self, name: str, **args: Any) -> str:
        result = await self.session.call_tool(name, args)
        text = text_of(result)
        self.seen.append(text)
        assert result.is_error, f"{name}({args}) should fail, gave: {text[:500]}"
        assert "Traceback" not in text and text.strip(), text
        return text

    async def read(self, uri: str) -> str:
        got = await self.session.read_resource(uri)
        texts = [c.text for c in got.contents if isinstance(c, TextResourceContents)]
        self.seen.extend(texts)
        return "\n".join(texts)


def applied_from(events: list[dict[str, Any]]) -> dict[oracle.Pair, oracle.Applied]:
    """What apply did per (host, step instance), from the run's journal events."""
    out: dict[oracle.Pair, oracle.Applied] = {}
    for ev in events:
        if ev.get("type") == "step_end":
            pair = (str(ev.get("host")), str(ev.get("instance")))
            out[pair] = oracle.Applied(pair[0], pair[1], str(ev.get("step") or pair[1]), str(ev.get("status")),
                                       str(ev.get("message") or ""))
    return out


async def drive(session: ClientSession, project: Path, out: Path) -> Client:
    """The whole scenario; returns the client (what it saw) for transport-specific checks."""
    from runner.service import approvals
    from runner.service.project import Project

    await session.initialize()
    c = Client(session)

    listed = await session.list_tools()
    names = {t.name for t in listed.tools}
    assert names >= TOOLS, names
    assert "approve" not in names  # people approve, agents do not
    by_name = {t.name: t for t in listed.tools}
    assert all(len(t.description or "") > 80 for t in listed.tools), [t.name for t in listed.tools]
    assert by_name["apply"].annotations and by_name["apply"].annotations.destructive_hint
    assert by_name["inventory"].annotations and by_name["inventory"].annotations.read_only_hint
    assert "approve" in (by_name["apply"].description or "")

    inv = await c.call("inventory")
    assert "local" in inv["hosts"], inv

    bad = await c.call("validate", playbook=BROKEN)
    assert bad["ok"] is False and bad["errors"], bad
    assert any(e.get("line") for e in bad["errors"]), bad
    good = await c.call("validate", path="playbooks/demo.yaml")
    assert good["ok"] is True, good
    await c.fails("validate", playbook=BROKEN, path="playbooks/demo.yaml")
    (project.parent / "outside.yaml").write_text(PLAYBOOK.format(out=out), encoding="utf-8")
    outside = await session.call_tool("validate", {"path": "../outside.yaml"})  # an error, or ok: false
    said = text_of(outside)
    c.seen.append(said)
    assert "inside the project" in said and (outside.is_error or '"ok": false' in said), said
    escape = await c.fails("plan", path="../outside.yaml")
    assert "inside the project" in escape, escape

    first = await c.call("plan", path="playbooks/demo.yaml")
    plan_id = first["plan_id"]
    assert first["digest"].startswith("sha256:") and first["markdown"].strip(), first
    assert first["approved"] is False and f"opsrun approve {plan_id}" in first["next"], first
    planned = [oracle.Planned.from_json(s) for s in first["plan"]["steps"]]
    assert {p.instance for p in planned} == {"dir", "note", "token"}, planned
    assert all(p.status in oracle.CHANGING for p in planned), planned

    refused = await c.fails("apply", plan_id=plan_id, wait_seconds=0)
    assert "needs approval" in refused and f"opsrun approve {plan_id}" in refused, refused
    assert not out.exists(), "apply without an approval changed the target"
    await c.fails("plan_show", plan_id="no-such-plan")

    approvals.approve(Project.at(project), plan_id, approver="tester", how="terminal")
    shown = await c.call("plan_show", plan_id=plan_id)
    assert shown["approval"]["approver"] == "tester", shown

    done = await c.call("apply", plan_id=plan_id, wait_seconds=60)
    job = done["job"]
    assert job["state"] == "succeeded", done
    assert (out / "note.txt").read_text() == "hello from an agent\n"
    assert (out / "token.txt").read_text() == f"token={CANARY}\n"  # the secret did reach the target

    run = await c.call("run", run_id=job["run_id"], events=True)
    problems = oracle.compare(planned, applied_from(run["events"]), known=True)
    assert not problems, problems

    status = await c.call("job", job_id=job["id"])
    assert status["job"]["state"] == "succeeded" and status["events"], status
    seqs = [e["seq"] for e in status["events"]]
    assert seqs == sorted(seqs), seqs
    later = await c.call("job", job_id=job["id"], events_after=seqs[-1])
    assert later["events"] == [], later
    listed_jobs = await c.call("jobs")
    assert job["id"] in [j["id"] for j in listed_jobs["jobs"]], listed_jobs

    runs = await c.call("runs")
    assert job["run_id"] in [r["run_id"] for r in runs["runs"]], runs

    again = await c.call("plan", path="playbooks/demo.yaml")
    replanned = [oracle.Planned.from_json(s) for s in again["plan"]["steps"]]
    assert not oracle.unconverged(replanned, known=True), replanned
    assert again["changes"] == 0 and "Nothing to change" in again["next"], again

    resources = await session.list_resources()
    uris = {str(r.uri) for r in resources.resources}
    assert {"opsrun://schemas/playbook", "opsrun://schemas/inventory",
            "opsrun://playbooks/playbooks/demo.yaml", f"opsrun://runs/{job['run_id']}"} <= uris, uris
    assert not any("notes.yaml" in u for u in uris), uris
    schema = json.loads(await c.read("opsrun://schemas/playbook"))
    assert "$schema" in schema and "steps" in json.dumps(schema)
    assert await c.read("opsrun://playbooks/playbooks/demo.yaml") == (project / "playbooks" / "demo.yaml").read_text()
    for not_served in ("notes.yaml", ".opsrun/audit.jsonl", "../outside.yaml"):  # other YAML may hold values
        with pytest.raises(MCPError):
            await c.read(f"opsrun://playbooks/{not_served}")
    journal = json.loads(await c.read(f"opsrun://runs/{job['run_id']}"))
    assert journal["run_id"] == job["run_id"] and journal["events"], journal
    templates = await session.list_resource_templates()
    assert {"opsrun://playbooks/{+path}", "opsrun://runs/{run_id}"} <= {t.uri_template for t in
                                                                       templates.resource_templates}

    leaks = [t[:300] for t in c.seen if CANARY in t]
    assert not leaks, f"the secret's value is in MCP results: {leaks}"
    assert any("***" in t for t in c.seen), "the secret should show as *** somewhere (plan diff, journal)"
    return c
