"""`opsrun author` end to end against the fake LLM server on loopback (litellm makes real HTTP
calls): a valid playbook written with its header and offline plan, the repair loop fed with
located errors, a forbidden command refused, every provider down, litellm missing.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from runner import config, load, schema
from runner.cli import author as author_cmd
from runner.llm.gates import load_rules, to_yaml
from tests.peers import fake_llm as F

pytestmark = [pytest.mark.peer, pytest.mark.usefixtures("network_audit")]

ROOT = Path(__file__).resolve().parent.parent
REQUEST = "install nginx on the web group"
INVENTORY = """\
opsrun: 1
hosts:
  web1: {transport: ssh, address: 127.0.0.1, port: 1, user: nobody-canary}
  web2: {transport: ssh, address: 127.0.0.1, port: 1, user: nobody-canary}
groups:
  web: {hosts: [web1, web2]}
"""
GOOD: dict[str, Any] = {
    "opsrun": 1,
    "name": "nginx on the web group",
    "hosts": "web",
    "steps": [
        {"id": "nginx_pkg", "name": "Install nginx", "package": {"name": ["nginx"], "state": "present"}},
        {"id": "index", "file": {"path": "/var/www/html/index.html", "mode": "0644",
                                 "content": "<h1>{{ inventory_hostname }}</h1>\nserved by nginx\n"}},
        {"id": "nginx_svc", "service": {"name": "nginx", "state": "started", "enabled": True}},
        {"id": "probe", "run": {"command": "curl -fsS http://127.0.0.1/ >/dev/null", "changed_when": "false"}},
    ],
}


def app() -> typer.Typer:
    """A CLI with the author command registered exactly as runner.cli does."""
    cli = typer.Typer(add_completion=False)
    cli.callback()(lambda: None)  # keeps `author` a sub-command
    author_cmd.register(cli)
    return cli


def gateway_file(tmp_path: Path, providers: dict[str, Any], **routing: Any) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({
        "opsrun": 1, "providers": providers,
        "routing": {"retries_per_provider": 0, "deadline_s": 20, "cooldown_s": 60, **routing},
        "cache": {"enabled": False},
    }))
    return path


def openai(fake: F.FakeLLM, model: str = "fake-model") -> dict[str, Any]:
    return {"kind": "openai", "model": model, "api_base": fake.url + "/v1"}


@pytest.fixture
def inv(tmp_path: Path) -> Path:
    path = tmp_path / "inventory.yaml"
    path.write_text(INVENTORY)
    return path


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The current folder of the command (its .opsrun state stays in the test's folder)."""
    folder = tmp_path / "playbooks"
    folder.mkdir()
    monkeypatch.chdir(tmp_path)
    return folder


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app(), ["author", *args])


def user_messages(req: F.Request) -> list[str]:
    return [m["content"] for m in req.body["messages"] if m["role"] == "user"]


# ---------------------------------------------------------------- a valid answer


def test_valid_answer_is_written_with_header_and_offline_plan(fake_llm, tmp_path, inv, work):
    fake_llm.script("qwen2.5-coder:7b", json.dumps(GOOD), api="ollama")
    gw = gateway_file(tmp_path, {"local": {"kind": "ollama", "model": "qwen2.5-coder:7b", "api_base": fake_llm.url}})
    out = work / "nginx.yaml"
    result = invoke(REQUEST, "-o", str(out), "-i", str(inv), "--gateway", str(gw))
    assert result.exit_code == 0, result.output
    text = out.read_text()
    head = text.splitlines()[:6]
    assert re.match(r"# Written by `opsrun author` on \d{4}-\d\d-\d\d \d\d:\d\d UTC\.", head[0]), head
    assert head[1:3] == ["# Request:", f"#   {REQUEST}"]
    assert "qwen2.5-coder:7b (provider local, first try)" in head[3]
    ref = re.match(r"# yaml-language-server: \$schema=(.+)$", head[4])
    assert ref and (out.parent / ref.group(1)).resolve() == (ROOT / "schemas" / "playbook.schema.json").resolve()
    # the file is a valid playbook with the model's content
    assert yaml.safe_load(text) == GOOD
    assert not schema.validate_playbook(load.read(out), hosts={"web1", "web2"}, groups={"web"})
    config.load_playbook(str(out), config.load_inventory(str(inv)))
    # the offline plan is shown; nothing was probed or applied
    assert f"Plan for 'nginx on the web group' ({out}) on web1, web2  [offline: nothing probed]" in result.stdout
    assert "? nginx_pkg: not probed (--offline)" in result.stdout
    assert "Nothing was applied" in result.stdout
    assert re.search(r"-- written by local \(qwen2\.5-coder:7b\) in \d+\.\d\ds", result.stderr)
    # what the model was given: the schema as Ollama's `format` (pruned to kinds these hosts
    # can run), the hosts and groups with transports, and no host settings
    (req,) = fake_llm.chats()
    assert req.path == "/api/chat"
    fmt = req.body["format"]
    assert "step_package" in fmt["$defs"] and "step_proxmox.lxc" not in fmt["$defs"]
    assert "errorMessage" not in json.dumps(fmt) and "allow" not in fmt["properties"]
    system = req.body["messages"][0]["content"]
    assert "Hosts (ssh): web1, web2" in system and "Groups: web (web1, web2)" in system
    assert "nobody-canary" not in req.raw and "\n- service: {name*: str" in system
    assert "proxmox" not in system and "adb." not in system
    assert user_messages(req) == [f"Write a playbook for this request:\n{REQUEST}"]


def test_without_out_the_yaml_alone_goes_to_stdout(fake_llm, tmp_path, inv, work):
    fake_llm.script("fake-model", json.dumps(GOOD))
    gw = gateway_file(tmp_path, {"fake": openai(fake_llm)})
    result = invoke(REQUEST, "-i", str(inv), "--gateway", str(gw))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("# Written by `opsrun author`")
    assert yaml.safe_load(result.stdout) == GOOD  # pipe it to a file and it is the playbook
    assert "Plan for 'nginx on the web group'" in result.stderr and "Plan for" not in result.stdout
    assert not list(work.iterdir())
    (req,) = fake_llm.chats()
    assert req.body["response_format"]["type"] == "json_schema"


def test_an_existing_file_is_not_overwritten(fake_llm, tmp_path, inv, work):
    out = work / "keep.yaml"
    out.write_text("mine\n")
    gw = gateway_file(tmp_path, {"fake": openai(fake_llm)})
    result = invoke(REQUEST, "-o", str(out), "-i", str(inv), "--gateway", str(gw))
    assert result.exit_code == 1 and "exists" in result.stderr and "--force" in result.stderr
    assert out.read_text() == "mine\n" and not fake_llm.chats()


# ---------------------------------------------------------------- the repair loop


def test_invalid_answer_is_repaired_with_located_errors(fake_llm, tmp_path, inv, work):
    bad = json.loads(json.dumps(GOOD))
    bad["steps"][3]["run"] = {"comand": "curl -fsS http://127.0.0.1/"}  # unknown key
    bad["steps"][1]["file"]["mode"] = 644  # wrong type
    fake_llm.script("fake-model", json.dumps(bad), json.dumps(GOOD))
    gw = gateway_file(tmp_path, {"fake": openai(fake_llm)})
    out = work / "nginx.yaml"
    result = invoke(REQUEST, "-o", str(out), "-i", str(inv), "--gateway", str(gw), "--max-repairs", "2")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(out.read_text()) == GOOD
    assert "after 2 tries" in result.stderr and "(provider fake, 2 tries)" in out.read_text()
    first, second = fake_llm.chats()
    # the second request carries the first answer and the located errors against its YAML form
    msgs = second.body["messages"]
    assert msgs[:2] == first.body["messages"]
    assert msgs[2] == {"role": "assistant", "content": json.dumps(bad)}
    feedback = msgs[3]["content"]
    bad_yaml = to_yaml(bad).splitlines()
    m = re.search(re.escape(str(out)) + r":(\d+):(\d+): error: unknown key 'comand'", feedback)
    assert m, feedback
    assert bad_yaml[int(m.group(1)) - 1].strip().startswith("comand:")
    assert "did you mean 'command'?" in feedback
    m = re.search(re.escape(str(out)) + r":(\d+):(\d+): error: .*mode.*", feedback)
    assert m and bad_yaml[int(m.group(1)) - 1].strip() == "mode: 644", feedback
    assert "2 tries left" in feedback and " 1 | opsrun: 1" in feedback


def test_still_invalid_after_the_repairs_writes_nothing(fake_llm, tmp_path, inv, work):
    broken = json.loads(json.dumps(GOOD))
    broken["steps"][1]["file"]["content"] = "{{ greeting }}\n"  # undefined: found by the offline plan
    fake_llm.script("fake-model", json.dumps(broken), json.dumps(broken))
    gw = gateway_file(tmp_path, {"fake": openai(fake_llm)})
    out = work / "nginx.yaml"
    result = invoke(REQUEST, "-o", str(out), "-i", str(inv), "--gateway", str(gw), "--max-repairs", "1")
    assert result.exit_code == 1
    assert "still not valid after 2 tries; nothing was written" in result.stderr
    assert re.search(re.escape(str(out)) + r":\d+: error: step 'index' on host 'web1': undefined variable",
                     result.stderr), result.stderr
    assert "Traceback" not in result.output and not out.exists()
    assert "'greeting' is undefined" in user_messages(fake_llm.chats()[1])[-1]


# ---------------------------------------------------------------- safety rules


def test_forbidden_command_is_refused_after_the_repairs(fake_llm, tmp_path, inv, work):
    evil = json.loads(json.dumps(GOOD))
    evil["steps"].append({"id": "clean", "run": "rm -rf /"})
    sneaky = {**evil, "allow": ["rm-root"]}  # a model may not widen the rules
    fake_llm.script("fake-model", json.dumps(sneaky), json.dumps(evil))
    rule = load_rules()("rm -rf /")
    assert rule
    gw = gateway_file(tmp_path, {"fake": openai(fake_llm)})
    out = work / "nginx.yaml"
    result = invoke(REQUEST, "-o", str(out), "-i", str(inv), "--gateway", str(gw), "--max-repairs", "1")
    assert result.exit_code == 1
    assert f"refused: the model's playbook still runs a command forbidden by safety rule '{rule}'" in result.stderr
    assert re.search(re.escape(str(out)) + rf":\d+:\d+: error: blocked by safety rule '{rule}': rm -rf /",
                     result.stderr), result.stderr
    assert not out.exists() and "Traceback" not in result.output
    feedback = user_messages(fake_llm.chats()[1])[-1]
    assert f"blocked by safety rule '{rule}'" in feedback
    assert "cannot add exceptions to the safety rules" in feedback


def test_inventory_forbid_patterns_apply_to_authored_commands(fake_llm, tmp_path, work):
    inv = tmp_path / "inventory.yaml"
    inv.write_text(INVENTORY + "forbid: ['glob:curl *']\n")
    fake_llm.script("fake-model", json.dumps(GOOD))
    gw = gateway_file(tmp_path, {"fake": openai(fake_llm)})
    result = invoke(REQUEST, "-o", str(work / "x.yaml"), "-i", str(inv), "--gateway", str(gw),
                    "--max-repairs", "0")
    assert result.exit_code == 1
    assert "forbidden by safety rule 'glob:curl *'" in result.stderr


# ---------------------------------------------------------------- no model


def test_all_providers_down_is_a_clear_error(fake_llm, tmp_path, inv, work, closed_port):
    fake_llm.script("fake-model", F.server_error(500))
    gw = gateway_file(tmp_path, {
        "local": {"kind": "ollama", "model": "qwen2.5-coder:7b", "api_base": f"http://127.0.0.1:{closed_port}"},
        "fake": openai(fake_llm),
    })
    out = work / "nginx.yaml"
    result = invoke(REQUEST, "-o", str(out), "-i", str(inv), "--gateway", str(gw))
    assert result.exit_code == 1
    err = result.stderr
    assert err.startswith("error: no LLM provider answered (author): ")
    assert f"local (127.0.0.1:{closed_port}): connection refused" in err
    assert re.search(r"fake \(127\.0\.0\.1:\d+\): 500 server error", err), err
    assert "gateway check" in err and "Traceback" not in result.output and not out.exists()


def test_without_litellm_it_says_which_extra_to_install(tmp_path, inv):
    gw = gateway_file(tmp_path, {"local": {"kind": "ollama", "model": "m", "api_base": "http://127.0.0.1:9"}})
    code = (
        "import sys; sys.modules['litellm'] = None\n"  # what an install without the extra looks like
        "import typer\n"
        "from runner.cli import author as author_cmd\n"
        "cli = typer.Typer(); cli.callback()(lambda: None); author_cmd.register(cli)\n"
        f"cli(['author', 'x', '-i', {str(inv)!r}, '--gateway', {str(gw)!r}])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path, env=env)
    assert proc.returncode == 1, proc.stderr
    assert "needs the 'llm' extra" in proc.stderr and "pip install 'opsrun[llm]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_importing_the_llm_modules_does_not_import_litellm():
    code = ("import sys, runner.cli.author, runner.llm.author, runner.llm.fixer, runner.steps.llm\n"
            "assert 'litellm' not in sys.modules and 'runner.gateway.router' not in sys.modules, 'imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


def test_the_yaml_form_parses_back_to_the_same_data():
    """Located errors point into to_yaml's text: it must mean exactly what the model sent."""
    import random

    alphabet = ["a", " ", "\n", "\t", "#", ":", "-", "'", '"', "{", "}", "0", "é", "\\", "|", ">", "*",
                "&", "!", "%", "@", "`", "\r", "\x85", "\u2028", "\u2029", "<<", "on", "0644", "~"]
    rng = random.Random(5)
    for _ in range(800):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 10)))
        data = {"k": s, s or "x": [s, {"m": s}], "n": [1, 1.5, True, None]}
        assert load.parse(to_yaml(data), "x.yaml").data == data, repr(s)
