"""`until:` (apply tries a step again until an expression over its result holds, each try
journaled) and a step's own `sudo:` (plan shows it, digests cover it, refused where there is no
sudo; over SSH it overrides the host's sudo for the step's commands, uploads and probes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from runner.model import Action
from tests.oracle import Oracle
from tests.peers.sshd import Sshd

ROOT = Path(__file__).resolve().parent.parent

# succeeds on its third run: each run adds a line to the counter file
THIRD_TRY = 'echo x >> {c}; n=$(wc -l < {c}); echo "try $n"; [ "$n" -ge 3 ]'


def playbook(project: Path, steps: str, head: str = "hosts: local\n") -> Path:
    path = project / "site.yaml"
    path.write_text("opsrun: 1\nname: conventions\n" + head + "steps:\n" + textwrap.indent(textwrap.dedent(steps), "  "))
    return path


def opsrun(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "OPSRUN_STATE_DIR"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=project, text=True, capture_output=True,
                          env=env, timeout=120, stdin=subprocess.DEVNULL)


def of_type(events: list[dict[str, Any]], kind: str, instance: str | None = None) -> list[dict[str, Any]]:
    return [e for e in events if e.get("type") == kind and (instance is None or e.get("instance") == instance)]


def json_events(p: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]


# ---------------------------------------------------------------- until


def test_until_tries_again_until_the_command_succeeds_on_its_third_try(tmp_path: Path) -> None:
    counter = tmp_path / "count"
    pb = playbook(tmp_path, f"""\
        - id: wait
          run: '{THIRD_TRY.format(c=counter)}'
          until: rc == 0
          retries: 4
          delay: 0.05
        - id: after
          run: {{command: "echo after", creates: {tmp_path}/never}}
        """)
    report = Oracle(tmp_path).check(pb, non_convergent=["wait", "after"], check_actions=True)
    planned = report.first.step("wait")
    assert planned.summary == "will run (no guard: not idempotent); until rc == 0 (up to 5 tries, 0.05s apart)"
    events = report.apply.events
    assert [e["rc"] for e in of_type(events, "attempt", "wait")] == [1, 1, 0]
    assert [(e["tries"], e["met"]) for e in of_type(events, "until", "wait")] == [(1, False), (2, False), (3, True)]
    (end,) = of_type(events, "step_end", "wait")
    assert (end["status"], end["attempts"]) == ("changed", 3)
    assert counter.read_text().count("x") == 3  # plans never run a command


def test_until_never_met_fails_the_step_after_its_tries(tmp_path: Path) -> None:
    playbook(tmp_path, """\
        - id: never
          run: echo not yet
          until: "'ready' in stdout"
          retries: 2
          delay: 0
        - id: next
          run: echo next
        """)
    p = opsrun(tmp_path, "apply", "site.yaml", "--yes", "--json")
    assert p.returncode != 0
    events = json_events(p)
    assert len(of_type(events, "attempt", "never")) == 3
    (end,) = of_type(events, "step_end", "never")
    assert end["status"] == "failed"
    assert end["message"] == "until not met after 3 tries: 'ready' in stdout"
    assert not of_type(events, "step_end", "next")  # the host stopped there (on_failure: stop)


def test_until_reads_the_register_name_and_steps_of_the_try(tmp_path: Path) -> None:
    counter = tmp_path / "count"
    pb = playbook(tmp_path, f"""\
        - id: poll
          run: 'echo x >> {counter}; wc -l < {counter}'
          register: out
          until: out.stdout | int >= 2 and steps.poll.rc == 0 and not failed
          retries: 3
          delay: 0
        """)
    report = Oracle(tmp_path).check(pb, non_convergent=["poll"])
    assert len(of_type(report.apply.events, "attempt", "poll")) == 2


def test_until_counts_failed_tries_and_policy_retry_does_not_add_to_them(tmp_path: Path) -> None:
    """until judges every try that ran, failed or not; policy.retry still retries what it retries
    (a lost connection, a timeout), not a result until has judged."""
    counter = tmp_path / "count"
    playbook(tmp_path, f"""\
        - id: flaky
          run: 'echo x >> {counter}; exit 1'
          until: rc == 0
          retries: 1
          delay: 0
          policy: {{retry: {{attempts: 5, delay: 0}}}}
        """)
    p = opsrun(tmp_path, "apply", "site.yaml", "--yes", "--json")
    assert p.returncode != 0
    assert counter.read_text().count("x") == 2
    (end,) = of_type(json_events(p), "step_end", "flaky")
    assert end["message"] == "until not met after 2 tries: rc == 0"


def test_validate_checks_until_and_its_companions(tmp_path: Path) -> None:
    playbook(tmp_path, """\
        - id: a
          run: echo a
          until: "{{ rc == 0 }}"
        - id: b
          run: echo b
          retries: 3
          delay: 1
        - id: c
          run: echo c
          until: stdout == wanted
        - id: d
          run: echo d
          register: got
          until: got.rc == 0 and changed and stdout_lines | length > 0
        """)
    p = opsrun(tmp_path, "validate", "site.yaml")
    assert p.returncode == 4
    err = p.stderr
    assert "site.yaml:7:12: error: until is an expression: write it without {{ }}" in err, err
    assert "site.yaml:10:5: error: 'retries' needs 'until' too" in err
    assert "'retries' is Ansible's: `retries` goes with `until:`" in err
    assert "site.yaml:11:5: error: 'delay' needs 'until' too" in err
    assert "site.yaml:14:12: error: undefined variable 'wanted'" in err, err
    assert "step 'd'" not in err and ":18:" not in err  # its register name and result names are known


# ---------------------------------------------------------------- sudo: plan, digests, refusal


def test_a_steps_sudo_is_shown_in_the_plan_and_covered_by_the_digests(tmp_path: Path) -> None:
    pb = playbook(tmp_path, f"""\
        - id: as_root
          run: id -u
          sudo: true
        - id: plain
          file: {{path: {tmp_path}/f, content: "x"}}
          sudo: false
        - id: host_default
          run: id -u
        """)
    report = Oracle(tmp_path).check(pb, non_convergent=["as_root", "host_default"], check_actions=True)
    assert report.first.step("as_root").actions == ("sudo: id -u",)
    assert report.first.step("plain").actions == (f"no sudo: put {tmp_path}/f (1 bytes)",)
    assert report.first.step("host_default").actions == ("id -u",)
    actions = {s["instance"]: s["actions"][0] for s in report.first.doc["steps"]}
    assert actions["as_root"]["sudo"] is True and "sudo" not in actions["host_default"]
    assert actions["as_root"]["digest"] != actions["host_default"]["digest"]
    assert Action("cmd", command="id -u", sudo=True).digest() != Action("cmd", command="id -u").digest()
    assert Action("cmd", command="id -u", sudo=False).digest() != Action("cmd", command="id -u").digest()
    text = opsrun(tmp_path, "plan", "site.yaml").stdout
    assert "      $ sudo: id -u" in text, text


def test_sudo_is_refused_on_a_host_without_sudo(tmp_path: Path) -> None:
    (tmp_path / "inventory.yaml").write_text(yaml.safe_dump({"opsrun": 1, "hosts": {"pve": {
        "transport": "proxmox", "api": "https://127.0.0.1:8006", "token_id": "root@pam!t", "token_secret": "env:NOPE"}}}))
    playbook(tmp_path, """\
        - id: guests
          proxmox.query: {what: nodes}
          sudo: true
        """, head="hosts: pve\n")
    p = opsrun(tmp_path, "plan", "site.yaml", "--offline", "--json")
    assert p.returncode in (0, 2), p.stderr
    (step,) = json.loads(p.stdout)["steps"]
    assert step["status"] == "blocked"
    assert step["summary"] == "sudo: true cannot be used on a proxmox host"
    assert "only local and ssh hosts run commands through sudo" in step["reason"]


# ---------------------------------------------------------------- sudo over SSH


def _require_sudo() -> None:
    if os.geteuid() != 0:
        pytest.skip("the sudo tests need the sudoers drop-in that tests/peers/setup_ssh.sh installs as root")


def _ssh_project(tmp_path: Path, peer: Sshd, steps: str, **settings: Any) -> Path:
    inv = {"opsrun": 1, "hosts": {"box": {"transport": "ssh", **peer.settings(**settings)}}}
    (tmp_path / "inventory.yaml").write_text(yaml.safe_dump(inv, sort_keys=False))
    return playbook(tmp_path, steps, head="hosts: box\n")


def test_step_sudo_over_ssh_runs_commands_uploads_and_probes_as_root(ssh_hosts: list[Sshd], tmp_path: Path,
                                                                     remote_dir: str) -> None:
    """The login user (opsrun-test) may sudo without a password (setup_ssh.sh); the host has no
    `sudo:`, so only the steps that say `sudo: true` run as root, and their probes see what
    only root may see."""
    _require_sudo()
    vault = Path(remote_dir, "vault")
    vault.mkdir(mode=0o700)
    os.chown(vault, 0, 0)
    os.chmod(vault, 0o700)
    (vault / "kept").write_text("secret\n")
    pb = _ssh_project(tmp_path, ssh_hosts[0], f"""\
        - id: me
          run: id -u > {remote_dir}/me
        - id: root
          run: id -u > {remote_dir}/root
          sudo: true
        - id: owned
          file: {{path: {remote_dir}/root-file, content: "x", mode: "0600"}}
          sudo: true
        - id: kept
          file: {{path: {vault}/kept, content: "secret\\n"}}
          sudo: true
        - id: added
          file: {{path: {vault}/added, content: "new\\n"}}
          sudo: true
        - id: made
          file: {{path: {vault}/made, state: directory, mode: "0750"}}
          sudo: true
        """)
    report = Oracle(tmp_path).check(pb, non_convergent=["me", "root"], check_actions=True)
    # the probe of `kept` ran through sudo: it saw the file inside the root-only folder
    assert report.first.step("kept", "box").status == "noop"
    assert report.first.step("added", "box").status == "create"
    assert Path(remote_dir, "me").read_text().strip() != "0"
    assert Path(remote_dir, "root").read_text().strip() == "0"
    assert Path(remote_dir, "root-file").stat().st_uid == 0
    assert (vault / "added").read_text() == "new\n" and (vault / "added").stat().st_uid == 0
    # its folder made through sudo (an SFTP mkdir would act as the login user, refused there)
    assert (vault / "made").is_dir() and (vault / "made").stat().st_uid == 0


def test_step_sudo_false_overrides_a_sudo_host(ssh_hosts: list[Sshd], tmp_path: Path, remote_dir: str) -> None:
    _require_sudo()
    pb = _ssh_project(tmp_path, ssh_hosts[0], f"""\
        - id: root
          run: id -u > {remote_dir}/root
        - id: me
          run: id -u > {remote_dir}/me
          sudo: false
        - id: mine
          file: {{path: {remote_dir}/mine, content: "x"}}
          sudo: false
        """, sudo=True)
    Oracle(tmp_path).check(pb, non_convergent=["root", "me"], check_actions=True)
    assert Path(remote_dir, "root").read_text().strip() == "0"
    assert Path(remote_dir, "me").read_text().strip() != "0"
    assert Path(remote_dir, "mine").stat().st_uid != 0


def test_validate_says_where_a_steps_sudo_cannot_work(tmp_path: Path) -> None:
    (tmp_path / "inventory.yaml").write_text(yaml.safe_dump({"opsrun": 1, "hosts": {"pve": {
        "transport": "proxmox", "api": "https://127.0.0.1:8006", "token_id": "root@pam!t",
        "token_secret": "env:NOPE"}}}))
    playbook(tmp_path, """\
        - id: guests
          proxmox.query: {what: nodes}
          sudo: true
        """, head="hosts: pve\n")
    p = opsrun(tmp_path, "validate", "site.yaml", "-i", "inventory.yaml")
    assert p.returncode == 4
    assert "site.yaml:7:5: error: sudo: cannot be used on host pve (proxmox): plan blocks this step there" in p.stderr
