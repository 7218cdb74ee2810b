"""runner.service job queue and worker on real `local` playbooks (files under tmp_path): plan ->
approve -> submit -> worker, held to the plan/apply oracle; refusals; drift; priorities; cancel;
retries that resume; events; audit; secrets. The kill -9 test is in test_service_worker_kill.py."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from runner.errors import InvalidInput
from runner.journal import get_run
from runner.service import approvals, audit, plans
from runner.service.jobs import Job, JobQueue
from runner.service.project import Project
from runner.service.worker import Worker, running_worker
from tests.oracle import Call, compare, parse_apply, unconverged
from tests.oracle import Planned as OraclePlanned

CANARY = "canary-Job-41c7aa"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    monkeypatch.delenv("OPSRUN_STATE_DIR", raising=False)
    root = tmp_path / "proj"
    root.mkdir()
    return Project.at(root)


def write(project: Project, name: str, steps: str) -> str:
    (project.root / name).write_text(f"opsrun: 1\nname: {name}\nhosts: local\nsteps:\n{steps}")
    return name


def files_playbook(project: Project, out: Path) -> str:
    return write(project, "files.yaml", f"""\
  - id: dir
    file: {{path: {out}, state: directory}}
  - id: motd
    file:
      path: {out}/motd
      content: "hello\\n"
  - id: conf
    line: {{path: {out}/app.env, line: LOG_LEVEL=info, create: true}}
""")


def approved(project: Project, name: str, actor: str = "alice") -> plans.PlanRecord:
    rec = plans.create_plan(project, path=name, actor=actor, origin="cli")
    approvals.approve(project, rec.id, approver="bob", how="terminal", digest=rec.digest)
    return rec


def applied(project: Project, job: Job) -> dict:
    """The run's journal events as the oracle reads `apply --json`'s stream."""
    assert job.run_id
    events = [e for e in get_run(job.run_id, project.state).events]
    stdout = "\n".join(json.dumps(e) for e in events) + '\n{"type": "recap"}\n'
    return parse_apply(Call((), 0, stdout, "")).results


def wait_for(predicate, timeout: float = 20.0, what: str = "") -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_plan_approve_submit_work_matches_the_plan_and_converges(project: Project, tmp_path: Path) -> None:
    name = files_playbook(project, tmp_path / "out")
    rec = approved(project, name)
    q = JobQueue(project)
    job = q.submit(rec.id, actor="alice")
    assert job.state == "queued" and job.digest == rec.digest
    worker = Worker(project, q)
    try:
        done = worker.run_once()
    finally:
        worker.close()
    assert done is not None and done.state == "succeeded", done
    assert done.attempts == 1 and done.run_id and done.ended
    first = [OraclePlanned.from_json(s) for s in rec.doc["steps"]]
    assert compare(first, applied(project, done), known=True) == []
    assert (tmp_path / "out" / "motd").read_text() == "hello\n"
    again = plans.create_plan(project, path=name, actor="alice", origin="cli")
    assert unconverged([OraclePlanned.from_json(s) for s in again.doc["steps"]], known=True) == []
    assert again.doc["summary"]["change"] == 0
    assert stat.S_IMODE(os.stat(project.state / "jobs.sqlite").st_mode) == 0o600

    seqs = [e["seq"] for e in q.events(job.id)]
    assert seqs == list(range(1, len(seqs) + 1))
    kinds = [(e["source"], e.get("state") or e["type"]) for e in q.events(job.id)]
    assert kinds[0] == ("job", "queued") and kinds[1] == ("job", "running") and kinds[-1] == ("job", "succeeded")
    assert ("run", "run_end") in kinds and ("run", "step_end") in kinds
    assert q.events(job.id, after=len(seqs) - 1) == q.events(job.id)[-1:]

    log = [(e["actor"], e["action"]) for e in audit.read(project)]
    assert log == [("alice", "plan"), ("bob", "approve"), ("alice", "submit"), ("alice", "apply_start"),
                   ("alice", "apply_end"), ("alice", "plan")]
    end = audit.read(project)[4]
    assert end["job_id"] == job.id and end["plan_id"] == rec.id and end["digest"] == rec.digest
    assert end["run_id"] == done.run_id and end["state"] == "succeeded"


def test_submit_refused_without_an_approval_bound_to_the_digest(project: Project, tmp_path: Path) -> None:
    name = files_playbook(project, tmp_path / "out")
    rec = plans.create_plan(project, path=name, actor="agent", origin="mcp")
    q = JobQueue(project)
    with pytest.raises(InvalidInput, match="not approved"):
        q.submit(rec.id, actor="agent")
    with pytest.raises(Exception, match="not the sha256:beef"):
        approvals.approve(project, rec.id, approver="bob", how="http", digest="sha256:beef")
    with pytest.raises(InvalidInput, match="not approved"):
        q.submit(rec.id, actor="agent")
    assert q.list() == []
    # approved, then the stored plan changes: the approval no longer binds it
    approvals.approve(project, rec.id, approver="bob", how="http", digest=rec.digest)
    plan_file = project.state / "plans" / rec.id / "plan.json"
    doc = json.loads(plan_file.read_text())
    doc["steps"][1]["actions"] = []
    plan_file.write_text(json.dumps(doc))
    with pytest.raises(InvalidInput, match="not approved"):
        q.submit(rec.id, actor="agent")
    actions = [e["action"] for e in audit.read(project)]
    assert actions == ["plan", "submit_refused", "approve_refused", "submit_refused", "approve", "submit_refused"]
    assert not (tmp_path / "out").exists()


def test_drift_between_approval_and_apply_is_refused_naming_the_fact(project: Project, tmp_path: Path) -> None:
    out = tmp_path / "out"
    name = files_playbook(project, out)
    rec = approved(project, name)
    q = JobQueue(project)
    job = q.submit(rec.id, actor="alice", retries=2)
    out.mkdir()
    (out / "motd").write_text("someone else wrote this\n")  # the state moves after the approval
    worker = Worker(project, q)
    try:
        done = worker.run_once()
    finally:
        worker.close()
    assert done is not None and done.state == "failed" and done.attempts == 1  # drift is never retried
    assert "state moved since the plan was made" in (done.error or "")
    assert "step 'motd' on local" in (done.error or "") and "facts that changed:" in (done.error or "")
    assert (out / "motd").read_text() == "someone else wrote this\n"
    assert audit.read(project)[-1]["state"] == "failed"
    assert job.id == done.id


def test_priorities_then_fifo(project: Project, tmp_path: Path) -> None:
    rec = approved(project, files_playbook(project, tmp_path / "out"))
    q = JobQueue(project)
    low = q.submit(rec.id, actor="a", priority=0)
    high1 = q.submit(rec.id, actor="a", priority=5)
    mid = q.submit(rec.id, actor="a", priority=1)
    high2 = q.submit(rec.id, actor="a", priority=5)
    order = []
    while (job := q.claim(os.getpid(), "test")) is not None:
        order.append(job.id)
    assert order == [high1.id, high2.id, mid.id, low.id]
    with pytest.raises(InvalidInput, match="out of range"):
        q.submit(rec.id, actor="a", priority=10**6)


def test_cancel_a_queued_job_at_once(project: Project, tmp_path: Path) -> None:
    rec = approved(project, files_playbook(project, tmp_path / "out"))
    q = JobQueue(project)
    job = q.submit(rec.id, actor="alice")
    got = q.cancel(job.id, actor="carol")
    assert got.state == "cancelled" and got.cancel_by == "carol" and got.ended
    worker = Worker(project, q)
    try:
        assert worker.run_once() is None
    finally:
        worker.close()
    assert not (tmp_path / "out").exists()
    with pytest.raises(InvalidInput, match="already ended"):
        q.cancel(job.id, actor="carol")
    cancel = audit.read(project)[-1]
    assert (cancel["actor"], cancel["action"], cancel["job_id"], cancel["was"]) == ("carol", "cancel", job.id, "queued")


def test_cancel_a_running_job_stops_it_like_ctrl_c(project: Project, tmp_path: Path) -> None:
    out = tmp_path / "out"
    name = write(project, "slow.yaml", f"""\
  - id: first
    file: {{path: {out}, state: directory}}
  - id: nap
    run: sleep 1
  - id: last
    file: {{path: {out}/last, content: "x"}}
""")
    rec = approved(project, name)
    q = JobQueue(project)
    with running_worker(project, poll_s=0.05):
        job = q.submit(rec.id, actor="alice")

        def napping() -> bool:
            j = q.get(job.id)
            return bool(j.run_id) and any(
                e.get("type") == "step_start" and e.get("instance") == "nap"
                for e in get_run(j.run_id, project.state).events)

        wait_for(napping, what="the nap step to start")
        assert q.cancel(job.id, actor="carol").state == "running"  # asked; the worker stops it
        wait_for(lambda: q.get(job.id).final, what="the job to end")
    final = q.get(job.id)
    assert final.state == "cancelled" and final.error == "cancelled by carol"
    assert out.is_dir() and not (out / "last").exists()  # stopped after the current action
    run = get_run(str(final.run_id), project.state)
    assert run.outcome == "interrupted"
    assert [e["action"] for e in audit.read(project)][-2:] == ["cancel", "apply_end"]


def test_a_failed_job_is_retried_by_resuming_its_run(project: Project, tmp_path: Path) -> None:
    count, flag = tmp_path / "count", tmp_path / "flag"
    name = write(project, "flaky.yaml", f"""\
  - id: once
    run: echo x >> {count}
  - id: flaky
    run: test -f {flag} || {{ touch {flag}; exit 1; }}
""")
    rec = approved(project, name)
    q = JobQueue(project)
    job = q.submit(rec.id, actor="alice", retries=1)
    worker = Worker(project, q)
    try:
        first = worker.run_once()
        assert first is not None and first.state == "queued" and first.attempts == 1 and first.run_id
        second = worker.run_once()
    finally:
        worker.close()
    assert second is not None and second.state == "succeeded" and second.attempts == 2
    assert second.run_id == first.run_id  # the same run, resumed
    assert count.read_text() == "x\n"  # the recorded step did not run again
    events = get_run(str(second.run_id), project.state).events
    assert any(e["type"] == "step_done_earlier" and e["step"] == "once" for e in events)
    assert [e.get("state") for e in q.events(job.id) if e["source"] == "job" and e["type"] == "job"] == [
        "queued", "running", "queued", "running", "succeeded"]


def test_a_job_out_of_retries_fails(project: Project, tmp_path: Path) -> None:
    name = write(project, "bad.yaml", "  - id: boom\n    run: exit 3\n")
    rec = approved(project, name)
    q = JobQueue(project)
    q.submit(rec.id, actor="alice")
    worker = Worker(project, q)
    try:
        done = worker.run_once()
    finally:
        worker.close()
    assert done is not None and done.state == "failed" and done.attempts == 1 and done.error


def test_one_worker_per_project(project: Project) -> None:
    from runner.errors import LockError

    q = JobQueue(project)
    a = Worker(project, q)
    a.recover()
    try:
        with pytest.raises(LockError, match="another worker"):
            Worker(project, q, lock_wait_s=0.2).recover()
    finally:
        a.close()
    b = Worker(project, q)
    assert b.recover() == []
    b.close()


def test_secrets_stay_out_of_jobs_audit_and_plans(project: Project, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSRUN_SECRET_JOB_TOK", CANARY)
    out = tmp_path / "out"
    name = write(project, "secret.yaml", f"""\
  - id: conf
    file:
      path: {out}
      content: "token={{{{ secret('JOB_TOK') }}}}\\n"
  - id: say
    run: echo "{{{{ secret('JOB_TOK') }}}}"
""")
    rec = approved(project, name)
    q = JobQueue(project)
    job = q.submit(rec.id, actor="alice")
    worker = Worker(project, q)
    try:
        done = worker.run_once()
    finally:
        worker.close()
    assert done is not None and done.state == "succeeded", done.error
    assert out.read_text() == f"token={CANARY}\n"  # the target got the value
    assert CANARY not in json.dumps(q.events(job.id))
    for path in project.state.rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), path


def test_events_and_list(project: Project, tmp_path: Path) -> None:
    rec = approved(project, files_playbook(project, tmp_path / "out"))
    q = JobQueue(project)
    a = q.submit(rec.id, actor="a")
    b = q.submit(rec.id, actor="a")
    assert [j.id for j in q.list()] == [b.id, a.id]
    assert [j.id for j in q.list(state="queued", limit=1)] == [b.id]
    with pytest.raises(InvalidInput):
        q.list(state="nope")
    with pytest.raises(InvalidInput, match="no job"):
        q.get("job-x")
    assert q.events(a.id)[0]["state"] == "queued"
    assert set(q.get(a.id).to_json()) >= {"id", "plan_id", "state", "priority", "attempts", "max_retries",
                                          "run_id", "created", "started", "ended", "actor", "error"}


def test_a_retry_still_holds_the_rest_of_the_run_to_the_approved_plan(project: Project, tmp_path: Path) -> None:
    """The resumed attempt skips the finished steps but checks the others against the approved
    plan: a target file changed in between is drift, named, and not applied."""
    out, flag = tmp_path / "out", tmp_path / "flag"
    name = write(project, "later.yaml", f"""\
  - id: dir
    file: {{path: {out}, state: directory}}
  - id: flaky
    run: test -f {flag} || {{ touch {flag}; exit 1; }}
  - id: motd
    file: {{path: {out}/motd, content: "planned\\n"}}
""")
    rec = approved(project, name)
    q = JobQueue(project)
    q.submit(rec.id, actor="alice", retries=3)
    worker = Worker(project, q)
    try:
        first = worker.run_once()
        assert first is not None and first.state == "queued"
        (out / "motd").write_text("moved\n")  # between the attempts
        second = worker.run_once()
    finally:
        worker.close()
    assert second is not None and second.state == "failed" and second.attempts == 2
    assert "step 'motd' on local" in (second.error or "") and "facts that changed:" in (second.error or "")
    assert "step 'dir'" not in (second.error or "")  # finished before: not held to the plan again
    assert "--allow-drift" not in (second.error or "")
    assert (out / "motd").read_text() == "moved\n"


def test_a_worker_thread_that_cannot_take_the_project_says_so_and_stops(project: Project) -> None:
    """runner.service.worker.WorkerThread (what `opsrun serve` runs): while another worker holds
    the project, one without retry_s stops with the reason kept in `error` (/health: `stopped`)
    and the queue still takes jobs; serve's (retry_s) waits (/health: `waiting`) and takes over
    once the project is free."""
    from runner.service.worker import WorkerThread

    with running_worker(project, poll_s=0.05):
        second = WorkerThread(project, poll_s=0.05)
        second.worker.lock_wait_s = 0.2
        assert second.state() == "unavailable"
        second.start()
        wait_for(lambda: second.state() == "stopped", what="the second worker to give up")
        assert "worker" in second.error.lower() and second.error
        assert second.queue.list() is not None
        patient = WorkerThread(project, poll_s=0.05, retry_s=0.1)  # serve's: it waits its turn
        patient.worker.lock_wait_s = 0.1
        patient.start()
        wait_for(lambda: patient.state() == "waiting", what="the patient worker to wait")
        assert "another worker" in patient.error
    wait_for(lambda: patient.state() == "running" and not patient.error, what="it to take over")
    patient.stop()
    assert patient.state() == "stopped" and not patient.error
