"""`opsrun inventory --list / --graph / --host` (runner/inventory/show.py): Ansible-compatible
output of what opsrun sees, which reads back into the same hosts and settings."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from runner import config
from runner.errors import InvalidInput
from runner.inventory import show

INI = """\
bastion ansible_user=jump

[web]
web[1:2] ansible_user=deploy
web-canary ansible_host=192.0.2.50 ansible_port=2201

[db]
db1 ansible_become=true ansible_become_password=env:DB_SUDO

[prod:children]
web
db

[prod:vars]
env=prod
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_graph_is_drawn_as_ansible_does(tmp_path: Path) -> None:
    inv = config.load_inventory(str(write(tmp_path / "hosts", INI)))
    assert show.render(inv, graph=True) == textwrap.dedent("""\
        @all:
          |--@prod:
          |  |--@db:
          |  |  |--db1
          |  |--@web:
          |  |  |--web-canary
          |  |  |--web1
          |  |  |--web2
          |--@ungrouped:
          |  |--bastion
        """)
    assert show.render(inv, graph=True, group="db") == "@db:\n  |--db1\n"
    with pytest.raises(InvalidInput, match="no group 'nope'"):
        show.render(inv, graph=True, group="nope")


def test_list_is_the_dynamic_inventory_json(tmp_path: Path) -> None:
    write(tmp_path / "group_vars" / "web.yml", "http_port: 8080\n")
    write(tmp_path / "pb" / "group_vars" / "all.yml", "from_playbook_dir: yes\n")
    inv = config.load_inventory(str(write(tmp_path / "hosts", INI)))
    listed = json.loads(show.render(inv, list_=True))
    assert listed["all"] == {"children": ["prod", "ungrouped"]}
    assert listed["prod"] == {"children": ["web", "db"]}
    assert listed["web"] == {"hosts": ["web1", "web2", "web-canary"]}
    assert listed["ungrouped"] == {"hosts": ["bastion"]}
    hv = listed["_meta"]["hostvars"]
    assert hv["web1"] == {"ansible_user": "deploy", "env": "prod", "http_port": 8080}
    assert hv["db1"]["ansible_become_password"] == "env:DB_SUDO"
    assert "local" not in hv  # the implicit local host, as Ansible's implicit localhost
    with_pb = json.loads(show.render(inv, list_=True, playbook_dir=str(tmp_path / "pb")))
    assert with_pb["_meta"]["hostvars"]["web1"]["from_playbook_dir"] is True


def test_host_shows_its_vars(tmp_path: Path) -> None:
    inv = config.load_inventory(str(write(tmp_path / "hosts", INI)))
    assert json.loads(show.render(inv, host="web-canary")) == {
        "ansible_host": "192.0.2.50", "ansible_port": 2201, "env": "prod"}
    with pytest.raises(InvalidInput, match="no host 'web9'"):
        show.render(inv, host="web9")
    with pytest.raises(InvalidInput, match="one of --list, --graph or --host"):
        show.render(inv, list_=True, graph=True)


def test_opsrun_inventories_show_settings_as_variables_and_read_back(tmp_path: Path) -> None:
    inv_path = write(tmp_path / "inventory.yaml", """\
        opsrun: 1
        vars: {site: eu}
        hosts:
          local: {transport: local}
          web1: {address: 192.0.2.1, port: 2222, user: deploy, key: keys/id, sudo: true,
                 sudo_password: env:SUDO, known_hosts: accept-new, jump: bastion}
          bastion: {address: 192.0.2.254}
          pve: {transport: proxmox, api: "https://pve:8006", token_id: "a@pve!t", token_secret: env:T}
        groups:
          web: {hosts: [web1], vars: {tier: front}}
          infra: {hosts: [bastion, pve], children: [web]}
        """)
    inv = config.load_inventory(str(inv_path))
    listed = show.render(inv, list_=True)
    hv = json.loads(listed)["_meta"]["hostvars"]
    assert hv["web1"]["ansible_become_password"] == "{{ lookup('env', 'SUDO') }}"
    assert hv["local"] == {"ansible_connection": "local", "site": "eu"}
    again = config.load_inventory(str(write(tmp_path / "listed.json", listed)))
    for name in ("web1", "bastion", "pve", "local"):
        assert again.hosts[name].transport == inv.hosts[name].transport, name
        assert again.hosts[name].settings == inv.hosts[name].settings, name
    assert set(again.groups["infra"]) == set(inv.groups["infra"])
    assert again.hosts["web1"].vars["tier"] == "front"  # --list gives every var to the hosts


def test_the_inventory_command_shows_an_ansible_ini_as_opsrun_sees_it(tmp_path: Path) -> None:
    import subprocess
    import sys

    ini = tmp_path / "hosts.ini"
    ini.write_text("[web]\nweb[01:03] ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n"
                   "[web:vars]\nport=8080\n", encoding="utf-8")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "runner", "inventory", "-i", str(ini), *args],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)

    graph = run("--graph")
    assert graph.returncode == 0 and "|--@web:" in graph.stdout and "web03" in graph.stdout
    assert "ansible_python_interpreter" in graph.stderr  # no opsrun equivalent: warned, once
    listed = json.loads(run("--list").stdout)
    assert listed["web"]["hosts"] == ["web01", "web02", "web03"]
    assert listed["_meta"]["hostvars"]["web02"]["port"] == 8080
    both = run("--list", "--graph")
    assert both.returncode == 4 and "one of --list, --graph or --host" in both.stderr


def test_plan_warns_and_validate_checks_ansible_inventory_files(tmp_path: Path) -> None:
    import subprocess
    import sys

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "runner", *args], capture_output=True, text=True,
                              timeout=60, cwd=tmp_path)

    (tmp_path / "h.ini").write_text("[l]\nlocalhost ansible_connection=local ansible_python_interpreter=/x\n")
    (tmp_path / "pb.yaml").write_text("opsrun: 1\nname: t\nhosts: all\nsteps:\n  - id: a\n"
                                      "    run: {command: 'echo hi', changed_when: false}\n")
    plan = run("plan", "pb.yaml", "-i", "h.ini")
    assert plan.returncode == 0 and "h.ini:2:" in plan.stderr and "ansible_python_interpreter" in plan.stderr
    (tmp_path / "good.yml").write_text("all:\n  hosts:\n    w1: {ansible_host: 10.0.0.1}\n")
    (tmp_path / "bad.yml").write_text("all:\n  hosts:\n    - w1\n")
    assert run("validate", "good.yml").returncode == 0
    bad = run("validate", "bad.yml")
    assert bad.returncode == 4 and "bad.yml:2:" in bad.stderr
