"""`opsrun serve` end to end on `local`: validate → plan → approve → job → the running job's
server-sent events → succeeded, held to the plan/apply oracle and a re-plan; roles; the audit
log's actors; a secret canary absent from every response, event and log line; and a server
killed (SIGKILL) mid-job and restarted: the job resumes from its journal, nothing runs twice.
A live uvicorn subprocess on 127.0.0.1 driven by httpx."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.oracle import Applied, Planned, compare, unconverged
from tests.serve_peer import CANARY, TOKENS, Served, serve_yaml, sse_events

pytestmark = pytest.mark.peer

PLAYBOOK = """\
opsrun: 1
name: served
hosts: local
vars:
  out: {out}
steps:
  - id: folder
    file:
      path: "{{{{ out }}}}"
      state: directory
  - id: motd
    file:
      path: "{{{{ out }}}}/motd"
      content: "served by opsrun\\n"
  - id: uses_secret
    run:
      command: echo "the token is {{{{ secret('OPSRUN_CANARY') }}}}" && touch {{{{ out }}}}/secret-used
      creates: "{{{{ out }}}}/secret-used"
  - id: slow
    run:
      command: sleep 1.5 && echo slow >> {{{{ out }}}}/slow.log
      creates: "{{{{ out }}}}/slow.log"
"""

KILL_PLAYBOOK = """\
opsrun: 1
name: killed
hosts: local
vars:
  out: {out}
steps:
  - id: folder
    file:
      path: "{{{{ out }}}}"
      state: directory
  - id: once
    run:
      command: echo once >> {{{{ out }}}}/once.log
  - id: long
    run:
      command: sleep 4 && echo long >> {{{{ out }}}}/long.log
      creates: "{{{{ out }}}}/long.log"
  - id: after
    run:
      command: echo after >> {{{{ out }}}}/after.log
"""


def make_project(root: Path, playbook: str) -> Path:
    (root / "inventory.yaml").write_text("opsrun: 1\nhosts:\n  local:\n    transport: local\n")
    (root / "playbooks").mkdir()
    (root / "playbooks" / "site.yaml").write_text(playbook.format(out=root / "out"))
    return root


class Seen:
    """Every body the test received, to look for the canary in."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def __call__(self, r: httpx.Response) -> httpx.Response:
        self.texts.append(r.text)
        return r


def applied_from(events: list[dict[str, Any]]) -> dict[tuple[str, str], Applied]:
    out = {}
    for e in events:
        d = e["data"]
        if d.get("source") == "run" and d.get("type") == "step_end":
            pair = (str(d["host"]), str(d["instance"]))
            out[pair] = Applied(pair[0], pair[1], str(d.get("step") or pair[1]), str(d["status"]),
                                str(d.get("message") or ""))
    return out


def wait_final(client: httpx.Client, job_id: str, timeout: float = 40.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled", "human"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not end: {job}")


def test_validate_plan_approve_job_events_succeeded(tmp_path: Path) -> None:
    project = make_project(tmp_path, PLAYBOOK)
    serve_yaml(project)
    seen = Seen()
    with Served(project, args=("--log-level", "info")) as served:  # access lines too, for the canary
        planner, reader = served.client("planner"), served.client("reader")
        approver, operator = served.client("approver"), served.client("operator")
        r = seen(planner.post("/validate", json={"path": "playbooks/site.yaml"}))
        assert r.status_code == 200 and r.json()["ok"] is True, r.text
        r = seen(planner.post("/validate", json={"text": "opsrun: 1\nhosts: local\nsteps:\n  - id: x\n    nope: 1\n"}))
        assert r.status_code == 200 and r.json()["ok"] is False and r.json()["errors"][0]["line"] > 0

        r = seen(reader.post("/plans", json={"path": "playbooks/site.yaml"}))
        assert r.status_code == 403
        for escape in ("../outside.yaml", "/etc/passwd", "playbooks/../../x.yaml"):
            r = seen(planner.post("/plans", json={"path": escape}))
            assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json", r.text
        r = seen(planner.post("/plans", json={"text": "[" * 5000 + "]" * 5000}))
        assert r.status_code == 400, r.text
        r = seen(planner.post("/plans", json={"path": "playbooks/site.yaml"}))
        assert r.status_code == 201, r.text
        plan = r.json()
        assert plan["actor"] == "planner" and plan["origin"] == "http" and plan["approval"] is None
        assert "motd" in plan["markdown"] and plan["digest"]
        planned = [Planned.from_json(s) for s in plan["plan"]["steps"]]
        assert {p.instance for p in planned} == {"folder", "motd", "uses_secret", "slow"}
        md = seen(reader.get(f"/plans/{plan['id']}/markdown"))
        assert md.status_code == 200 and md.headers["content-type"].startswith("text/markdown")
        assert md.text == plan["markdown"]

        # approvals: roles, and bound to the digest
        assert seen(planner.post(f"/plans/{plan['id']}/approvals", json={})).status_code == 403
        assert seen(reader.post(f"/plans/{plan['id']}/approvals")).status_code == 403
        assert seen(served.client().post(f"/plans/{plan['id']}/approvals")).status_code == 401
        r = seen(operator.post("/jobs", json={"plan_id": plan["id"]}))
        assert r.status_code == 409 and "not approved" in r.text, r.text
        r = seen(approver.post(f"/plans/{plan['id']}/approvals", json={"digest": "0" * 64}))
        assert r.status_code == 409 and "digest" in r.text, r.text
        r = seen(approver.post(f"/plans/{plan['id']}/approvals", json={"digest": plan["digest"]}))
        assert r.status_code == 201, r.text
        assert r.json()["approver"] == "approver" and r.json()["how"] == "http"
        assert seen(reader.get(f"/plans/{plan['id']}")).json()["approval"]["digest"] == plan["digest"]

        # the job
        assert seen(approver.post("/jobs", json={"plan_id": plan["id"]})).status_code == 403
        r = seen(operator.post("/jobs", json={"plan_id": plan["id"]}))
        assert r.status_code == 201, r.text
        job = r.json()
        assert job["state"] in ("queued", "running") and job["actor"] == "operator"
        events = sse_events(reader, f"/jobs/{job['id']}/events")
        seen.texts += [json.dumps(e["data"]) for e in events]
        assert events[-1]["event"] == "end" and events[-1]["data"]["job"]["state"] == "succeeded", events[-1]
        first_job_states = [e["data"].get("state") for e in events if e["data"].get("source") == "job"]
        assert first_job_states and first_job_states[-1] == "succeeded"
        starts = [e for e in events if e["data"].get("type") == "step_start"]
        assert starts and starts[0]["at"] < events[-1]["at"] - 1.0  # streamed while it ran (slow: 1.5 s)
        seqs = [int(e["id"]) for e in events[:-1]]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)

        # resumable: after Last-Event-ID only the later events
        middle = events[len(events) // 2]
        tail = sse_events(reader, f"/jobs/{job['id']}/events", last_event_id=middle["id"])
        assert [e["id"] for e in tail[:-1]] == [e["id"] for e in events[:-1] if int(e["id"]) > int(middle["id"])]

        # the plan/apply oracle: apply did what the plan said; a re-plan has nothing left to do
        applied = applied_from(events)
        assert not compare(planned, applied), compare(planned, applied)
        assert (project / "out" / "motd").read_text() == "served by opsrun\n"
        again = seen(planner.post("/plans", json={"path": "playbooks/site.yaml"})).json()
        second = [Planned.from_json(s) for s in again["plan"]["steps"]]
        assert not unconverged(second), unconverged(second)

        # reading it back
        done = seen(reader.get(f"/jobs/{job['id']}")).json()
        assert done["state"] == "succeeded" and done["run_id"]
        assert job["id"] in [j["id"] for j in seen(reader.get("/jobs")).json()]
        assert seen(reader.get("/jobs", params={"state": "succeeded"})).status_code == 200
        runs = seen(reader.get("/runs")).json()
        assert runs and done["run_id"] in json.dumps(runs)
        run = seen(reader.get(f"/runs/{done['run_id']}"))
        assert run.status_code == 200 and "uses_secret" in run.text
        assert seen(reader.get("/runs/nonexistent")).status_code == 404
        assert seen(reader.get("/plans/nonexistent")).status_code == 404
        assert seen(reader.get("/jobs/nonexistent")).status_code == 404
        assert "local" in seen(reader.get("/inventory")).json()["hosts"]
        assert seen(reader.post(f"/jobs/{job['id']}/cancel")).status_code == 403
        r = seen(operator.post(f"/jobs/{job['id']}/cancel"))
        assert r.status_code == 409  # a finished job stays what it was
        assert seen(reader.get(f"/jobs/{job['id']}")).json()["state"] == "succeeded"
        for c in (planner, reader, approver, operator):
            c.close()
    log = served.output()
    assert '"POST /plans HTTP/1.1" 201' in log  # the access log is there, and was searched below

    # the audit log: who planned, approved and applied, by token name
    audit = [json.loads(line) for line in (project / ".opsrun" / "audit.jsonl").read_text().splitlines()]
    actors = {(a.get("actor"), a.get("action")) for a in audit}
    assert ("approver", "approve") in actors, actors
    assert any(actor == "operator" for actor, _ in actors), actors
    assert any(actor == "planner" for actor, _ in actors), actors

    # the canary (a secret the playbook echoed) and the tokens: in no response, event or log line
    everything = "\n".join([*seen.texts, log, (project / ".opsrun" / "audit.jsonl").read_text()])
    assert "the token is ***" in everything  # the step's output did come back, masked
    assert CANARY not in everything
    for _, value in TOKENS.values():
        assert value not in everything


def test_a_server_killed_mid_job_resumes_it_and_runs_nothing_twice(tmp_path: Path) -> None:
    project = make_project(tmp_path, KILL_PLAYBOOK)
    serve_yaml(project)
    served = Served(project).start()
    try:
        with served.client("operator") as op:
            plan = op.post("/plans", json={"path": "playbooks/site.yaml"}).json()
            assert op.post(f"/plans/{plan['id']}/approvals", json={"digest": plan["digest"]}).status_code == 201
            job = op.post("/jobs", json={"plan_id": plan["id"]}).json()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # until the long step runs
                evs = _events_now(op, job["id"])
                if any(e.get("type") == "step_start" and e.get("instance") == "long" for e in evs):
                    break
                time.sleep(0.1)
            else:
                raise AssertionError("the long step never started")
        served.kill()
        assert (project / "out" / "once.log").read_text() == "once\n"
        assert not (project / "out" / "after.log").exists()

        served = Served(project, port=served.port).start()
        with served.client("operator") as op:
            final = wait_final(op, job["id"])
            assert final["state"] == "succeeded", final
            evs = _events_now(op, job["id"])
        assert (project / "out" / "once.log").read_text() == "once\n"  # finished before the kill: not again
        assert (project / "out" / "after.log").read_text() == "after\n"
        assert any("recovered" in json.dumps(e) for e in evs), evs
    finally:
        served.stop()


def _events_now(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    """The events so far (follow=false: the stream ends at once), their data."""
    return [e["data"] for e in sse_events(client, f"/jobs/{job_id}/events?follow=false")]


def test_one_worker_per_project_a_second_server_waits_its_turn(tmp_path: Path) -> None:
    """A second `opsrun serve` of the project runs no jobs while the first one's worker holds the
    project (/health: waiting, the log says why) and takes over when the first server stops."""
    project = make_project(tmp_path, KILL_PLAYBOOK)
    serve_yaml(project)

    def worker_of(served: Served, state: str, within: float) -> str:
        deadline = time.monotonic() + within
        got = ""
        while time.monotonic() < deadline:
            got = httpx.get(served.url + "/health").json()["worker"]
            if got == state:
                break
            time.sleep(0.1)
        return got

    first_ctx = Served(project)
    first = first_ctx.__enter__()
    try:
        with Served(project) as second:
            assert httpx.get(first.url + "/health").json()["worker"] == "running"
            assert worker_of(second, "waiting", 10) == "waiting"
            first_ctx.__exit__(None, None, None)
            first_ctx = None
            assert worker_of(second, "running", 20) == "running"  # retried within 5 s, then took over
            log = second.output()
    finally:
        if first_ctx is not None:
            first_ctx.__exit__(None, None, None)
    assert "another worker runs the jobs" in log
