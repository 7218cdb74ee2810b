"""The terminal side of runner.service: `opsrun plans create|list|show`, `opsrun approve`
(--yes, --digest, no terminal), `opsrun jobs submit|list|show|cancel|work`, and a worker
process (`opsrun jobs work`) killed with SIGKILL mid-job whose job a new worker resumes from its
journal without repeating the step that finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner.journal import get_run
from runner.service import approvals, audit, plans
from runner.service.jobs import JobQueue
from runner.service.project import Project
from runner.service.worker import running_worker
from tests.oracle import Oracle

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    monkeypatch.delenv("OPSRUN_STATE_DIR", raising=False)
    root = tmp_path / "proj"
    root.mkdir()
    return Project.at(root)


def test_plans_approve_and_jobs_commands(project: Project, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (project.root / "site.yaml").write_text(
        f"opsrun: 1\nname: site\nhosts: local\nsteps:\n  - id: motd\n    file: {{path: {out}, content: hi}}\n")
    cli = Oracle(project.root, in_process=True)
    made = cli.opsrun("plans", "create", "site.yaml", "--json")
    assert made.rc == 0, made.show()
    doc = json.loads(made.stdout)
    plan_id, digest = doc["id"], doc["digest"]
    assert doc["approved"] is False and doc["counts"]["change"] == 1

    listed = cli.opsrun("plans", "list")
    assert plan_id in listed.stdout and " no " in listed.stdout

    early = cli.opsrun("jobs", "submit", plan_id)
    assert early.rc == 4 and "not approved" in early.stderr

    no_tty = cli.opsrun("approve", plan_id)
    assert no_tty.rc == 1 and "no terminal to confirm on" in no_tty.stderr
    assert f"digest: {digest}" in no_tty.stdout and "create file" in no_tty.stdout  # shown before asking

    wrong = cli.opsrun("approve", plan_id, "--yes", "--digest", "sha256:00")
    assert wrong.rc == 1 and "not the sha256:00 that was reviewed" in wrong.stderr
    assert approvals.approval_of(project, plan_id) is None

    ok = cli.opsrun("approve", plan_id, "--yes", "--digest", digest)
    assert ok.rc == 0 and f"approved plan {plan_id}" in ok.stdout, ok.show()
    shown = cli.opsrun("plans", "show", plan_id)
    assert "approved by" in shown.stdout

    sub = cli.opsrun("jobs", "submit", plan_id, "--priority", "3", "--json")
    assert sub.rc == 0, sub.show()
    job_id = json.loads(sub.stdout)["id"]
    other = json.loads(cli.opsrun("jobs", "submit", plan_id, "--json").stdout)["id"]
    cancelled = cli.opsrun("jobs", "cancel", other)
    assert cancelled.rc == 0 and f"cancelled {other}" in cancelled.stdout

    work = cli.opsrun("jobs", "work", "--once")
    assert work.rc == 0 and f"{job_id}: succeeded" in work.stderr, work.show()
    assert out.read_text() == "hi"
    rows = json.loads(cli.opsrun("jobs", "list", "--json").stdout)
    assert [(r["id"], r["state"]) for r in rows] == [(other, "cancelled"), (job_id, "succeeded")]
    show = cli.opsrun("jobs", "show", job_id)
    assert "succeeded" in show.stdout and "motd" in show.stdout
    actions = [e["action"] for e in audit.read(project)]
    assert actions == ["plan", "submit_refused", "approve_refused", "approve", "submit", "submit", "cancel",
                       "apply_start", "apply_end"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OPSRUN_STATE_DIR"}
    env["PYTHONPATH"] = str(ROOT)
    return env


def _slow_job(project: Project, tmp_path: Path) -> tuple[JobQueue, str, Path, Path]:
    count, out = tmp_path / "count", tmp_path / "done"
    (project.root / "slow.yaml").write_text(f"""\
opsrun: 1
name: slow
hosts: local
steps:
  - id: once
    run: echo x >> {count}
  - id: nap
    run: sleep 2
  - id: last
    file: {{path: {out}, content: "ok"}}
""")
    rec = plans.create_plan(project, path="slow.yaml", actor="alice", origin="cli")
    approvals.approve(project, rec.id, approver="bob", how="terminal", digest=rec.digest)
    q = JobQueue(project)
    job = q.submit(rec.id, actor="alice")
    return q, job.id, count, out


def _worker_stopped_in_nap(project: Project, q: JobQueue, job_id: str, sig: int) -> int:
    """Start `opsrun jobs work` in a process, send it `sig` once the job's `nap` step runs; its exit code."""
    proc = subprocess.Popen([sys.executable, "-m", "runner", "jobs", "work", "--poll", "0.05"], cwd=project.root,
                            env=_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert time.monotonic() < deadline, "the worker never reached the nap step"
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            j = q.get(job_id)
            if j.run_id and any(e.get("type") == "step_start" and e.get("instance") == "nap"
                                for e in get_run(j.run_id, project.state).events):
                break
            time.sleep(0.05)
        os.kill(proc.pid, sig)
        return proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()


def _resumed(project: Project, q: JobQueue, job_id: str) -> None:
    with running_worker(project, poll_s=0.05):
        deadline = time.monotonic() + 30
        while not q.get(job_id).final:
            assert time.monotonic() < deadline, q.events(job_id)
            time.sleep(0.05)


def test_a_worker_killed_mid_job_is_resumed_and_nothing_runs_twice(project: Project, tmp_path: Path) -> None:
    q, job_id, count, out = _slow_job(project, tmp_path)
    assert _worker_stopped_in_nap(project, q, job_id, signal.SIGKILL) == -signal.SIGKILL
    left = q.get(job_id)
    assert left.state == "running" and count.read_text() == "x\n" and not out.exists()

    _resumed(project, q, job_id)
    final = q.get(job_id)
    assert final.state == "succeeded", final.error
    assert final.run_id == left.run_id  # the same run, resumed from its journal
    assert count.read_text() == "x\n"  # the step that finished before the kill did not run again
    assert out.read_text() == "ok"
    events = get_run(str(final.run_id), project.state).events
    assert [e["step"] for e in events if e["type"] == "step_done_earlier"] == ["once"]
    assert next(e for e in events if e["type"] == "resume")["finished"] == ["local/once"]
    ran_once = [e for e in events if e["type"] == "step_end" and e.get("instance") == "once"]
    assert len(ran_once) == 1
    naps = [e for e in events if e["type"] == "step_end" and e.get("instance") == "nap"]
    assert len(naps) == 1 and naps[0]["status"] == "changed"  # the step the kill cut short ran again, to its end
    recover = [e for e in audit.read(project) if e["action"] == "recover"]
    assert len(recover) == 1 and recover[0]["job_id"] == job_id and recover[0]["was"] == "running"


def test_a_worker_stopped_by_sigterm_leaves_the_job_interrupted_then_resumed(project: Project,
                                                                            tmp_path: Path) -> None:
    q, job_id, count, out = _slow_job(project, tmp_path)
    assert _worker_stopped_in_nap(project, q, job_id, signal.SIGTERM) == 0  # stops like Ctrl-C, after `nap`
    left = q.get(job_id)
    assert left.state == "interrupted" and not out.exists()
    assert get_run(str(left.run_id), project.state).outcome == "interrupted"
    _resumed(project, q, job_id)
    final = q.get(job_id)
    assert final.state == "succeeded" and final.run_id == left.run_id, final.error
    assert count.read_text() == "x\n" and out.read_text() == "ok"
    events = get_run(str(final.run_id), project.state).events
    assert sorted(e["step"] for e in events if e["type"] == "step_done_earlier") == ["nap", "once"]
