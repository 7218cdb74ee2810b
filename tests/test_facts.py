"""The facts layer (runner/steps/facts.py): steps that ask the same fact on one host get one
probe, every host still gets one round trip, and one `stat` definition answers in one form on
the POSIX and the Android (toybox) shell. Counted on the real local transport: each host's
`shell:` is a wrapper that logs every script it is handed, then runs it with /bin/sh."""

from __future__ import annotations

import hashlib
import os
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from runner import config
from runner.model import Host, Probe, ProbeResult
from runner.overlay import PathState
from runner.planner import make_plan
from runner.session import Session
from runner.steps import facts as F
from runner.steps.base import StepContext

END = "@@opsrun-test-end@@"


def _logging_shell(tmp_path: Path, name: str) -> tuple[Path, Path]:
    log = tmp_path / f"{name}.log"
    sh = tmp_path / f"{name}-sh"
    sh.write_text(f"#!/bin/sh\nprintf '%s\\n{END}\\n' \"$2\" >> '{log}'\nexec /bin/sh \"$@\"\n")
    sh.chmod(0o755)
    return sh, log


def _scripts(log: Path) -> list[str]:
    return [s for s in log.read_text().split(f"\n{END}\n") if s.strip()] if log.exists() else []


STEPS = """\
- id: first_line
  line: {path: "@T/env", line: "A=1", create: true}
- id: second_line
  line: {path: "@T/env", line: "B=2", create: true}
- id: mode
  file: {path: "@T/env", mode: "0640"}
- id: built
  run: {command: "true", creates: "@T/env"}
- id: check_one
  run: {command: "true", unless: "test -e @T/never"}
- id: check_two
  run: {command: "true", unless: "test -e @T/never"}
"""


def _plan(tmp_path: Path, hosts: list[str]) -> tuple[dict[str, Path], dict[str, Path], Any]:
    logs, targets = {}, {}
    inv = "opsrun: 1\nhosts:\n"
    for h in hosts:  # each host its own logging shell and its own target folder (variable T)
        sh, logs[h] = _logging_shell(tmp_path, h)
        targets[h] = tmp_path / f"t-{h}"
        targets[h].mkdir()
        inv += f"  {h}: {{transport: local, shell: '{sh}', vars: {{T: '{targets[h]}'}}}}\n"
    (tmp_path / "inventory.yaml").write_text(inv)
    steps = STEPS.replace("@T", "{{ T }}")
    (tmp_path / "site.yaml").write_text(
        "opsrun: 1\nname: t\nhosts: all\nsteps:\n" + textwrap.indent(steps, "  ")
    )
    inventory = config.load_inventory(str(tmp_path / "inventory.yaml"))
    session = Session(inventory, config.load_playbook(str(tmp_path / "site.yaml"), inventory))
    try:
        plan, host_plans = make_plan(session, hosts)
    finally:
        session.close()
    return logs, targets, (plan, host_plans)


def test_steps_asking_the_same_fact_send_one_probe_in_one_round_trip_per_host(tmp_path: Path) -> None:
    logs, targets, (plan, host_plans) = _plan(tmp_path, ["web1", "web2"])
    for host, log in logs.items():
        scripts = _scripts(log)
        assert len(scripts) == 1, f"{host}: {len(scripts)} round trips"  # one batch per host
        script = scripts[0]
        env = str(targets[host] / "env")
        # three steps stat the same file, two read its content: each is asked once
        assert script.count("stat -c") == 1
        assert script.count("wc -c <") == 1
        assert script.count("sha256sum") == 1
        assert script.count("id -un") == 1  # the host's identity, asked once for every path step
        assert script.count(f"test -e {env}") == 1
        # a playbook's own checks are run as written, once per step that asks them
        assert script.count(f"test -e {targets[host]}/never") == 2
        # every step still reads its answers under its own keys
        facts = host_plans[host].facts
        for inst in ("first_line", "second_line", "mode"):
            assert facts[f"{inst}/stat"].text == "absent\n"
        assert facts["first_line/content"] == facts["second_line/content"]
        assert {"check_one/unless", "check_two/unless", "built/creates"} <= set(facts)
    said = {(sp.host, sp.step_id): sp.change.status for sp in plan.steps}
    assert said[("web1", "first_line")] == "create"
    assert said[("web2", "second_line")] == "update"  # the file the first step makes
    assert said[("web2", "built")] == "noop"  # the path an earlier step makes


def test_host_facts_share_identical_facts_only() -> None:
    ctx = StepContext(host=Host("h", "local"))
    asked = F.HostFacts()
    asked.want([F.ask(ctx, "stat", "/etc/motd", key="a/stat"), F.ask(ctx, "stat", "/etc/motd", key="b/stat"),
                F.ask(ctx, "stat", "/etc/other", key="c/stat"),
                F.ask(ctx, "check", "date", key="a/unless"), F.ask(ctx, "check", "date", key="b/unless"),
                Probe("d/raw", "echo hi"), Probe("e/raw", "echo hi")])
    sent: list[list[str]] = []

    def send(probes: object) -> dict[str, ProbeResult]:
        keys = [p.key for p in probes]  # type: ignore[attr-defined]
        sent.append(keys)
        return {k: ProbeResult(0, k.encode()) for k in keys}

    answers = asked.answer(send)
    assert sent == [["a/stat", "c/stat", "a/unless", "b/unless", "d/raw", "e/raw"]]
    assert answers["b/stat"] == answers["a/stat"] == ProbeResult(0, b"a/stat")
    assert len(answers) == 7
    assert asked.answer(send) == answers and len(sent) == 1  # answered facts are kept, not asked again


def test_shared_api_answers_are_copies() -> None:
    ctx = StepContext(host=Host("pve", "proxmox"))
    asked = F.HostFacts()
    asked.want([F.ask(ctx, "api", "nodes", key="a/nodes"), F.ask(ctx, "api", "nodes", key="b/nodes"),
                F.ask(ctx, "api_live", "nodes", key="c/live:rows")])
    answers = asked.answer(lambda ps: {p.key: ProbeResult(0, data=[{"node": "pve"}]) for p in ps})
    assert len(asked.pending()) == 0 and len(answers) == 3
    answers["a/nodes"].data.append("changed")
    assert answers["b/nodes"].data == [{"node": "pve"}]


# ---------------------------------------------------------------- one stat, two shells


def _run(command: str) -> ProbeResult:
    res = subprocess.run(["/bin/sh", "-c", command], capture_output=True, timeout=10)
    return ProbeResult(res.returncode, res.stdout, res.stderr)


@pytest.mark.parametrize("shell", [F.POSIX, F.TOYBOX], ids=lambda s: s.name)
def test_one_stat_definition_answers_in_one_form(shell: F.Shell, tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    f.chmod(0o640)
    (tmp_path / "d").mkdir()
    os.symlink(f, tmp_path / "ln")
    transport = "adb" if shell is F.TOYBOX else "local"
    ctx = StepContext(host=Host("h", transport))

    def stat(path: Path, digest: bool = False) -> F.PathInfo:
        probe = F.ask(ctx, "stat", str(path), digest=digest)
        assert probe.command is not None and F.shell_of(ctx) is shell
        return F.read_stat(_run(probe.command))

    got = stat(f, digest=True)
    assert (got.type, got.mode, got.size) == ("file", "0640", 3)
    assert (got.algo, got.digest) == ("sha256", hashlib.sha256(b"abc").hexdigest())
    assert stat(f).digest == ""
    assert stat(tmp_path / "d").type == "directory"
    link = stat(tmp_path / "ln")
    assert (link.type, link.link_target) == (("link", str(f)) if shell.lstat else ("file", ""))
    gone = stat(tmp_path / "no" / "such")
    assert (gone.type, gone.parent_problem) == ("absent", "noparent" if shell.why_absent else "")
    if shell.why_absent:
        assert stat(f / "below").parent_problem == f"notdir {f}"


@pytest.mark.parametrize("shell", [F.POSIX, F.TOYBOX], ids=lambda s: s.name)
def test_stat_text_reads_back_as_the_state(shell: F.Shell) -> None:
    """What the overlay synthesises for a planned path parses like a host's answer."""
    state = PathState("file", content=b"xy", size=2, mode="0600", owner="u", group="g")
    info = F.read_stat(ProbeResult(0, F.stat_text(state, shell, digest=("md5", "00"))))
    assert (info.type, info.mode, info.owner, info.group, info.size, info.algo) == ("file", "0600", "u", "g", 2, "md5")
    link = F.read_stat(ProbeResult(0, F.stat_text(PathState("link", link_target="/x"), shell)))
    assert link.type == ("link" if shell.lstat else "other")
    assert F.read_stat(ProbeResult(0, F.stat_text(PathState("absent"), shell, flag="noparent"))).parent_problem \
        == "noparent"
