"""Executable (dynamic) inventories, the Ansible protocol (runner/inventory/script.py): --list with
_meta.hostvars, the --host fallback, and failures that are clear and bounded in time and output."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from runner import config
from runner.errors import InvalidInput, OpsrunError
from runner.inventory import script


def program(path: Path, body: str) -> Path:
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return path


LIST = {
    "web": {"hosts": ["w1", "w2"], "vars": {"ansible_user": "deploy"}, "children": ["canary"]},
    "canary": ["w3"],
    "db": {"hosts": ["d1:2222"]},
    "all": {"vars": {"site": "eu"}},
    "_meta": {"hostvars": {"w1": {"ansible_host": "192.0.2.1", "role": "front"},
                           "w3": {"ansible_become": True}}},
}


def test_list_with_meta_is_one_call(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    inv_path = program(tmp_path / "inventory.py", f"""\
        import json, sys
        open({str(calls)!r}, "a").write(" ".join(sys.argv[1:]) + "\\n")
        print(json.dumps({LIST!r}))
        """)
    inv = config.load_inventory(str(inv_path))
    assert calls.read_text() == "--list\n"
    assert inv.groups["web"] == ("w1", "w2", "w3") and inv.groups["canary"] == ("w3",)
    w1 = inv.hosts["w1"]
    assert w1.settings == {"address": "192.0.2.1", "user": "deploy"} and w1.vars["role"] == "front"
    assert w1.group_vars["site"] == "eu"
    assert inv.hosts["w3"].settings == {"sudo": True, "user": "deploy"}
    assert inv.hosts["d1"].settings == {"port": 2222}


def test_without_meta_each_host_is_asked(tmp_path: Path) -> None:
    inv_path = program(tmp_path / "inv", """\
        import json, sys
        if sys.argv[1] == "--list":
            print(json.dumps({"web": ["w1", "w2"]}))
        else:
            print(json.dumps({"ansible_host": "10.0.0." + sys.argv[2][-1]}))
        """)
    inv = config.load_inventory(str(inv_path))
    assert inv.hosts["w2"].settings == {"address": "10.0.0.2"}
    before = inv.digest
    assert before == config.load_inventory(str(inv_path)).digest  # the answer, not the run, is digested


def test_a_failing_program_is_a_clear_error(tmp_path: Path) -> None:
    inv_path = program(tmp_path / "inv", """\
        import sys
        print("cannot reach the CMDB", file=sys.stderr)
        sys.exit(3)
        """)
    with pytest.raises(OpsrunError) as exc:
        config.load_inventory(str(inv_path))
    assert f"`{inv_path} --list` failed with exit code 3" in exc.value.message
    assert "cannot reach the CMDB" in exc.value.message and exc.value.exit_code == 1


def test_output_that_is_not_json_is_located(tmp_path: Path) -> None:
    inv_path = program(tmp_path / "inv", """\
        print('{"web": {"hosts": ["w1",]')
        """)
    with pytest.raises(InvalidInput) as exc:
        config.load_inventory(str(inv_path))
    d = exc.value.diagnostics[0]
    assert d.file == f"{inv_path} --list" and d.line >= 1 and "JSON syntax" in d.message
    empty = program(tmp_path / "empty", "pass\n")
    with pytest.raises(InvalidInput, match="printed nothing"):
        config.load_inventory(str(empty))
    wrong = program(tmp_path / "wrong", "print('[1, 2]')\n")
    with pytest.raises(InvalidInput) as exc:
        config.load_inventory(str(wrong))
    assert "must be a JSON object of groups" in exc.value.diagnostics[0].message


def test_a_hanging_program_is_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pidfile = tmp_path / "child.pid"
    inv_path = program(tmp_path / "inv", f"""\
        import os, subprocess, time
        child = subprocess.Popen(["sleep", "60"])
        open({str(pidfile)!r}, "w").write(str(child.pid))
        time.sleep(60)
        """)
    monkeypatch.setattr(script, "TIMEOUT", 1.0)
    start = time.monotonic()
    with pytest.raises(OpsrunError, match="did not finish within 1s"):
        config.load_inventory(str(inv_path))
    assert time.monotonic() - start < 10
    child = int(pidfile.read_text())
    for _ in range(50):  # the program's own children are stopped too (its process group)
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the inventory program's child still runs")


def test_output_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inv_path = program(tmp_path / "inv", """\
        import sys
        while True:
            sys.stdout.write("x" * 65536)
        """)
    monkeypatch.setattr(script, "MAX_OUTPUT", 1024 * 1024)
    with pytest.raises(OpsrunError, match="printed more than 1 MiB"):
        config.load_inventory(str(inv_path))


def test_only_programs_are_run(tmp_path: Path) -> None:
    """An INI or YAML file with its x bit set (a careless chmod) is read, not run."""
    ini = tmp_path / "hosts"
    ini.write_text("[web]\nw1\n")
    ini.chmod(0o755)
    assert not script.is_program(ini)
    assert config.load_inventory(str(ini)).groups["web"] == ("w1",)
    data = {"web": {"hosts": {"w1": None}}}
    yml = tmp_path / "hosts.yml"
    yml.write_text(json.dumps(data))
    yml.chmod(0o755)
    assert config.load_inventory(str(yml)).groups["web"] == ("w1",)
