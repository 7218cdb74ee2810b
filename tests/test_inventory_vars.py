"""group_vars/ and host_vars/ beside the inventory and beside the playbook (runner/inventory/
vars_dirs.py): every precedence layer in order, the file and folder forms, located errors, the
inventory digest, connection variables from vars files, and a plan on `local` through an Ansible
INI inventory that shows the variables applied."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runner import config
from runner.errors import InvalidInput
from runner.model import Playbook

ROOT = Path(__file__).resolve().parent.parent

# lowest first, as documented in docs/playbooks.md ("Variables and precedence")
LAYERS = ["inventory_all", "inventory_group", "inv_gv_all", "pb_gv_all", "inv_gv_group", "pb_gv_group",
          "playbook", "inventory_host", "inv_hv", "pb_hv", "cli"]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def yaml_vars(layer: str) -> str:
    """x<i> for every layer i at or above this one, valued with this layer's name."""
    n = LAYERS.index(layer)
    return "".join(f"x{i}: {layer}\n" for i in range(n, len(LAYERS)))


def ini_vars(layer: str) -> str:
    n = LAYERS.index(layer)
    return " ".join(f"x{i}={layer}" for i in range(n, len(LAYERS)))


def test_every_layer_in_precedence_order(tmp_path: Path) -> None:
    inv_dir, pb_dir = tmp_path / "inventory", tmp_path / "playbooks"
    all_vars = ini_vars("inventory_all").replace(" ", "\n")
    web_vars = ini_vars("inventory_group").replace(" ", "\n")
    write(inv_dir / "hosts.ini", f"[web]\nh1 {ini_vars('inventory_host')}\n\n[all:vars]\n{all_vars}\n\n"
                                 f"[web:vars]\n{web_vars}\n")
    write(inv_dir / "group_vars" / "all.yml", yaml_vars("inv_gv_all"))
    write(inv_dir / "group_vars" / "web.yaml", yaml_vars("inv_gv_group"))
    write(inv_dir / "host_vars" / "h1.json", "{" + ", ".join(
        f'"x{i}": "inv_hv"' for i in range(LAYERS.index("inv_hv"), len(LAYERS))) + "}")
    write(pb_dir / "group_vars" / "all", yaml_vars("pb_gv_all"))  # a file without a suffix
    write(pb_dir / "group_vars" / "web" / "10-first.yml", yaml_vars("pb_gv_group"))
    write(pb_dir / "group_vars" / "web" / "nested" / "20-second.yml", "only_here: nested\n")
    write(pb_dir / "host_vars" / "h1.yml", yaml_vars("pb_hv"))
    inv = config.load_inventory(str(inv_dir / "hosts.ini"))
    playbook = Playbook("t", "web", (), vars={f"x{i}": "playbook" for i in range(LAYERS.index("playbook"),
                                                                                   len(LAYERS))},
                        dir=str(pb_dir))
    cli = {f"x{len(LAYERS) - 1}": "cli"}
    got = config.host_vars(inv, inv.hosts["h1"], playbook, cli)
    assert {f"x{i}": got[f"x{i}"] for i in range(len(LAYERS))} == {f"x{i}": layer for i, layer in enumerate(LAYERS)}
    assert got["only_here"] == "nested"


def test_same_folder_for_inventory_and_playbook_is_read_once(tmp_path: Path) -> None:
    write(tmp_path / "hosts", "[web]\nh1\n")
    write(tmp_path / "group_vars" / "web.yml", "port: 81\n")
    inv = config.load_inventory(str(tmp_path / "hosts"))
    groups, hosts = config.vars_files(inv, inv.hosts["h1"], str(tmp_path))
    assert groups == [{"port": 81}] and hosts == []


def test_opsrun_inventory_groups_and_implicit_local(tmp_path: Path) -> None:
    write(tmp_path / "inventory.yaml", """\
        opsrun: 1
        vars: {tier: none}
        hosts:
          app1: {transport: local}
        groups:
          app: {hosts: [app1], vars: {tier: inventory}}
        """)
    write(tmp_path / "group_vars" / "app.yml", "tier: group_vars\n")
    write(tmp_path / "group_vars" / "all.yml", "everyone: yes\n")
    write(tmp_path / "host_vars" / "localhost.yml", "me: localhost\n")
    inv = config.load_inventory(str(tmp_path / "inventory.yaml"))
    pb = Playbook("t", "all", (), dir=str(tmp_path / "elsewhere"))
    assert config.host_vars(inv, inv.hosts["app1"], pb, {})["tier"] == "group_vars"
    local = config.host_vars(inv, inv.hosts["local"], pb, {})  # the implicit host: `all` and localhost
    assert local["everyone"] is True and local["me"] == "localhost" and local["tier"] == "none"


def test_the_first_of_the_names_is_read_and_the_others_are_warned_about(tmp_path: Path) -> None:
    write(tmp_path / "hosts", "[web]\nh1\n")
    write(tmp_path / "group_vars" / "web.yml", "a: yml\n")
    write(tmp_path / "group_vars" / "web" / "x.yml", "a: folder\n")
    inv = config.load_inventory(str(tmp_path / "hosts"))
    assert config.vars_files(inv, inv.hosts["h1"], None)[0] == [{"a": "yml"}]
    (warning,) = inv.warnings
    assert warning.file == str(tmp_path / "group_vars" / "web") and "is read for group 'web'" in warning.message


def test_connection_variables_in_vars_files_become_settings(tmp_path: Path) -> None:
    write(tmp_path / "hosts", "[web]\nh1 ansible_host=192.0.2.7\nh2\n")
    write(tmp_path / "group_vars" / "web.yml", "ansible_user: deploy\nansible_port: 2222\n")
    write(tmp_path / "host_vars" / "h2.yml", "ansible_port: 2200\nansible_python_interpreter: auto\n")
    inv = config.load_inventory(str(tmp_path / "hosts"))
    assert inv.hosts["h1"].settings == {"address": "192.0.2.7", "port": 2222, "user": "deploy"}
    assert inv.hosts["h2"].settings == {"port": 2200, "user": "deploy"}
    (warning,) = inv.warnings
    assert (warning.file, warning.line) == (str(tmp_path / "host_vars" / "h2.yml"), 2)
    # an explicit opsrun setting wins over a variable
    write(tmp_path / "inventory.yaml", "opsrun: 1\nhosts:\n  h1: {user: root}\ngroups:\n  web: {hosts: [h1]}\n")
    inv = config.load_inventory(str(tmp_path / "inventory.yaml"))
    assert inv.hosts["h1"].settings == {"user": "root", "port": 2222}


def test_bad_vars_files_are_located_errors(tmp_path: Path) -> None:
    write(tmp_path / "hosts", "[web]\nh1\n")
    bad = write(tmp_path / "group_vars" / "web.yml", "ok: 1\nnot-a-name: 2\n")
    with pytest.raises(InvalidInput) as exc:
        config.load_inventory(str(tmp_path / "hosts"))
    assert exc.value.diagnostics[0].render().startswith(f"{bad}:2:1: error: 'not-a-name' is not a variable name")
    bad.write_text("- a list\n")
    with pytest.raises(InvalidInput, match="not a mapping"):
        config.load_inventory(str(tmp_path / "hosts"))
    bad.write_text("$ANSIBLE_VAULT;1.1;AES256\n6638643965\n")
    with pytest.raises(InvalidInput, match="ansible-vault") as exc:
        config.load_inventory(str(tmp_path / "hosts"))
    assert "secret(" in exc.value.diagnostics[0].hint
    bad.write_text("a: [unclosed\n")
    with pytest.raises(InvalidInput) as exc:
        config.load_inventory(str(tmp_path / "hosts"))
    assert exc.value.diagnostics[0].file == str(bad) and exc.value.diagnostics[0].line >= 1


def test_the_inventory_digest_covers_its_vars_files(tmp_path: Path) -> None:
    write(tmp_path / "hosts", "[web]\nh1\n")
    plain = config.load_inventory(str(tmp_path / "hosts")).digest
    write(tmp_path / "group_vars" / "web.yml", "port: 1\n")
    one = config.load_inventory(str(tmp_path / "hosts")).digest
    write(tmp_path / "group_vars" / "web.yml", "port: 2\n")
    two = config.load_inventory(str(tmp_path / "hosts")).digest
    assert len({plain, one, two}) == 3
    write(tmp_path / "group_vars" / "other.yml", "unused: 1\n")  # a group this inventory lacks: not read
    assert config.load_inventory(str(tmp_path / "hosts")).digest == two


def test_validate_sees_vars_from_files(tmp_path: Path) -> None:
    from runner import load, offline

    write(tmp_path / "hosts", "[web]\nh1 ansible_connection=local\n")
    write(tmp_path / "group_vars" / "web.yml", "port: 8080\n")
    site = write(tmp_path / "site.yaml", """\
        opsrun: 1
        name: t
        hosts: web
        steps:
          - id: a
            run: {command: "echo {{ port }} {{ missing }}"}
        """)
    inv = config.load_inventory(str(tmp_path / "hosts"))
    found = [d.message for d in offline.validate_playbook(load.read(site), inv, {})]
    assert any("missing" in m for m in found) and not any("'port'" in m for m in found), found


def opsrun(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "OPSRUN_STATE_DIR"}
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=cwd, text=True, capture_output=True,
                          env={**env, "PYTHONPATH": str(ROOT)}, timeout=120)


def test_plan_on_local_through_an_ansible_ini_inventory(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write(tmp_path / "inventory" / "hosts.ini", f"""\
        [box]
        localhost ansible_connection=local greeting=hello ansible_python_interpreter=/usr/bin/python3

        [box:vars]
        who=ini
        dest={out}
        """)
    write(tmp_path / "inventory" / "group_vars" / "box.yml", "who: group_vars\nsuffix: txt\n")
    write(tmp_path / "playbooks" / "host_vars" / "localhost.yml", "who: host_vars\n")
    write(tmp_path / "playbooks" / "site.yaml", """\
        opsrun: 1
        name: greet
        hosts: box
        steps:
          - id: note
            file: {path: "{{ dest }}.{{ suffix }}", content: "{{ greeting }} from {{ who }}\\n"}
        """)
    p = opsrun("plan", "playbooks/site.yaml", "-i", "inventory/hosts.ini", "--detailed-exitcode", cwd=tmp_path)
    assert p.returncode == 2, p.stdout + p.stderr
    assert f"create file {out}.txt" in p.stdout and "+hello from host_vars" in p.stdout, p.stdout
    assert "Traceback" not in p.stderr
    applied = opsrun("apply", "playbooks/site.yaml", "-i", "inventory/hosts.ini", "--yes", cwd=tmp_path)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert (tmp_path / "out.txt").read_text() == "hello from host_vars\n"


