"""Host facts (runner/fact_names.py, runner/steps/host_facts.py, the planner's _gather): read
from real hosts only when a template reads them, in the host's one probe round trip; the same
values at apply; in the saved plan's fingerprints; unknown (`?`) offline; known to validate.
Counted on the real local and ssh transports with a `shell:` wrapper that logs every script
(and may point the snippet at another os-release, standing for another distribution)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from runner import config, fact_names, render
from runner.model import Host, Inventory
from runner.planner import make_plan
from runner.session import Session
from runner.steps import host_facts as HF

ROOT = Path(__file__).resolve().parent.parent
END = "@@opsrun-test-end@@"


def logging_shell(folder: Path, os_release: Path | None = None) -> tuple[Path, Path]:
    """A shell that logs each script it runs; with `os_release`, the facts snippet reads that
    file instead of /etc/os-release (another distribution on the same machine)."""
    log, sh = folder / "scripts.log", folder / "log-sh"
    swap = f"s#/etc/os-release#{os_release}#g" if os_release else ""
    sh.write_text(
        "#!/bin/sh\n"
        f"printf '%s\\n{END}\\n' \"$2\" >> '{log}'\n"
        + (f"exec /bin/sh -c \"$(printf '%s' \"$2\" | sed '{swap}')\"\n" if swap else 'exec /bin/sh "$@"\n')
    )
    sh.chmod(0o755)
    log.touch()
    log.chmod(0o666)
    return sh, log


def scripts(log: Path) -> list[str]:
    return [s for s in log.read_text().split(f"\n{END}\n") if s.strip()]


def asks(script: str, key: str) -> int:
    """How often a probe script asks `key` (its opening frame line)."""
    return script.count(f" {key}\n")


def project(folder: Path, hosts: dict[str, dict[str, Any]], steps: str, head: str = "") -> Path:
    (folder / "inventory.yaml").write_text(yaml.safe_dump({"opsrun": 1, "hosts": hosts}))
    path = folder / "site.yaml"
    names = ", ".join(hosts) or "all"
    path.write_text(f"opsrun: 1\nname: facts\nhosts: [{names}]\n" + head + "steps:\n"
                    + textwrap.indent(textwrap.dedent(steps), "  "))
    return path


def plan_of(playbook: Path, inventory: Inventory | None = None, offline: bool = False) -> tuple[Any, Session]:
    inv = inventory or config.load_inventory(str(playbook.parent / "inventory.yaml"))
    session = Session(inv, config.load_playbook(str(playbook), inv))
    try:
        plan, _ = make_plan(session, [h for h, host in inv.hosts.items() if not host.implicit], offline=offline)
    finally:
        session.close()
    return plan, session


def statuses(plan: Any) -> dict[tuple[str, str], str]:
    return {(sp.host, sp.instance): sp.change.status for sp in plan.steps}


def opsrun(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=cwd, text=True, capture_output=True,
                          timeout=120, check=False)


def os_release() -> dict[str, str]:
    out = {}
    for line in Path("/etc/os-release").read_text().splitlines():
        key, _, value = line.partition("=")
        out[key] = value.strip().strip('"')
    return out


READS = """\
- id: debian_only
  when: facts.os.family == 'Debian'
  file: {path: "{{ base }}/debian", content: "{{ facts.os.codename }}\\n"}
- id: redhat_only
  when: ansible_os_family == 'RedHat'
  file: {path: "{{ base }}/redhat", content: "rh\\n"}
- id: motd
  template: {src: motd.j2, dest: "{{ base }}/motd"}
- id: big
  when: (facts.cpus | int) >= 1 and ansible_memtotal_mb > 0
  file: {path: "{{ base }}/big", state: directory}
"""


def reads_project(tmp_path: Path, os_rel: Path | None = None) -> tuple[Path, Path]:
    sh, log = logging_shell(tmp_path, os_rel)
    (tmp_path / "out").mkdir()
    (tmp_path / "motd.j2").write_text("{{ ansible_hostname }} runs {{ facts.os.name }} on {{ facts.arch }}\n")
    pb = project(tmp_path, {"h": {"transport": "local", "shell": str(sh), "vars": {"base": str(tmp_path / "out")}}},
                 READS)
    return pb, log


# ---------------------------------------------------------------- local, counted


def test_local_facts_are_the_machines(tmp_path: Path) -> None:
    pb, _ = reads_project(tmp_path)
    _, session = plan_of(pb)
    v = session.facts["h"]
    f = v["facts"]
    rel = os_release()
    assert f["os"]["id"] == rel["ID"] and f["os"]["version"] == rel.get("VERSION_ID")
    assert f["arch"] == subprocess.run(["uname", "-m"], capture_output=True, text=True).stdout.strip()
    assert f["arch"] == platform.machine() and f["kernel"] == platform.release()
    assert f["cpus"] == int(subprocess.run(["nproc"], capture_output=True, text=True).stdout)
    assert f["hostname"] == socket.gethostname().split(".")[0]
    kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
              if line.startswith("MemTotal:"))
    assert f["memory_mb"] == kb // 1024
    assert f["system"] == "Linux" and f["os"]["family"] == HF.family(f["os"]["distribution"], f["os"]["like"])
    # Ansible's names are the same facts
    assert v["ansible_os_family"] == f["os"]["family"] == v["ansible_facts"]["os_family"]
    assert v["ansible_architecture"] == f["arch"] and v["ansible_processor_vcpus"] == f["cpus"]
    assert v["ansible_default_ipv4"]["address"] == f["ipv4"]["default"]
    assert v["ansible_memtotal_mb"] == f["memory_mb"] and v["ansible_kernel"] == f["kernel"]
    if shutil.which("ip"):
        shown = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True).stdout
        assert all(a in shown for a in f["ipv4"]["all"]) and "127.0.0.1" not in f["ipv4"]["all"]


def test_a_playbook_reading_no_facts_sends_no_fact_probe(tmp_path: Path) -> None:
    sh, log = logging_shell(tmp_path)
    pb = project(tmp_path, {"h": {"transport": "local", "shell": str(sh)}},
                 f"- id: f\n  file: {{path: '{tmp_path}/f', content: \"facts are {{{{ who }}}}\\n\"}}\n",
                 head="vars: {who: ansible_hostname}\n")
    plan, session = plan_of(pb)
    sent = scripts(log)
    assert len(sent) == 1 and "@host/facts" not in sent[0] and "os-release" not in sent[0]
    assert session.facts == {}
    assert plan.steps[0].change.status == "create"


def test_reading_facts_adds_no_round_trip(tmp_path: Path) -> None:
    pb, log = reads_project(tmp_path)
    plan, session = plan_of(pb)
    sent = scripts(log)
    assert len(sent) == 1, f"{len(sent)} round trips"
    assert asks(sent[0], "@host/facts") == 1  # asked once, with every step's checks
    for step in ("debian_only", "redhat_only", "motd", "big"):  # ... of the steps reading facts too
        assert f"{step}/stat" in sent[0]
    debian = session.facts["h"]["facts"]["os"]["family"] == "Debian"
    said = statuses(plan)
    assert said[("h", "debian_only")] == ("create" if debian else "skip")
    assert said[("h", "redhat_only")] == "skip" or session.facts["h"]["ansible_os_family"] == "RedHat"
    assert said[("h", "big")] == "create"
    motd = next(sp for sp in plan.steps if sp.instance == "motd")
    assert f"{socket.gethostname().split('.')[0]} runs" in motd.change.diff


def test_a_check_decided_by_a_fact_value_is_asked_after_the_facts(tmp_path: Path) -> None:
    """A path chosen by a fact cannot be checked before it is known: its check alone follows."""
    sh, log = logging_shell(tmp_path)
    pb = project(tmp_path, {"h": {"transport": "local", "shell": str(sh)}}, f"""\
        - id: plain
          file: {{path: "{tmp_path}/plain", state: directory}}
        - id: chosen
          file: {{path: "{tmp_path}/{{{{ 'deb' if ansible_os_family == 'Debian' else 'other' }}}}", state: directory}}
        """)
    plan, _ = plan_of(pb)
    sent = scripts(log)
    assert len(sent) == 2
    assert "@host/facts" in sent[0] and "plain/stat" in sent[0] and "chosen/stat" not in sent[0]
    assert "chosen/stat" in sent[1] and "plain/stat" not in sent[1] and "@host/facts" not in sent[1]
    assert statuses(plan)[("h", "chosen")] == "create"


@pytest.mark.parametrize(("text", "expect"), [
    ('NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.20.1\nPRETTY_NAME="Alpine Linux v3.20"\n',
     {"id": "alpine", "family": "Alpine", "distribution": "Alpine", "version": "3.20.1", "version_major": "3"}),
    ('NAME="Rocky Linux"\nVERSION_ID="9.4"\nID="rocky"\nID_LIKE="rhel centos fedora"\n',
     {"id": "rocky", "family": "RedHat", "distribution": "Rocky", "version_major": "9",
      "like": ["rhel", "centos", "fedora"]}),
    ("NAME=\"Arch Linux\"\nID=arch\nBUILD_ID=rolling\n",
     {"id": "arch", "family": "Archlinux", "version": None, "version_major": None}),
    ('NAME="openSUSE Leap"\nVERSION_ID="15.6"\nID="opensuse-leap"\nID_LIKE="suse opensuse"\n',
     {"family": "Suse", "distribution": "openSUSE Leap"}),
    ('NAME="Homegrown \\"Deb\\" OS"\nID=homegrown\nID_LIKE=debian\nVERSION_CODENAME=trixie\n',
     {"name": 'Homegrown "Deb" OS', "family": "Debian", "distribution": 'Homegrown "Deb" OS', "codename": "trixie"}),
    ("", {"id": None, "family": None, "version": None, "like": None}),
], ids=["alpine", "rocky", "arch", "suse", "derivative", "none"])
def test_os_release_read_by_the_real_snippet(tmp_path: Path, text: str, expect: dict[str, Any]) -> None:
    rel = tmp_path / "os-release"
    rel.write_text(text)
    pb, _ = reads_project(tmp_path, rel)
    _, session = plan_of(pb)
    got = session.facts["h"]["facts"]["os"]
    assert {k: got[k] for k in expect} == expect
    assert session.facts["h"]["facts"]["cpus"] >= 1  # the other pieces stand alone


def test_missing_tools_leave_their_facts_unknown(tmp_path: Path) -> None:
    """No `ip`, no `hostname`, no package manager: /proc gives the addresses, the rest is None."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "sed", "awk", "sort", "uname", "cat", "head", "grep", "nproc"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    probe = HF.probes(Host("h", "local"))[0]
    assert probe.command is not None
    run = subprocess.run([str(bin_dir / "sh"), "-c", probe.command], capture_output=True, text=True,
                         env={"PATH": str(bin_dir)}, timeout=30, check=False)
    got = HF.read_shell(run.stdout)
    assert run.returncode == 0 and got["pkg_mgr"] is None  # no apt-get, dnf, apk... on that PATH
    assert got["hostname"] == platform.node().split(".")[0] and got["fqdn"] == platform.node()  # uname -n
    assert got["kernel"] == platform.release() and got["cpus"] >= 1
    if Path("/proc/net/fib_trie").exists():
        assert got["ipv4.all"] is not None and "127.0.0.1" not in got["ipv4.all"]
    assert HF.read_shell("garbage\nmemkb=x\ncpus=\n")["cpus"] is None


def test_init_and_package_manager_mapping() -> None:
    assert HF.read_shell("systemd=1\npid1=systemd\npkg=apt-get\n")["init"] == "systemd"
    assert HF.read_shell("openrc=1\npid1=init\npkg=apk\n")["pkg_mgr"] == "apk"
    assert HF.read_shell("openrc=1\npid1=init\n")["init"] == "openrc"
    assert HF.read_shell("pid1=init\n")["init"] == "sysvinit"
    assert HF.read_shell("pid1=bash\n")["init"] is None
    assert HF.read_shell("pid1=runsvdir\n")["init"] == "runit"


# ---------------------------------------------------------------- plan, apply, saved plans


def test_apply_renders_with_the_plans_facts(tmp_path: Path) -> None:
    pb, log = reads_project(tmp_path)
    done = opsrun("apply", str(pb), "-i", str(tmp_path / "inventory.yaml"), "--yes", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    host = socket.gethostname().split(".")[0]
    assert (tmp_path / "out" / "motd").read_text().startswith(f"{host} runs ")
    debian = os_release().get("ID_LIKE", "") == "debian" or os_release()["ID"] in ("debian", "ubuntu")
    assert (tmp_path / "out" / "debian").exists() == debian
    assert sum(asks(s, "@host/facts") for s in scripts(log)) == 1  # gathered once: apply uses the plan's
    again = opsrun("plan", str(pb), "-i", str(tmp_path / "inventory.yaml"), "--detailed-exitcode", cwd=tmp_path)
    assert again.returncode == 0, again.stdout


def test_saved_plans_detect_a_fact_that_moved(tmp_path: Path) -> None:
    """Facts a step reads are in its fingerprint: another OS family refuses the plan, naming
    the fact; a change to a fact no step reads (the version) does not."""
    rel = tmp_path / "os-release"
    rel.write_text("NAME=Debian\nID=debian\nVERSION_ID=12\n")
    pb, _ = reads_project(tmp_path, rel)
    inv = str(tmp_path / "inventory.yaml")
    made = opsrun("plan", str(pb), "-i", inv, "-o", "plan.json", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    saved = json.loads((tmp_path / "plan.json").read_text())
    step = next(s for s in saved["steps"] if s["instance"] == "redhat_only")
    assert "@host/facts.os.family" in step["fingerprint"] and step["status"] == "skip"
    rel.write_text('NAME="Rocky Linux"\nID=rocky\nVERSION_ID=9.4\n')
    refused = opsrun("apply", "plan.json", "--yes", cwd=tmp_path)
    assert refused.returncode == 1
    assert "state moved since the plan was made" in refused.stderr
    assert "@host/facts.os.family" in refused.stderr and not (tmp_path / "out" / "motd").exists()
    rel.write_text("NAME=Debian\nID=debian\nVERSION_ID=13\n")  # moved, but no step reads the version
    applied = opsrun("apply", "plan.json", "--yes", cwd=tmp_path)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert (tmp_path / "out" / "debian").exists() and not (tmp_path / "out" / "redhat").exists()


def test_offline_plan_says_facts_are_unknown(tmp_path: Path) -> None:
    pb, log = reads_project(tmp_path)
    p = opsrun("plan", str(pb), "-i", str(tmp_path / "inventory.yaml"), "--offline", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "? debian_only" in p.stdout and "holds for host fact facts.os.family" in p.stdout
    assert "? motd: decided with the host's facts (ansible_hostname)" in p.stdout
    assert "reads host fact ansible_os_family" in p.stdout
    assert scripts(log) == []


def test_validate_knows_the_facts_of_each_transport(tmp_path: Path) -> None:
    pb, _ = reads_project(tmp_path)
    inv = str(tmp_path / "inventory.yaml")
    ok = opsrun("validate", str(pb), "-i", inv, cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    text = pb.read_text()
    pb.write_text(text.replace("facts.os.family ==", "facts.os.famly ==")
                  .replace("ansible_os_family ==", "ansible_os_famly ==")
                  .replace("\"{{ facts.os.codename }}", "\"{{ facts.android.model }}"))
    bad = opsrun("validate", str(pb), "-i", inv, cwd=tmp_path)
    out = bad.stdout + bad.stderr
    assert bad.returncode == 4, out
    line = next(i for i, t in enumerate(pb.read_text().splitlines(), 1) if "famly ==" in t and "facts.os" in t)
    assert f"site.yaml:{line}:" in out and "unknown host fact 'facts.os.famly'" in out
    assert "did you mean 'facts.os.family'?" in out and "did you mean 'ansible_os_family'?" in out
    assert "host fact 'facts.android.model' is gathered on adb hosts only, not on host h (local)" in out
    assert "undefined variable" not in out.replace("undefined variable 'ansible_os_famly'", "")


def test_stand_ins_stay_pending_through_filters_and_variables() -> None:
    stand = fact_names.stand_ins("ssh")
    for expression in ("facts.cpus | int > 2", "facts.os.version | float >= 12", "facts.os.family | lower == 'x'",
                       "'x' in facts.os.like", "facts.memory_mb * 2 > 1", "ansible_default_ipv4.address"):
        with pytest.raises(render.PendingResult) as got:
            render.truthy(render.evaluate(expression, stand))
        assert fact_names.fact_of(got.value.step_id)
    inv = Inventory({"h": Host("h", "ssh")}, {})
    from runner.model import Playbook
    pb = Playbook("t", "all", (), vars={"pkg": "{{ 'apache2' if ansible_os_family == 'Debian' else 'httpd' }}"})
    values = config.host_vars(inv, inv.hosts["h"], pb, {}, facts=stand)
    with pytest.raises(render.PendingResult):
        render.render_text("{{ pkg }}", values)
    real = config.host_vars(inv, inv.hosts["h"], pb, {},
                            facts=fact_names.values_as_variables("ssh", {"os.family": "RedHat"}))
    assert real["pkg"] == "httpd" and real["facts"]["cpus"] is None  # unknown: None, never an error


def test_a_variable_named_like_a_fact_is_the_playbooks_own(tmp_path: Path) -> None:
    sh, log = logging_shell(tmp_path)
    pb = project(tmp_path, {"h": {"transport": "local", "shell": str(sh)}},
                 f"- id: f\n  when: ansible_os_family == 'Plan9'\n  file: {{path: '{tmp_path}/f', state: directory}}\n",
                 head="vars: {ansible_os_family: Plan9}\n")
    plan, session = plan_of(pb)
    assert "@host/facts" not in scripts(log)[0] and session.facts == {}
    assert statuses(plan)[("h", "f")] == "create"


# ---------------------------------------------------------------- ssh, adb, proxmox


@pytest.mark.peer
def test_ssh_host_facts_in_one_round_trip(ssh_hosts: list[Any], remote_dir: str) -> None:
    folder = Path(remote_dir)
    sh, log = logging_shell(folder)
    h = ssh_hosts[0]
    (folder / "out").mkdir(mode=0o777)
    (folder / "motd.j2").write_text("{{ ansible_hostname }} runs {{ facts.os.name }} on {{ facts.arch }}\n")
    pb = project(folder, {"web1": {"transport": "ssh", **h.settings(shell=str(sh)),
                                   "vars": {"base": str(folder / "out")}}}, READS)
    plan, session = plan_of(pb)
    sent = scripts(log)
    assert len(sent) == 1 and asks(sent[0], "@host/facts") == 1
    f = session.facts["web1"]["facts"]
    # the sshd runs on this machine: the same OS, kernel, CPUs and name
    assert (f["os"]["id"], f["arch"], f["kernel"]) == (os_release()["ID"], platform.machine(), platform.release())
    assert f["hostname"] == socket.gethostname().split(".")[0] and f["cpus"] >= 1 and f["fqdn"]
    assert statuses(plan)[("web1", "big")] == "create"
    assert f"{f['hostname']} runs" in next(sp.change.diff for sp in plan.steps if sp.instance == "motd")


ANDROID_STEPS = """\
- id: recent
  when: facts.android.sdk >= 30 and facts.os.family == 'Android'
  adb.shell: {command: "echo {{ facts.android.model }} {{ facts.android.abi }}", changed_when: false}
- id: old
  when: facts.android.sdk < 26
  adb.shell: {command: "echo old", changed_when: false}
"""


@pytest.mark.peer
def test_android_facts_from_getprop(fake_android: Any, tmp_path: Path) -> None:
    from tests.peers.android_shims.device import SDK, default_props

    dev = fake_android()
    host = Host("tab", "adb", {"serial": dev.serial, "adb_server": f"127.0.0.1:{dev.server.port}"})
    inv = Inventory({"tab": host}, {})
    pb = project(tmp_path, {}, ANDROID_STEPS)
    session = Session(inv, config.load_playbook(str(pb), inv))
    sent: list[list[str]] = []
    try:
        t = session.transport("tab")
        probe = t.probe
        t.probe = lambda ps: (sent.append([p.key for p in ps]), probe(ps))[1]  # type: ignore[method-assign]
        plan, _ = make_plan(session, ["tab"])
    finally:
        session.close()
    props = default_props(dev.serial)
    f = session.facts["tab"]["facts"]
    assert f["android"]["model"] == props["ro.product.model"] == "OpsrunFake"
    assert f["android"]["sdk"] == SDK and f["android"]["abi"] == props["ro.product.cpu.abi"]
    assert f["android"]["release"] == f["os"]["version"] == props["ro.build.version.release"]
    assert f["os"]["family"] == "Android" and f["cpus"] >= 1 and "init" not in f
    assert len(sent) == 1 and "@host/facts" in sent[0]
    said = {sp.instance: sp for sp in plan.steps}
    assert said["old"].change.status == "skip" and said["recent"].change.status == "run"
    assert "echo OpsrunFake x86_64" in said["recent"].change.actions[0].command


@pytest.mark.peer
def test_proxmox_facts_version_and_nodes(pve_lab: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSRUN_TEST_FACTS_TOKEN", str(pve_lab.token_secret))
    inv = Inventory({"pve": pve_lab.host(token_secret="env:OPSRUN_TEST_FACTS_TOKEN")}, {})
    pb = project(tmp_path, {}, """\
        - id: on8
          when: facts.proxmox.version_major | int >= 7 and 'pve1' in facts.proxmox.nodes_online
          proxmox.lxc: {vmid: 120, hostname: ct120, state: absent}
        """)
    plain = tmp_path / "plain"
    plain.mkdir()
    project(plain, {}, "- id: on8\n  proxmox.lxc: {vmid: 120, hostname: ct120, state: absent}\n")

    def gets(playbook: Path) -> Counter[str]:
        before = len(pve_lab.pve.requests)
        plan_of(playbook, inv)
        return Counter(path for method, path, _ in pve_lab.pve.requests[before:] if method == "GET")

    without = gets(plain / "site.yaml")
    before = len(pve_lab.pve.requests)
    plan, session = plan_of(pb, inv)
    assert not plan.unreachable, plan.unreachable
    f = session.facts["pve"]["facts"]
    assert f["proxmox"]["version"] == str(pve_lab.pve.version)
    assert f["proxmox"]["release"] == str(pve_lab.pve.release_version)
    assert f["proxmox"]["nodes"] == sorted(pve_lab.pve.nodes) and "pve1" in f["proxmox"]["nodes_online"]
    asked = Counter(path for method, path, _ in pve_lab.pve.requests[before:] if method == "GET")
    # facts add one GET of version; the nodes list is the one the step's own check reads (asked once)
    assert asked - without == Counter({"/api2/json/version": 1})
    assert asked["/api2/json/nodes"] == without["/api2/json/nodes"] == 1
    assert statuses(plan)[("pve", "on8")] == "noop"
    assert "ansible_os_family" not in session.facts["pve"]  # no OS facts through the API


def test_example_host_info_on_local(tmp_path: Path) -> None:
    from tests.oracle import Oracle

    out = tmp_path / "info"
    oracle = Oracle(tmp_path, inventory=ROOT / "inventory.yaml", variables=[f"info_dir={out}"])
    oracle.check(ROOT / "playbooks" / "host-info.yaml", check_actions=True)
    report = (out / "host.txt").read_text()
    assert f"arch: {platform.machine()}" in report and f"os: {os_release()['ID']}" in report
    oracle.check(ROOT / "playbooks" / "host-info.yaml", check_actions=True)
    assert os.path.isdir(out)
