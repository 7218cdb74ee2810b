"""Ansible inventories read directly (runner/inventory/): INI and YAML formats, ranges, groups and
children, variables, the ansible_* -> opsrun settings mapping with its warnings, located errors,
host lists, inventory folders and saved `ansible-inventory --list` output."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from runner import config
from runner.errors import InvalidInput
from runner.inventory import ansible
from runner.model import Inventory


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def load(path: Path) -> Inventory:
    return config.load_inventory(str(path))


def errors_of(path: Path) -> list[str]:
    with pytest.raises(InvalidInput) as exc:
        load(path)
    return [d.render() for d in exc.value.diagnostics]


INI = """\
# the web tier and its database
bastion.example.net ansible_user=jump

[web]
web[01:03].example.net
web-canary ansible_host=192.0.2.50 ansible_port=2201 http_port=9090

[db]
db-[a:c] ansible_become=yes ansible_become_user=root

[web:vars]
http_port=8080
ansible_user=deploy
ansible_ssh_private_key_file=keys/deploy
debug=False

[prod:children]
web
db

[prod:vars]
env="prod"
http_port=80
ntp=['a.pool', 'b.pool']
"""


def test_ini_groups_children_ranges_and_variables(tmp_path: Path) -> None:
    inv = load(write(tmp_path / "hosts.ini", INI))
    assert list(inv.groups["web"]) == ["web01.example.net", "web02.example.net", "web03.example.net", "web-canary"]
    assert inv.groups["db"] == ("db-a", "db-b", "db-c")
    assert set(inv.groups["prod"]) == {*inv.groups["web"], *inv.groups["db"]}
    assert inv.groups["ungrouped"] == ("bastion.example.net",)
    web1 = inv.hosts["web01.example.net"]
    assert web1.transport == "ssh" and web1.groups == ("prod", "web")
    # a child group's vars win over its parent's (Ansible's order), values typed as Ansible reads them
    assert web1.group_vars["http_port"] == 8080 and web1.group_vars["env"] == "prod"
    assert web1.group_vars["ntp"] == ["a.pool", "b.pool"] and web1.group_vars["debug"] is False
    assert web1.settings == {"user": "deploy", "key": "keys/deploy"}
    canary = inv.hosts["web-canary"]
    assert canary.settings == {"address": "192.0.2.50", "port": 2201, "user": "deploy", "key": "keys/deploy"}
    assert canary.vars["http_port"] == 9090  # a host var beats every group var
    assert inv.hosts["db-b"].settings == {"sudo": True}
    assert inv.hosts["bastion.example.net"].settings == {"user": "jump"}
    assert not inv.warnings  # every variable used here has an opsrun equivalent


def test_ini_positions_and_key_paths_resolve_like_opsrun_inventories(tmp_path: Path) -> None:
    inv = load(write(tmp_path / "hosts.ini", INI))
    key = config.resolved_settings(inv, inv.hosts["web01.example.net"])["key"]
    assert key == str(tmp_path / "keys" / "deploy")  # relative to the inventory's folder


@pytest.mark.parametrize(("pattern", "hosts"), [
    ("web[01:03]", ["web01", "web02", "web03"]),
    ("n[1:10:4]", ["n1", "n5", "n9"]),
    ("db[a:c]", ["dba", "dbb", "dbc"]),
    ("r[1:2]-[a:b]", ["r1-a", "r1-b", "r2-a", "r2-b"]),
    ("w[:2]", ["w0", "w1", "w2"]),
    ("plain", ["plain"]),
])
def test_ranges_expand_as_ansible_does(pattern: str, hosts: list[str]) -> None:
    assert ansible.expand(pattern) == hosts


@pytest.mark.parametrize(("pattern", "message"), [
    ("w[1:x]", "not a range of numbers or of single letters"),
    ("w[01:100]", "same width"),
    ("w[5:1]", "must go up"),
    ("w[1:3:0]", "step must be a whole number"),
    ("w[1:2:3:4]", "not a range"),
    ("w[0:99999999]", "more than 100,000 hosts"),
])
def test_bad_ranges_are_refused(pattern: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ansible.expand(pattern)


def test_host_ports_and_ipv6(tmp_path: Path) -> None:
    assert ansible.split_port("h.example:2222") == ("h.example", 2222)
    assert ansible.split_port("[2001:db8::1]:22") == ("2001:db8::1", 22)
    assert ansible.split_port("web[01:02]:2200") == ("web[01:02]", 2200)
    assert ansible.split_port("2001:db8::5") == ("2001:db8::5", None)
    inv = load(write(tmp_path / "h.ini", "[web]\nw[1:2]:2200\n"))
    assert inv.hosts["w2"].settings == {"port": 2200}


YAML = """\
all:
  vars:
    ansible_user: admin
    region: eu
  hosts:
    solo:
  children:
    web:
      vars:
        region: eu-west
        ansible_ssh_common_args: "-o ProxyJump=ops@bastion:2222 -o StrictHostKeyChecking=accept-new"
      hosts:
        www[1:2]:
          ansible_host: 10.0.0.1
        alt:2200:
      children:
        canary:
          hosts:
            www1:
              ansible_host: "{{ inventory_hostname }}.lan"
              ansible_become_password: "{{ lookup('env', 'WWW1_SUDO') }}"
local-box:
  hosts:
    localhost:
      ansible_connection: local
      ansible_python_interpreter: /usr/bin/python3
"""


def test_yaml_format_with_nested_children(tmp_path: Path) -> None:
    inv = load(write(tmp_path / "hosts.yml", YAML))
    assert set(inv.groups) == {"web", "canary", "local-box", "ungrouped"}
    assert inv.groups["web"] == ("www1", "www2", "alt")
    assert inv.groups["canary"] == ("www1",) and inv.groups["ungrouped"] == ("solo",)
    www1 = inv.hosts["www1"]
    assert www1.groups == ("web", "canary")  # parent first: canary's vars win
    assert www1.settings == {"jump": "ops@bastion:2222", "known_hosts": "accept-new", "address": "www1.lan",
                             "user": "admin", "sudo_password": "env:WWW1_SUDO"}
    assert inv.hosts["www2"].settings["address"] == "10.0.0.1"
    assert inv.hosts["alt"].settings["port"] == 2200
    assert inv.hosts["solo"].settings == {"user": "admin"} and inv.hosts["solo"].group_vars["region"] == "eu"
    assert www1.group_vars["region"] == "eu-west"
    assert inv.hosts["localhost"].transport == "local" and inv.hosts["localhost"].settings == {}
    (warning,) = inv.warnings
    assert warning.severity == "warning" and warning.file == str(tmp_path / "hosts.yml") and warning.line == 26
    assert "ansible_python_interpreter has no opsrun equivalent" in warning.message


def test_a_warning_is_given_once_per_variable(tmp_path: Path) -> None:
    inv = load(write(tmp_path / "hosts", """\
        a ansible_python_interpreter=/usr/bin/python3 ansible_ssh_pipelining=true
        b ansible_python_interpreter=/usr/bin/python3 ansible_become_user=postgres ansible_become_method=su
        c ansible_become_user=root ansible_become_method=sudo
        """))
    keys = sorted(w.message.split(" ")[0].split("=")[0] for w in inv.warnings)
    assert keys == ["ansible_become_method", "ansible_become_user", "ansible_python_interpreter",
                    "ansible_ssh_pipelining"]
    assert all(w.line in (1, 2) for w in inv.warnings)
    assert inv.hosts["b"].vars["ansible_python_interpreter"] == "/usr/bin/python3"  # still a variable


def test_connection_kinds_and_opsrun_settings_as_variables(tmp_path: Path) -> None:
    inv = load(write(tmp_path / "hosts", """\
        [all]
        here ansible_connection=local ansible_host=ignored ansible_become=true
        there ansible_connection=ssh ansible_host_key_checking=false ansible_timeout=7
        pve opsrun_transport=proxmox opsrun_api=https://pve.example:8006 opsrun_token_id=ops@pve!ci opsrun_token_secret=env:PVE
        localhost ansible_connection=ssh
        """))
    assert inv.hosts["here"].transport == "local" and inv.hosts["here"].settings == {"sudo": True}
    assert inv.hosts["there"].settings == {"known_hosts": "off", "connect_timeout": 7.0}
    pve = inv.hosts["pve"]
    assert pve.transport == "proxmox"
    assert pve.settings == {"api": "https://pve.example:8006", "token_id": "ops@pve!ci", "token_secret": "env:PVE"}
    assert inv.hosts["localhost"].transport == "ssh"  # said so: an explicit localhost over ssh


def test_mapping_errors_point_at_the_variable(tmp_path: Path) -> None:
    path = write(tmp_path / "hosts", """\
        [web]
        w1 ansible_port=99999 ansible_become_password=hunter2
        w2 ansible_connection=winrm ansible_become=maybe
        w3 ansible_host="{{ nowhere }}" opsrun_known_hosts=sometimes
        """)
    got = "\n".join(errors_of(path))
    f = str(path)
    assert f"{f}:2:4: error: host variable ansible_port: expected a port number 1..65535, got 99999" in got
    assert f"{f}:2:23: error: host variable ansible_become_password: holds a secret" in got
    assert "hunter2" not in got  # a secret is never echoed
    assert f"{f}:3:4: error: host variable ansible_connection: 'winrm' is not a way opsrun reaches hosts" in got
    assert f"{f}:3:29: error: host variable ansible_become: expected true or false, got 'maybe'" in got
    assert "ansible_host: cannot be rendered for host w3: reads 'nowhere', which is not defined" in got
    assert f"{f}:4:33: error: host w3: opsrun_known_hosts (opsrun setting 'known_hosts')" in got


def test_ini_syntax_errors_are_located_with_a_hint(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.ini", """\
        [web]
        web[01:x]
        web1 foo
        web2 key="unclosed

        [db:vars]
        a=1

        [prod:children]
        nope

        [x:weird]
        """)
    got = errors_of(path)
    f = str(path)
    assert got[0].startswith(f"{f}:2:1: error: host 'web[01:x]': [01:x] is not a range")
    assert got[1].startswith(f"{f}:3:6: error: expected key=value after the host name, got 'foo'")
    assert got[2].startswith(f"{f}:4:1: error: cannot read this host line")
    assert got[3] == (f"{f}:6:1: error: [db:vars] sets vars of group 'db', which is not defined\n"
                      "    hint: add a [db] section (it may be empty), or fix the name")
    assert got[4].startswith(f"{f}:10:1: error: [prod:children] names group 'nope', which is not defined")
    assert got[5].startswith(f"{f}:12:1: error: section [x:weird] has an unknown type 'weird'")


def test_schema_errors_point_into_the_ansible_file(tmp_path: Path) -> None:
    path = write(tmp_path / "hosts.yml", """\
        all:
          children:
            web:
              hosts:
                w1:
                  bad-name: 1
        """)
    (got,) = errors_of(path)
    assert got.startswith(f"{path}:6:11: error: 'bad-name' must be a variable name")


def test_group_cycles_in_ansible_yaml(tmp_path: Path) -> None:
    path = write(tmp_path / "hosts.yml", """\
        a:
          children:
            b:
              children:
                a:
        """)
    (got,) = errors_of(path)
    assert got.startswith(f"{path}:3:5: error: group cycle: a -> b -> a")


def test_yaml_shape_errors_and_unknown_keys(tmp_path: Path) -> None:
    path = write(tmp_path / "hosts.yaml", """\
        all:
          children:
            web:
              hosts: [w1, w2]
        """)
    (got,) = errors_of(path)
    assert got.startswith(f"{path}:4:7: error: 'hosts' of group 'web' must be a mapping, got list")
    inv = load(write(tmp_path / "ok.yaml", "all:\n  children:\n    web:\n      host:\n        w1:\n"))
    assert "unexpected key 'host' in group 'web'" in inv.warnings[0].message


def test_format_is_detected_from_the_file(tmp_path: Path) -> None:
    ini_without_suffix = load(write(tmp_path / "inventory", "[web]\nw1\n"))
    assert ini_without_suffix.groups["web"] == ("w1",)
    one_line = load(write(tmp_path / "hosts", "only-host ansible_host=192.0.2.9\n"))
    assert one_line.hosts["only-host"].settings == {"address": "192.0.2.9"}
    opsrun = load(write(tmp_path / "inv.yml", "opsrun: 1\nhosts:\n  a: {address: 192.0.2.1}\n"))
    assert opsrun.hosts["a"].settings == {"address": "192.0.2.1"}
    broken = errors_of(write(tmp_path / "broken.yml", "opsrun: 1\nhots: {}\n"))  # opsrun's own errors
    assert any("unknown key 'hots'" in e for e in broken), broken
    # a YAML file that is not YAML is a YAML error, not an INI guess
    with pytest.raises(InvalidInput) as exc:
        load(write(tmp_path / "bad.yml", "[web\nw1\n"))
    assert "YAML syntax" in exc.value.diagnostics[0].message


def test_inventory_plugin_configs_get_a_hint(tmp_path: Path) -> None:
    path = write(tmp_path / "pve.yml", "plugin: community.general.proxmox\nurl: https://pve:8006\n")
    (got,) = errors_of(path)
    assert "opsrun does not run Ansible inventory plugins" in got and "proxmox:" in got


def test_host_list_and_saved_list_output(tmp_path: Path) -> None:
    inv = config.load_inventory("web1,web2:2200,")
    assert inv.groups["ungrouped"] == ("web1", "web2") and inv.hosts["web2"].settings == {"port": 2200}
    saved = {"_meta": {"hostvars": {"a": {"ansible_host": "192.0.2.1"}}},
             "all": {"children": ["web"]}, "web": {"hosts": ["a", "b"], "vars": {"x": 1}}}
    inv = load(write(tmp_path / "list.json", json.dumps(saved)))
    assert inv.groups["web"] == ("a", "b") and inv.hosts["a"].settings == {"address": "192.0.2.1"}
    assert inv.hosts["b"].group_vars == {"x": 1}


def test_an_inventory_folder_merges_its_files(tmp_path: Path) -> None:
    folder = tmp_path / "inventories" / "prod"
    write(folder / "01-hosts.ini", "[web]\nw1\nw2\n")
    write(folder / "02-more.yml", "all:\n  children:\n    web:\n      hosts:\n        w3:\n    db:\n      hosts:\n"
                                  "        d1:\n          bad-name: 1\n")
    write(folder / "README.md", "not an inventory\n")
    write(folder / "group_vars" / "web.yml", "tier: front\n")
    (got,) = errors_of(folder)
    assert got.startswith(f"{folder / '02-more.yml'}:9:11: error: 'bad-name' must be a variable name")
    write(folder / "02-more.yml", "all:\n  children:\n    web:\n      hosts:\n        w3:\n")
    inv = load(folder)
    assert inv.groups["web"] == ("w1", "w2", "w3")
    assert config.vars_files(inv, inv.hosts["w3"], None)[0] == [{"tier": "front"}]


def test_validate_takes_an_ansible_inventory(tmp_path: Path) -> None:
    from runner.cli import main

    write(tmp_path / "hosts.ini", "[web]\nw1 ansible_port=nope\n")
    write(tmp_path / "site.yaml", "opsrun: 1\nname: t\nhosts: web\nsteps:\n  - id: a\n    run: {command: 'true'}\n")
    with pytest.raises(SystemExit) as exc:
        main(["validate", str(tmp_path / "site.yaml"), "-i", str(tmp_path / "hosts.ini")])
    assert exc.value.code == 4


def test_check_inventory_gives_errors_or_warnings(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.ini", "[web]\nw1 ansible_port=x\n")
    (err,) = config.check_inventory(str(bad))
    assert err.severity == "error" and err.line == 2
    ok = write(tmp_path / "ok.ini", "[web]\nw1 ansible_python_interpreter=auto\n")
    (warning,) = config.check_inventory(str(ok))
    assert warning.severity == "warning" and warning.line == 2
    assert config.check_inventory(str(write(tmp_path / "clean.ini", "[web]\nw1\n"))) == []


def test_opsrun_settings_that_do_not_fit_the_transport_are_errors(tmp_path: Path) -> None:
    path = write(tmp_path / "hosts", """\
        [all:vars]
        ansible_user=deploy

        [all]
        pve opsrun_transport=proxmox opsrun_api=https://pve:8006 opsrun_token_id=a@pve!t opsrun_token_secret=env:T
        box ansible_connection=local opsrun_port=22
        """)
    got = "\n".join(errors_of(path))
    assert f"{path}:6:30: error: host box: opsrun_port (opsrun setting 'port')" in got, got
    path.write_text(path.read_text().replace(" opsrun_port=22", ""))
    inv = load(path)
    assert "user" not in inv.hosts["pve"].settings  # ansible_user is an ssh login, not the API user
