"""The CLI end to end over SSH against real sshd processes on 127.0.0.x: several hosts in
parallel, idempotence, an unreachable host, a changed host key, serial batches, sudo."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.oracle import Oracle
from tests.peers.sshd import Sshd, SshdFarm, free_port

ROOT = Path(__file__).resolve().parent.parent
WEB = str(ROOT / "playbooks" / "web.yaml")


def opsrun(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=cwd, text=True,
                          capture_output=True, env=dict(os.environ), timeout=120)


def inventory(path: Path, hosts: dict[str, dict[str, Any]], groups: dict[str, list[str]]) -> Path:
    doc = {"opsrun": 1, "hosts": {n: {"transport": "ssh", **s} for n, s in hosts.items()},
           "groups": {g: {"hosts": hs} for g, hs in groups.items()}}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def events(project: Path) -> list[dict[str, Any]]:
    runs = sorted((project / ".opsrun" / "runs").iterdir())
    return [json.loads(line) for line in (runs[-1] / "events.jsonl").read_text().splitlines()]


@pytest.fixture
def site(tmp_path: Path, remote_dir: str) -> Callable[..., Path]:
    """A per-test project folder; every host deploys into remote_dir/<host> (they share a disk)."""
    def make(hosts: dict[str, dict[str, Any]]) -> Path:
        inventory(tmp_path / "inventory.yaml", hosts, {"web": list(hosts)})
        for name, settings in hosts.items():
            settings.setdefault("vars", {})["site_root"] = f"{remote_dir}/{name}"
        inventory(tmp_path / "inventory.yaml", hosts, {"web": list(hosts)})
        return tmp_path
    return make


def test_web_example_on_three_hosts_is_idempotent(ssh_hosts: list[Sshd], site: Callable[..., Path],
                                                  remote_dir: str) -> None:
    project = site({h.name: h.settings() for h in ssh_hosts[:3]})
    logins_before = {h.name: h.log.count("Accepted publickey") for h in ssh_hosts[:3]}
    plan = opsrun("plan", WEB, "--detailed-exitcode", cwd=project)
    assert plan.returncode == 2, plan.stdout + plan.stderr
    assert "Plan: 15 to change, 6 unchanged on 3 hosts" in plan.stdout
    first = opsrun("apply", WEB, "--yes", cwd=project)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Apply: 15 changed" in first.stdout
    for h in ssh_hosts[:3]:
        page = Path(remote_dir, h.name, "index.html")
        assert f"Welcome from {h.name}" in page.read_text()
        assert pwd.getpwuid(page.stat().st_uid).pw_name == h.user
        assert oct(page.stat().st_mode & 0o777) == "0o644"
    again = opsrun("apply", WEB, "--yes", cwd=project)
    assert again.returncode == 0 and "Apply: 0 changed" in again.stdout, again.stdout
    assert opsrun("plan", WEB, "--detailed-exitcode", cwd=project).returncode == 0
    # one connection per host per run (probes and actions share it): 4 runs, 4 logins each
    for h in ssh_hosts[:3]:
        assert h.log.count("Accepted publickey") - logins_before[h.name] == 4, h.name


def test_unreachable_host_is_reported_while_others_succeed(ssh_hosts: list[Sshd], site: Callable[..., Path],
                                                           remote_dir: str) -> None:
    good = ssh_hosts[0]
    dead_port = free_port("127.0.0.9")
    hosts = {good.name: good.settings(), "ghost": good.settings(address="127.0.0.9", port=dead_port)}
    project = site(hosts)
    plan = opsrun("plan", WEB, cwd=project)
    assert plan.returncode == 1
    assert "ghost" in plan.stdout and "unreachable" in plan.stdout and "refused" in plan.stdout
    applied = opsrun("apply", WEB, "--yes", cwd=project)
    assert applied.returncode == 1, applied.stdout
    assert Path(remote_dir, good.name, "index.html").is_file()
    recap = applied.stdout.split("Recap", 1)[1]
    header = next(line for line in recap.splitlines() if line.strip().startswith("host "))
    ghost_row = next(line for line in recap.splitlines() if line.strip().startswith("ghost"))
    assert dict(zip(header.split(), ghost_row.split(), strict=True))["unreachable"] == "1"
    assert "Traceback" not in applied.stderr


def test_changed_host_key_is_refused_under_strict(spare_sshd: Callable[..., Sshd], sshd_farm: SshdFarm,
                                                  site: Callable[..., Path], remote_dir: str) -> None:
    peer = spare_sshd("rekeyed")
    project = site({"rekeyed": peer.settings()})
    assert opsrun("plan", WEB, cwd=project).returncode == 0
    peer.restart(host_key=sshd_farm.new_host_key())  # same address and port, another key
    for mode in ("strict", "accept-new"):
        project = site({"rekeyed": peer.settings(known_hosts=mode)})
        p = opsrun("apply", WEB, "--yes", cwd=project)
        assert p.returncode == 1
        assert "host key" in (p.stdout + p.stderr).lower() and "changed" in (p.stdout + p.stderr).lower()
        assert not Path(remote_dir, "rekeyed").exists()


def test_serial_batches_run_one_after_another(ssh_hosts: list[Sshd], site: Callable[..., Path],
                                              tmp_path: Path) -> None:
    hosts = {h.name: h.settings() for h in ssh_hosts[:3]}
    project = site(hosts)
    pb = tmp_path / "serial.yaml"
    pb.write_text(Path(WEB).read_text().replace("hosts: web\n", "hosts: web\nserial: 1\n"))
    shutil.copytree(ROOT / "playbooks" / "templates", tmp_path / "templates")  # sources stay in the folder
    p = opsrun("apply", str(pb), "--yes", cwd=project)
    assert p.returncode == 0, p.stdout + p.stderr
    order = [e["host"] for e in events(project) if e["type"] == "step_end"]
    assert len(order) == 21
    # each host finishes all its steps before the next batch starts
    assert order == sorted(order, key=list(hosts).index)
    assert [e["hosts"] for e in events(project) if e["type"] == "batch_start"] == [[h] for h in hosts]


def test_free_strategy_and_forks(ssh_hosts: list[Sshd], site: Callable[..., Path], tmp_path: Path) -> None:
    project = site({h.name: h.settings() for h in ssh_hosts[:3]})
    pb = tmp_path / "free.yaml"
    pb.write_text(Path(WEB).read_text().replace("hosts: web\n", "hosts: web\nstrategy: free\n"))
    shutil.copytree(ROOT / "playbooks" / "templates", tmp_path / "templates")  # sources stay in the folder
    p = opsrun("apply", str(pb), "--yes", "--forks", "2", cwd=project)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Apply: 15 changed" in p.stdout


def test_sudo_becomes_root(ssh_hosts: list[Sshd], tmp_path: Path, remote_dir: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("the sudo test needs the sudoers drop-in that setup_ssh.sh installs as root")
    h = ssh_hosts[0]
    inventory(tmp_path / "inventory.yaml", {"box": h.settings(sudo=True)}, {})
    (tmp_path / "who.yaml").write_text(f"""\
opsrun: 1
name: who
hosts: box
steps:
  - id: whoami
    run: id -u > {remote_dir}/uid
  - id: owned
    file: {{path: {remote_dir}/root-file, content: "x", mode: "0600"}}
""")
    p = opsrun("apply", "who.yaml", "--yes", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert Path(remote_dir, "uid").read_text().strip() == "0"
    assert Path(remote_dir, "root-file").stat().st_uid == 0


def test_connection_dropped_mid_run_is_retried(spare_sshd: Callable[..., Sshd], tmp_path: Path,
                                               remote_dir: str) -> None:
    peer = spare_sshd("flaky")
    inventory(tmp_path / "inventory.yaml", {"flaky": peer.settings()}, {})
    started = Path(remote_dir, "started")
    (tmp_path / "drop.yaml").write_text(f"""\
opsrun: 1
name: drop
hosts: flaky
steps:
  - id: long
    policy: {{retry: {{attempts: 4, delay: 1, "on": [connection]}}}}
    run: echo try >> {remote_dir}/tries; touch {started}; sleep 2; echo done > {remote_dir}/done
  - id: after
    run: touch {remote_dir}/after
""")
    proc = subprocess.Popen([sys.executable, "-m", "runner", "apply", "drop.yaml", "--yes"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists()
        peer.stop()  # sshd and its sessions die mid-command
        peer.start()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out + err
    ev = events(tmp_path)
    assert any(e["type"] == "retry" and e["failure"] == "connection" for e in ev), [e["type"] for e in ev]
    assert Path(remote_dir, "done").exists() and Path(remote_dir, "after").exists()
    assert Path(remote_dir, "tries").read_text().count("try") >= 2


# ---------------------------------------------------------------- the plan/apply oracle over SSH


def test_web_example_holds_the_plan_apply_oracle(ssh_hosts: list[Sshd], site: Callable[..., Path]) -> None:
    project = site({h.name: h.settings() for h in ssh_hosts[:2]})
    oracle = Oracle(project)
    oracle.check(WEB, check_actions=True)  # plan, apply, re-plan: apply did what the plan said
    oracle.check(WEB, check_actions=True)  # and so does the second run


def test_steps_sharing_files_hold_the_oracle_over_ssh(ssh_hosts: list[Sshd], site: Callable[..., Path]) -> None:
    """Later steps plan against what earlier ones leave, on every host (issue 10, over SSH)."""
    project = site({h.name: h.settings() for h in ssh_hosts[:2]})
    (project / "shared.yaml").write_text("""\
opsrun: 1
name: shared files
hosts: web
steps:
  - id: root
    file: {path: "{{ site_root }}", state: directory}
  - id: base
    file: {path: "{{ site_root }}/users.txt", content: "# users\\n"}
  - id: users
    loop: [alice, bob]
    line: {path: "{{ site_root }}/users.txt", line: "{{ item }}", create: true}
  - id: lock
    file: {path: "{{ site_root }}/users.txt", mode: "0600"}
""")
    oracle = Oracle(project)
    report = oracle.check("shared.yaml", non_convergent={"base", "users"}, known=True, check_actions=True)
    for h in ssh_hosts[:2]:
        users = report.first.step("users[1]", host=h.name)
        assert users.status == "update" and " alice" in users.diff.splitlines(), users
    oracle.check("shared.yaml", non_convergent={"base", "users"}, known=True, check_actions=True)
def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


@pytest.mark.parametrize("sudo", [True, False])
def test_resume_after_a_killed_opsrun_checks_the_remote_step(ssh_hosts: list[Sshd], tmp_path: Path,
                                                             remote_dir: str, sudo: bool) -> None:
    """SIGKILL opsrun while an SSH step runs: sshd leaves the remote command running. With sudo
    the journaled remote process group is checked and resume refuses while it lives; without
    sudo resume cannot see it and says so."""
    if sudo and os.geteuid() != 0:
        pytest.skip("the sudo test needs the sudoers drop-in that setup_ssh.sh installs as root")
    h = ssh_hosts[0]
    inventory(tmp_path / "inventory.yaml", {"box": h.settings(sudo=sudo)}, {})
    pidfile = Path(remote_dir, "pid")
    (tmp_path / "p.yaml").write_text(f"""\
opsrun: 1
name: orphan
hosts: box
steps:
  - id: slow
    run: if [ -f {remote_dir}/gate ]; then exit 0; fi; touch {remote_dir}/gate; sleep 30 & echo $! > {pidfile}; wait
  - id: last
    run: echo last > {remote_dir}/last
""")
    proc = subprocess.Popen([sys.executable, "-m", "runner", "apply", "p.yaml", "--yes"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    sleeper = 0
    try:
        end = time.monotonic() + 30
        while not (pidfile.exists() and pidfile.read_text().strip()) and time.monotonic() < end:
            time.sleep(0.05)
        sleeper = int(pidfile.read_text())
        time.sleep(0.2)  # the sudo hello line has reached opsrun and the journal
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        time.sleep(0.5)
        run_id = events(tmp_path)[0]["run_id"]
        procs = [e for e in events(tmp_path) if e["type"] == "process"]
        assert _running(sleeper), "sshd left the remote command running"
        r = opsrun("apply", "--resume", run_id, "--yes", cwd=tmp_path)
        assert "Traceback" not in r.stderr
        if sudo:
            assert r.returncode == 1, (procs, r.stdout + r.stderr)
            assert "not resuming" in r.stderr and "remote process group" in r.stderr
            assert not Path(remote_dir, "last").exists()
        else:
            assert "cannot see whether it still runs" in r.stderr, r.stderr
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if sleeper and _running(sleeper):
            os.kill(sleeper, signal.SIGKILL)
    if sudo:
        from runner.transports.local import group_alive  # the sshds run on this machine

        [pgid] = [e["pgid"] for e in procs]
        end = time.monotonic() + 20
        while group_alive(pgid, 0, "") and time.monotonic() < end:  # the root shell notices and ends
            time.sleep(0.05)
        r = opsrun("apply", "--resume", run_id, "--yes", cwd=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        assert Path(remote_dir, "last").read_text() == "last\n"
