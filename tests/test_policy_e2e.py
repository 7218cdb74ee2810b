"""Retry, verify, undo/rollback, escalation to a human (terminal and CI), resume after a
human or a crash, Ctrl-C, and secrets kept out of every output: end to end on `local`."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

CANARY = "s3cr3t-CANARY-7c1f"


def opsrun(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=cwd, text=True, capture_output=True,
                          env={**os.environ, **(env or {})}, timeout=120, stdin=subprocess.DEVNULL)


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def events(cwd: Path, run_id: str | None = None) -> list[dict[str, Any]]:
    runs = sorted((cwd / ".opsrun" / "runs").iterdir())
    run = next(r for r in runs if r.name == run_id) if run_id else runs[-1]
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines() if line.strip()]


def dead_gateway(project: Path, port: int) -> None:
    """The llm rung's gateway for a project: one provider that refuses connections (loopback)."""
    (project / "gateway.yaml").write_text(
        "opsrun: 1\nproviders:\n"
        f"  dead: {{kind: openai, model: m, api_base: 'http://127.0.0.1:{port}/v1'}}\n"
        "routing: {retries_per_provider: 0, deadline_s: 5}\ncache: {enabled: false}\n"
    )


def wait_for(predicate: Any, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_flaky_command_succeeds_on_third_attempt(tmp_path: Path) -> None:
    write(tmp_path / "p.yaml", f"""\
        opsrun: 1
        name: flaky
        hosts: local
        policy:
          retry: {{attempts: 3, delay: 0.05, backoff: 2}}
        steps:
          - id: flaky
            run: n=$(cat {tmp_path}/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > {tmp_path}/n; [ $n -ge 3 ]
    """)
    p = opsrun("apply", "p.yaml", "--yes", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert (tmp_path / "n").read_text().strip() == "3"
    ev = events(tmp_path)
    assert [e["attempt"] for e in ev if e["type"] == "retry"] == [1, 2]
    delays = [e["delay"] for e in ev if e["type"] == "retry"]
    assert delays == [0.05, 0.1]
    assert "after 3 tries" in p.stdout


def test_retry_only_on_selected_failures(tmp_path: Path) -> None:
    write(tmp_path / "p.yaml", """\
        opsrun: 1
        name: sel
        hosts: local
        steps:
          - id: other
            policy: {retry: {attempts: 3, delay: 0, "on": [{rc: [75]}]}}
            run: exit 3
    """)
    p = opsrun("apply", "p.yaml", "--yes", cwd=tmp_path)
    assert p.returncode == 1
    assert not [e for e in events(tmp_path) if e["type"] == "retry"]


def test_failing_verify_is_retried_then_fails(tmp_path: Path) -> None:
    write(tmp_path / "p.yaml", f"""\
        opsrun: 1
        name: verify
        hosts: local
        steps:
          - id: deploy
            policy: {{retry: {{attempts: 2, delay: 0}}}}
            run: echo deployed >> {tmp_path}/log
            verify: grep -q healthy {tmp_path}/log
    """)
    p = opsrun("apply", "p.yaml", "--yes", cwd=tmp_path)
    assert p.returncode == 1
    assert "verify failed" in p.stdout
    assert (tmp_path / "log").read_text().count("deployed") == 2
    assert len([e for e in events(tmp_path) if e["type"] == "verify"]) == 2


def test_rollback_runs_undo_in_reverse_order(tmp_path: Path) -> None:
    d = tmp_path / "app"
    write(tmp_path / "p.yaml", f"""\
        opsrun: 1
        name: rollback
        hosts: local
        on_failure: rollback
        steps:
          - id: folder
            file: {{path: {d}, state: directory}}
            undo: {{file: {{path: {d}, state: absent}}}}
          - id: config
            file: {{path: {d}/conf, content: "x=1\\n"}}
            undo: rm -f {d}/conf && echo undone-config >> {tmp_path}/undo.log
          - id: migrate
            run: exit 9
          - id: never
            run: touch {tmp_path}/never
    """)
    p = opsrun("apply", "p.yaml", "--yes", cwd=tmp_path)
    assert p.returncode == 1
    assert not d.exists(), "the folder's undo removed it"
    assert (tmp_path / "undo.log").read_text() == "undone-config\n"
    assert not (tmp_path / "never").exists()
    ev = events(tmp_path)
    assert [e["step"] for e in ev if e["type"] == "undo_end"] == ["config", "folder"]
    assert all(e["ok"] for e in ev if e["type"] == "undo_end")


class _Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Any:
    _Hook.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", _Hook.received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_ci_escalation_stops_with_exit_3_then_resume(tmp_path: Path, webhook: Any, closed_port: int) -> None:
    url, received = webhook
    marker = tmp_path / "ready"
    dead_gateway(tmp_path, closed_port)
    write(tmp_path / "p.yaml", f"""\
        opsrun: 1
        name: esc
        hosts: local
        policy:
          retry: {{attempts: 2, delay: 0}}
          escalate: [llm, human]
          notify: {{webhook: "{url}"}}
        steps:
          - id: first
            run: echo ran >> {tmp_path}/first.log
          - id: needs_marker
            run: test -f {marker} || {{ echo "marker missing token={{{{ secret('CANARY') }}}}" >&2; exit 4; }}
          - id: last
            run: echo ran >> {tmp_path}/last.log
    """)
    env = {"OPSRUN_SECRET_CANARY": CANARY}
    p = opsrun("apply", "p.yaml", "--yes", cwd=tmp_path, env=env)
    assert p.returncode == 3, p.stdout + p.stderr
    assert "stopped for a human decision" in p.stderr and "opsrun apply --resume" in p.stderr
    run_id = sorted((tmp_path / ".opsrun" / "runs").iterdir())[-1].name
    report = (tmp_path / ".opsrun" / "runs" / run_id / "escalation.md").read_text()
    assert "needs_marker" in report and "exit code: 4" in report and f"--resume {run_id}" in report
    assert "marker missing" in report and CANARY not in report and "token=***" in report
    assert len(received) == 1 and received[0]["step_id"] == "needs_marker"
    assert CANARY not in json.dumps(received)
    ev = events(tmp_path)
    fixes = [e for e in ev if e["type"] == "llm_fix"]
    assert fixes and not fixes[0]["ok"] and "dead" in fixes[0]["error"], fixes  # then on to the human
    assert ev[-1]["type"] == "run_end" and ev[-1]["outcome"] == "waiting_for_human"
    assert not (tmp_path / "last.log").exists()
    assert not (tmp_path / ".opsrun" / "lock").exists()
    # the human fixes the cause, then resumes: `first` is not re-run, the failed step is
    marker.write_text("ok")
    r = opsrun("apply", "--resume", run_id, "--yes", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "first.log").read_text() == "ran\n"
    assert (tmp_path / "last.log").read_text() == "ran\n"
    ev = events(tmp_path, run_id)
    assert ev[-1]["outcome"] == "ok" and any(e["type"] == "resume" for e in ev)
    again = opsrun("apply", "--resume", run_id, cwd=tmp_path)
    assert again.returncode == 4 and "nothing to resume" in again.stderr


def _pty_run(args: list[str], cwd: Path, answers: list[tuple[str, str]], timeout: float = 60) -> tuple[int, str]:
    """Run opsrun on a pseudo-terminal, answering prompts: [(text to wait for, reply)]."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=cwd, stdin=slave, stdout=slave,
                            stderr=slave, env={**os.environ, "NO_COLOR": "1"}, start_new_session=True)
    os.close(slave)
    out = b""
    pending = list(answers)
    end = time.monotonic() + timeout
    try:
        while time.monotonic() < end:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
            if pending and pending[0][0].encode() in out.split(b"\x00")[-1]:
                _, reply = pending.pop(0)
                out += b"\x00"  # answered up to here
                os.write(master, reply.encode() + b"\r")
            if proc.poll() is not None and not ready:
                break
        rc = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return rc, out.replace(b"\x00", b"").decode(errors="replace")


def test_terminal_escalation_prompt_edit_then_retry(tmp_path: Path) -> None:
    write(tmp_path / "p.yaml", f"""\
        opsrun: 1
        name: tty
        hosts: local
        policy: {{escalate: [human]}}
        steps:
          - id: broken
            run: exit 5
          - id: after
            run: touch {tmp_path}/after
    """)
    rc, out = _pty_run(["apply", "p.yaml"], tmp_path, [
        ("Apply these changes?", "y"),
        ("show full [o]utput?", "o"),
        ("show full [o]utput?", "e"),
        ("new command", f"touch {tmp_path}/edited"),
    ])
    assert rc == 0, out
    assert (tmp_path / "edited").exists() and (tmp_path / "after").exists()
    assert "--- stdout" in out
    decisions = [e for e in events(tmp_path) if e["type"] == "human_decision"]
    assert decisions and decisions[-1]["choice"] == "edit"


def test_sigkill_mid_apply_then_resume(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    write(tmp_path / "p.yaml", f"""\
        opsrun: 1
        name: crash
        hosts: local
        steps:
          - id: one
            run: echo one >> {tmp_path}/count
          - id: slow
            run: if [ -f {gate} ]; then echo fast; else touch {gate}; sleep 60; fi
          - id: three
            run: echo three >> {tmp_path}/count
    """)
    proc = subprocess.Popen([sys.executable, "-m", "runner", "apply", "p.yaml", "--yes"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(gate.exists)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    run_dir = sorted((tmp_path / ".opsrun" / "runs").iterdir())[-1]
    # a torn last line must not make the journal unreadable
    with (run_dir / "events.jsonl").open("a") as fh:
        fh.write('{"seq": 999, "type": "attem')
    listed = opsrun("runs", "show", run_dir.name, cwd=tmp_path)
    assert listed.returncode == 0 and "interrupted or is still going" in listed.stdout
    assert (tmp_path / ".opsrun" / "lock").exists(), "the dead run's lock stays behind"
    r = opsrun("apply", "--resume", run_dir.name, "--yes", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "stale lock" in r.stderr
    assert (tmp_path / "count").read_text() == "one\nthree\n"  # `one` was not re-run


def test_sigkill_mid_apply_on_many_hosts_then_resume_repeats_nothing(tmp_path: Path) -> None:
    """The journal's group commit (one fsync for every host ending a step meanwhile) keeps
    what resume needs: kill -9 while 6 hosts run their third step, resume, and every host ran
    each step exactly once (the first two were recorded, the killed one runs again)."""
    hosts = [f"h{i}" for i in range(6)]
    write(tmp_path / "inventory.yaml", "opsrun: 1\nhosts:\n" + "".join(
        f"  {h}: {{transport: local, vars: {{d: '{tmp_path / h}'}}}}\n" for h in hosts))
    for h in hosts:
        (tmp_path / h).mkdir()
    write(tmp_path / "p.yaml", """\
        opsrun: 1
        name: crash many
        hosts: all
        steps:
          - id: one
            run: echo one >> {{ d }}/count
          - id: two
            run: echo two >> {{ d }}/count
          - id: slow
            run: if [ -f {{ d }}/gate ]; then echo fast; else touch {{ d }}/gate; sleep 60; fi
          - id: three
            run: echo three >> {{ d }}/count
    """)
    proc = subprocess.Popen([sys.executable, "-m", "runner", "apply", "p.yaml", "-i", "inventory.yaml", "--yes"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_for(lambda: all((tmp_path / h / "gate").exists() for h in hosts))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    run_dir = sorted((tmp_path / ".opsrun" / "runs").iterdir())[-1]
    done = [(e["host"], e["step"]) for e in events(tmp_path, run_dir.name) if e["type"] == "register"]
    assert sorted(done) == sorted((h, s) for h in hosts for s in ("one", "two"))
    r = opsrun("apply", "--resume", run_dir.name, "-i", "inventory.yaml", "--yes", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    for h in hosts:
        assert (tmp_path / h / "count").read_text() == "one\ntwo\nthree\n", h


def test_ctrl_c_stops_after_current_action_and_releases_lock(tmp_path: Path) -> None:
    started = tmp_path / "started"
    write(tmp_path / "p.yaml", f"""\
        opsrun: 1
        name: intr
        hosts: local
        steps:
          - id: slow
            run: touch {started}; sleep 2; echo done > {tmp_path}/slow
          - id: next
            run: touch {tmp_path}/next
    """)
    proc = subprocess.Popen([sys.executable, "-m", "runner", "apply", "p.yaml", "--yes"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(started.exists)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, out + err
    assert (tmp_path / "slow").read_text() == "done\n", "the current action finished"
    assert not (tmp_path / "next").exists()
    assert "stopping after the current action" in err
    assert events(tmp_path)[-1]["outcome"] == "interrupted"
    assert not (tmp_path / ".opsrun" / "lock").exists()


def test_secret_canary_never_leaks(tmp_path: Path, closed_port: int) -> None:
    dead_gateway(tmp_path, closed_port)
    (tmp_path / "token").write_text(CANARY + "\n")
    write(tmp_path / "p.yaml", f"""\
        opsrun: 1
        name: canary
        hosts: local
        policy: {{escalate: [llm, human]}}
        steps:
          - id: conf
            file: {{path: {tmp_path}/app.env, content: "TOKEN={{{{ secret('CANARY') }}}}\\n"}}
          - id: use
            run: echo "using {{{{ secret('CANARY') }}}}"
          - id: hidden
            sensitive: true
            run: echo "{{{{ secret('CANARY') }}}}" | rev
          - id: fails
            run: echo "bad token {{{{ secret('CANARY') }}}}" >&2; exit 2
    """)
    env = {"OPSRUN_SECRET_CANARY": CANARY}
    outputs = []
    for fmt in ("text", "json", "markdown"):
        p = opsrun("plan", "p.yaml", "--format", fmt, "-o", f"plan-{fmt}.json", cwd=tmp_path, env=env)
        assert p.returncode == 0, p.stderr
        outputs += [p.stdout, p.stderr, (tmp_path / f"plan-{fmt}.json").read_text()]
    a = opsrun("apply", "p.yaml", "--yes", cwd=tmp_path, env=env)
    assert a.returncode == 3
    outputs += [a.stdout, a.stderr]
    j = opsrun("apply", "p.yaml", "--yes", "--json", cwd=tmp_path, env=env)
    outputs += [j.stdout, j.stderr]
    for run in (tmp_path / ".opsrun" / "runs").iterdir():
        for f in run.iterdir():
            outputs.append(f.read_text())
        outputs.append(opsrun("runs", "show", run.name, cwd=tmp_path).stdout)
        outputs.append(opsrun("runs", "show", run.name, "--json", cwd=tmp_path).stdout)
    assert (tmp_path / "app.env").read_text() == f"TOKEN={CANARY}\n", "the real value reached the target"
    assert CANARY[::-1] not in "".join(outputs), "sensitive output is hidden"
    leaks = [o for o in outputs if CANARY in o]
    assert not leaks, leaks[0][:2000]
    assert any("***" in o for o in outputs)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_like_ctrl_c(tmp_path: Path, sig: signal.Signals) -> None:
    started = tmp_path / "started"
    write(tmp_path / "p.yaml", f"""\
        opsrun: 1
        name: term
        hosts: local
        steps:
          - id: slow
            run: touch {started}; sleep 2; echo done > {tmp_path}/slow
          - id: next
            run: touch {tmp_path}/next
    """)
    proc = subprocess.Popen([sys.executable, "-m", "runner", "apply", "p.yaml", "--yes"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(started.exists)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, out + err
    assert (tmp_path / "slow").read_text() == "done\n", "the current action finished"
    assert not (tmp_path / "next").exists()
    assert f"stopping after the current action ({sig.name}" in err
    assert events(tmp_path)[-1]["type"] == "run_end" and events(tmp_path)[-1]["outcome"] == "interrupted"
    assert not (tmp_path / ".opsrun" / "lock").exists()


def test_a_second_sigterm_stops_at_once_and_kills_the_step(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    write(tmp_path / "p.yaml", f"""\
        opsrun: 1
        name: term2
        hosts: local
        steps:
          - id: slow
            run: sleep 30 & echo $! > {pidfile}; wait
    """)
    proc = subprocess.Popen([sys.executable, "-m", "runner", "apply", "p.yaml", "--yes"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip())
        sleeper = int(pidfile.read_text())
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        wait_for(lambda: not _running(sleeper), timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and "interrupted" in err, out + err
    assert events(tmp_path)[-1]["outcome"] == "interrupted"
    assert not (tmp_path / ".opsrun" / "lock").exists()


def _running(pid: int) -> bool:
    """Alive and not a zombie (a killed child of a dead parent may linger unreaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _watchdog_of(pid: int) -> int:
    """The opsrun watchdog started by process `pid`."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid and b"opsrun watchdog" in cmdline:
                return int(entry.name)
    raise AssertionError(f"no watchdog under pid {pid}")


SLEEPER = """\
    opsrun: 1
    name: orphan
    hosts: local
    steps:
      - id: first
        run: echo first >> {d}/count
      - id: slow
        run: sleep 30 & echo $! > {d}/pid; wait
      - id: last
        run: echo last >> {d}/count
"""


def _start_and_kill(tmp_path: Path, *, kill_watchdog: bool) -> int:
    """Apply the sleeper playbook, SIGKILL opsrun (and its watchdog) during `slow`; return the sleep's pid."""
    write(tmp_path / "p.yaml", SLEEPER.format(d=tmp_path))
    pidfile = tmp_path / "pid"
    proc = subprocess.Popen([sys.executable, "-m", "runner", "apply", "p.yaml", "--yes"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip())
        if kill_watchdog:
            os.kill(_watchdog_of(proc.pid), signal.SIGKILL)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return int(pidfile.read_text())


def test_sigkill_of_opsrun_stops_the_steps_process_group(tmp_path: Path) -> None:
    sleeper = _start_and_kill(tmp_path, kill_watchdog=False)
    try:
        wait_for(lambda: not _running(sleeper), timeout=10)  # the watchdog's TERM
    finally:
        if _running(sleeper):
            os.kill(sleeper, signal.SIGKILL)
    [proc_ev] = [e for e in events(tmp_path) if e["type"] == "process" and e.get("pgid") != proc_ev_first(tmp_path)]
    assert proc_ev["host"] == "local" and proc_ev["transport"] == "local" and proc_ev["start"] > 0
    r = opsrun("apply", "--resume", events(tmp_path)[0]["run_id"], "--yes", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "count").read_text() == "first\nlast\n"


def proc_ev_first(tmp_path: Path) -> int:
    """The process group journaled for the step `first` (it finished)."""
    evs = events(tmp_path)
    start = next(i for i, e in enumerate(evs) if e["type"] == "step_start" and e["step"] == "first")
    return int(next(e for e in evs[start:] if e["type"] == "process")["pgid"])


def test_resume_refuses_while_the_earlier_copy_of_the_step_still_runs(tmp_path: Path) -> None:
    sleeper = _start_and_kill(tmp_path, kill_watchdog=True)  # nothing is left to stop the step
    run_id = events(tmp_path)[0]["run_id"]
    try:
        assert _running(sleeper)
        r = opsrun("apply", "--resume", run_id, "--yes", cwd=tmp_path)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "not resuming" in r.stderr and "step 'slow' on local" in r.stderr and "kill -TERM --" in r.stderr
        assert "Traceback" not in r.stderr
        assert (tmp_path / "count").read_text() == "first\n", "nothing ran again"
    finally:
        os.kill(sleeper, signal.SIGKILL)
    wait_for(lambda: not _running(sleeper))
    time.sleep(0.2)  # the step's shell notices and ends
    r = opsrun("apply", "--resume", run_id, "--yes", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "count").read_text() == "first\nlast\n"
