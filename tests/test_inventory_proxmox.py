"""The Proxmox inventory source (runner/inventory/proxmox.py) against fakepve: guests chosen by
tag, pool, type and state, their addresses from the config, cloud-init or the agent, asked for
only when a run needs the group; and one repo that creates a container, then configures it."""

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

from runner import config
from runner.errors import AuthError, InvalidInput
from runner.model import Playbook
from runner.session import select_hosts
from tests.fixtures_pve import PveLab, start_pve_process, stop_process
from tests.peers.sshd import Sshd

ROOT = Path(__file__).resolve().parent.parent


def inventory(tmp_path: Path, lab: PveLab, groups: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OPSRUN_TEST_PVE_T", str(lab.token_secret))
    doc = {"opsrun": 1,
           "hosts": {"pve": {"transport": "proxmox", "api": lab.url, "token_id": lab.token_id,
                             "token_secret": "env:OPSRUN_TEST_PVE_T", "ca_file": lab.cafile, "node": "pve1"}},
           "groups": groups}
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def guests(lab: PveLab) -> None:
    pve = lab.pve
    lab.sync(pve.add_ct, 101, "web1", status="running",
             config={"tags": "web;prod", "net0": "name=eth0,bridge=vmbr0,ip=192.0.2.11/24"})
    lab.sync(pve.add_ct, 102, "web2", status="running", config={"tags": "web", "net0": "name=eth0,ip=dhcp"})
    lab.sync(pve.add_ct, 103, "web3", status="stopped", config={"tags": "web", "net0": "name=eth0,ip=192.0.2.13/24"})
    lab.sync(pve.add_ct, 104, "labct", status="stopped", pool="lab",
             config={"net0": "name=eth0,ip=192.0.2.14/24"})
    vm = lab.sync(pve.add_vm, 201, "vm-agent", status="running", config={"agent": "1", "net0": "virtio,bridge=vmbr0"})
    lab.sync(setattr, vm, "agent", {})  # an agent that runs: fakepve's default answers (eth0 192.0.2.10)
    lab.sync(pve.add_vm, 202, "cloud", status="running", config={"ipconfig0": "ip=198.51.100.5/24,gw=198.51.100.1"})
    lab.sync(pve.add_vm, 9000, "tmpl", template=True, status="stopped", config={"tags": "web"})


GROUPS = {
    "web": {"proxmox": {"host": "pve", "tags": ["web"], "type": "lxc",
                        "settings": {"user": "root", "known_hosts": "accept-new"}}},
    "vms": {"proxmox": {"host": "pve", "type": "qemu"}},
    "lab": {"proxmox": {"host": "pve", "pool": "lab", "running": False}},
    "site": {"children": ["web"], "vars": {"dc": "one"}},
}


def test_guests_join_their_group_only_when_needed(pve_lab: PveLab, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    guests(pve_lab)
    (tmp_path / "host_vars").mkdir()
    (tmp_path / "host_vars" / "web2.yml").write_text("ansible_host: 192.0.2.99\nrole: spare\n")
    inv = config.load_inventory(str(inventory(tmp_path, pve_lab, GROUPS, monkeypatch)))
    asked = len(pve_lab.pve.requests)
    assert inv.groups["web"] == () and asked == 0  # loading the inventory asks nothing

    config.resolve_sources(inv, "site")  # a parent of web: web's source is read, not the others
    assert inv.groups["web"] == ("web1", "web2") and inv.groups["site"] == ("web1", "web2")
    assert inv.groups["vms"] == () and set(inv.state.pending) == {"vms", "lab"}
    web1 = inv.hosts["web1"]
    assert web1.transport == "ssh" and web1.groups == ("web", "site")
    assert web1.settings == {"user": "root", "known_hosts": "accept-new", "address": "192.0.2.11"}
    assert web1.vars["proxmox_vmid"] == 101 and web1.vars["proxmox_tags"] == ["web", "prod"]
    assert web1.vars["proxmox_node"] == "pve1" and web1.vars["proxmox_type"] == "lxc"
    assert web1.group_vars["dc"] == "one"
    web2 = inv.hosts["web2"]  # dhcp: no address in Proxmox, so host_vars/ gives it
    assert web2.settings["address"] == "192.0.2.99"
    (warning,) = [w for w in inv.warnings if "web2" in w.message]
    assert "no address found for guest web2" in warning.message and warning.severity == "warning"
    pb = Playbook("t", "web", (), dir=str(tmp_path))
    assert config.host_vars(inv, web2, pb, {})["role"] == "spare"

    calls = len(pve_lab.pve.requests)
    config.resolve_sources(inv, "web")
    assert len(pve_lab.pve.requests) == calls  # read once per load

    config.resolve_sources(inv, "all")
    assert inv.groups["vms"] == ("vm-agent", "cloud")
    assert inv.hosts["vm-agent"].settings == {"address": "192.0.2.10"}  # from the guest agent
    assert inv.hosts["cloud"].settings == {"address": "198.51.100.5"}  # from cloud-init's ipconfig0
    assert inv.groups["lab"] == ("labct",) and "tmpl" not in inv.hosts  # stopped listed; templates never


def test_a_run_reads_the_sources_its_hosts_need(pve_lab: PveLab, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    guests(pve_lab)
    inv = config.load_inventory(str(inventory(tmp_path, pve_lab, GROUPS, monkeypatch)))
    assert select_hosts(inv, Playbook("t", "vms", ()), None) == ["vm-agent", "cloud"]
    assert set(inv.state.pending) == {"web", "lab"}
    assert select_hosts(inv, Playbook("t", "web*", ()), None) == ["web1", "web2"]  # a glob may name guests


def test_source_errors(pve_lab: PveLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = inventory(tmp_path, pve_lab, {"g": {"proxmox": {"host": "nope"}}}, monkeypatch)
    with pytest.raises(InvalidInput) as exc:
        config.load_inventory(str(path))
    d = exc.value.diagnostics[0]
    assert d.file == str(path) and d.line > 0
    assert "the proxmox source's host 'nope' is not a proxmox host" in d.message and "pve" in d.hint
    path = inventory(tmp_path, pve_lab, {"g": {"proxmox": {"host": "pve", "typo": 1}}}, monkeypatch)
    with pytest.raises(InvalidInput, match="not valid"):
        config.load_inventory(str(path))
    inv = config.load_inventory(str(inventory(tmp_path, pve_lab, GROUPS, monkeypatch)))
    monkeypatch.setenv("OPSRUN_TEST_PVE_T", "wrong")
    with pytest.raises(AuthError, match="token rejected"):
        config.resolve_sources(inv, "web")
    assert "web" in inv.state.pending  # not lost: a later try asks again


def test_validate_and_plan_of_other_hosts_never_ask_nor_import_proxmoxer(tmp_path: Path) -> None:
    """The API address is unreachable: any request would fail the command."""
    (tmp_path / "inventory.yaml").write_text(yaml.safe_dump({
        "opsrun": 1,
        "hosts": {"pve": {"transport": "proxmox", "api": "https://127.0.0.1:9", "token_id": "a@pve!t",
                          "token_secret": "env:NOPE"}},
        "groups": {"guests": {"proxmox": {"host": "pve"}}}}))
    (tmp_path / "guests.yaml").write_text("opsrun: 1\nname: g\nhosts: guests\nsteps:\n  - id: a\n"
                                          "    run: {command: 'true'}\n")
    code = textwrap.dedent(f"""\
        import sys
        from runner.cli import main
        for argv in (["plan", {str(ROOT / "playbooks" / "hello.yaml")!r}],
                     ["validate", "guests.yaml"]):
            try:
                main(argv)
            except SystemExit as exc:
                print("exit", exc.code)
        print(sorted(m for m in ("proxmoxer", "requests") if m in sys.modules))
        """)
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = res.stdout.strip().splitlines()
    assert lines[-1] == "[]" and res.stdout.count("exit 0") == 2, res.stdout + res.stderr


def opsrun(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=cwd, text=True, capture_output=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env}, timeout=180, stdin=subprocess.DEVNULL)


def test_one_repo_creates_a_container_then_configures_it(pve_pki: tuple[str, str], ssh_hosts: list[Sshd],
                                                         remote_dir: str, tmp_path: Path) -> None:
    """Container 310 is created (with a static address: the sshd that stands for it), then the
    `guests` group, read from Proxmox by tag, is configured over ssh."""
    ssh = ssh_hosts[0]
    proc, pve = start_pve_process(pve_pki)
    try:
        guest_ssh = {k: v for k, v in ssh.settings().items() if k != "address"}
        (tmp_path / "inventory.yaml").write_text(yaml.safe_dump({
            "opsrun": 1,
            "hosts": {"pve-lab": pve.settings()},
            "groups": {"guests": {"proxmox": {"host": "pve-lab", "tags": ["opsrun-guest"], "settings": guest_ssh}}},
        }, sort_keys=False))
        (tmp_path / "create.yaml").write_text(textwrap.dedent(f"""\
            opsrun: 1
            name: create the container
            hosts: pve-lab
            steps:
              - id: ct
                proxmox.lxc:
                  vmid: 310
                  hostname: app1
                  ostemplate: local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst
                  rootfs: local-lvm:8
                  net0: name=eth0,bridge=vmbr0,ip={ssh.address}/8
                  tags: [opsrun-guest]
                  state: running
            """))
        (tmp_path / "configure.yaml").write_text(textwrap.dedent(f"""\
            opsrun: 1
            name: configure the guests
            hosts: guests
            steps:
              - id: motd
                file:
                  path: {remote_dir}/motd
                  content: "container {{{{ proxmox_vmid }}}} on {{{{ proxmox_node }}}}\\n"
            """))
        env = pve.env()
        before = opsrun("plan", "configure.yaml", cwd=tmp_path, env=env)
        assert before.returncode == 4 and "match no host" in before.stderr, before.stdout + before.stderr
        created = opsrun("apply", "create.yaml", "--yes", cwd=tmp_path, env=env)
        assert created.returncode == 0, created.stdout + created.stderr
        plan = opsrun("plan", "configure.yaml", "--detailed-exitcode", cwd=tmp_path, env=env)
        assert plan.returncode == 2, plan.stdout + plan.stderr
        assert "app1" in plan.stdout and "container 310 on pve1" in plan.stdout, plan.stdout
        done = opsrun("apply", "configure.yaml", "--yes", cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert Path(remote_dir, "motd").read_text() == "container 310 on pve1\n"
    finally:
        stop_process(proc)


def test_inventory_list_shows_the_guests(pve_lab: PveLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from runner.inventory import show

    guests(pve_lab)
    inv = config.load_inventory(str(inventory(tmp_path, pve_lab, GROUPS, monkeypatch)))
    listed = json.loads(show.render(inv, list_=True))
    assert listed["web"]["hosts"] == ["web1", "web2"] and listed["site"]["children"] == ["web"]
    assert listed["_meta"]["hostvars"]["web1"]["ansible_host"] == "192.0.2.11"
    assert listed["_meta"]["hostvars"]["web1"]["opsrun_known_hosts"] == "accept-new"
    assert listed["_meta"]["hostvars"]["pve"]["opsrun_transport"] == "proxmox"
    assert listed["_meta"]["hostvars"]["pve"]["opsrun_token_secret"] == "env:OPSRUN_TEST_PVE_T"
    assert str(pve_lab.token_secret) not in json.dumps(listed)
