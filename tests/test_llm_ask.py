"""The `llm.ask` step kind: planned as `?` with the prompt preview (nothing asked), answered at
run time through the gateway against the fake LLM server on loopback (text, and JSON with a
schema), the answer registered, failures reported as a failed step.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from runner import config, load, report, schema, secrets
from runner import gateway as gateways
from runner.expand import expand
from runner.model import Host
from runner.planner import make_plan
from runner.session import Session
from runner.steps import base
from runner.steps import llm as llm_steps
from runner.steps.base import StepContext
from tests.peers import fake_llm as F

pytestmark = [pytest.mark.peer, pytest.mark.usefixtures("network_audit")]

LOG = "kernel: EXT4-fs error on /dev/sda1; disk at 97%"
PLAYBOOK = f"""\
opsrun: 1
name: ask about a log
hosts: local
vars:
  log: "{LOG}"
steps:
  - id: collect
    run: {{command: "echo collected", changed_when: "false"}}
  - id: summary
    llm.ask:
      prompt: "Summarise this log in one line: {{{{ log }}}}"
      gateway: gateway.yaml
  - id: later
    llm.ask: "Summarise: {{{{ steps.collect.stdout }}}}"
"""
SEVERITY = {"type": "object", "properties": {"severity": {"type": "string", "enum": ["low", "high"]}},
            "required": ["severity"], "additionalProperties": False}


@pytest.fixture(autouse=True)
def _fresh_gateways():
    gateways.forget_gateways()
    yield
    gateways.forget_gateways()


def write_gateway(folder: Path, providers: dict[str, Any], **routing: Any) -> Path:
    path = folder / "gateway.yaml"
    path.write_text(yaml.safe_dump({
        "opsrun": 1, "providers": providers,
        "routing": {"retries_per_provider": 0, "deadline_s": 15, "cooldown_s": 60, **routing},
        "cache": {"enabled": False},
    }))
    return path


@pytest.fixture
def gw_file(fake_llm: F.FakeLLM, tmp_path: Path) -> Path:
    return write_gateway(tmp_path, {"fake": {"kind": "openai", "model": "fake-model",
                                             "api_base": fake_llm.url + "/v1"}})


def ctx(folder: Path) -> StepContext:
    return StepContext(host=Host("local", "local"), playbook_dir=str(folder))


ASK = base.get("llm.ask")


# ---------------------------------------------------------------- plan


def test_plan_shows_a_question_mark_with_the_prompt_preview(fake_llm, gw_file, tmp_path):
    pb_file = tmp_path / "ask.yaml"
    pb_file.write_text(PLAYBOOK)
    assert not schema.validate_playbook(load.read(pb_file))
    inv = config.load_inventory(None)
    with Session(inv, config.load_playbook(str(pb_file), inv), {}) as session:
        plan, _ = make_plan(session, ["local"])
    text = report.plan_text(plan)
    assert "  ? summary: will ask the LLM\n" in text
    assert f"      reason: prompt: Summarise this log in one line: {LOG}\n" in text
    (sp,) = [s for s in plan.steps if s.step_id == "summary"]
    assert sp.change.status == "unknown" and sp.change.read_only and not sp.change.changes
    assert [a.kind for a in sp.change.actions] == ["local"]
    assert plan.counts()["read_only"] >= 2  # collect and summary
    assert not fake_llm.chats()  # planning asks nothing


def test_pending_prompt_and_long_prompt_previews(tmp_path):
    change = ASK.pending_change("Summarise: {{ steps.collect.stdout }}", "collect")
    assert change.status == "unknown" and change.read_only
    assert change.summary == "will ask the LLM after step 'collect'"
    assert change.reason == "prompt: Summarise: {{ steps.collect.stdout }}"
    long = "word " * 100
    change = ASK.plan({"prompt": long, "schema": SEVERITY}, {}, ctx(tmp_path))
    assert change.summary == "will ask the LLM (JSON answer)"
    assert len(change.reason) == len("prompt: ") + llm_steps.PREVIEW_CHARS and change.reason.endswith("...")
    secret = secrets.mark("hunter2-canary-ask")
    change = ASK.plan({"prompt": f"the password is {secret}"}, {}, ctx(tmp_path))
    assert "hunter2" not in change.reason and secrets.MASK in change.reason


def test_schema_rejects_a_misspelt_option():
    doc = load.parse("opsrun: 1\nname: x\nhosts: local\nsteps:\n  - id: a\n    llm.ask: {promt: hi}\n", "a.yaml")
    diags = schema.validate_playbook(doc)
    assert any("promt" in d.message and "prompt" in d.hint for d in diags), [d.render() for d in diags]
    assert "llm.ask" in schema.kind_names()


# ---------------------------------------------------------------- run


def test_run_local_registers_the_text_answer(fake_llm, gw_file, tmp_path):
    fake_llm.script("fake-model", "Disk sda1 is nearly full and has EXT4 errors.")
    # the prompt is rendered from an earlier step's registered result, as apply renders it
    pb_file = tmp_path / "ask.yaml"
    pb_file.write_text(PLAYBOOK)
    pb = config.load_playbook(str(pb_file))
    later = next(s for s in pb.steps if s.id == "later")
    known = {"collect": {"stdout": LOG + "\n", "rc": 0, "changed": False}}
    errors: list[Any] = []
    (inst,) = expand(later, Host("local", "local"), dict(pb.vars), known, set(), str(tmp_path), errors, pb.file)
    assert not errors and inst.params == {"prompt": f"Summarise: {LOG}\n"}
    params = {**inst.params, "system": "Answer in one sentence.", "temperature": 0.1, "gateway": "gateway.yaml"}
    result = ASK.run_local(params, ctx(tmp_path))
    assert result.rc == 0, result.err
    assert result.out == "Disk sda1 is nearly full and has EXT4 errors."
    assert result.data["provider"] == "fake" and result.data["model"] == "fake-model"
    assert result.data["json"] is None and result.data["cached"] is False and result.data["latency_s"] >= 0
    status, message = ASK.outcome(params, ASK.plan(params, {}, ctx(tmp_path)), [result], lambda e, n: None)
    assert status == "ok" and message.startswith("answered by fake (fake-model) in ")
    (req,) = fake_llm.chats()
    assert req.body["messages"] == [{"role": "system", "content": "Answer in one sentence."},
                                    {"role": "user", "content": f"Summarise: {LOG}\n"}]
    assert req.body["temperature"] == 0.1 and "response_format" not in req.body


def test_run_local_with_a_schema_registers_json(fake_llm, tmp_path):
    fake_llm.script("fake-model", '{"severity": "urgent"}', '{"severity": "high"}')
    write_gateway(tmp_path, {"fake": {"kind": "openai", "model": "fake-model",
                                      "api_base": fake_llm.url + "/v1"}}, retries_per_provider=1)
    params = {"prompt": f"How bad is this? {LOG}", "schema": SEVERITY, "gateway": "gateway.yaml"}
    result = ASK.run_local(params, ctx(tmp_path))
    assert result.rc == 0, result.err
    assert result.data["json"] == {"severity": "high"}  # the off-schema answer was asked again
    assert json.loads(result.out) == {"severity": "high"}
    first, second = fake_llm.chats()
    assert first.body["response_format"]["json_schema"]["schema"] == SEVERITY
    assert second.body["messages"] == first.body["messages"]


def test_secrets_in_the_prompt_do_not_reach_the_model(fake_llm, gw_file, tmp_path):
    secret = secrets.mark("canary-ask-Secret-991")
    fake_llm.script("fake-model", "ok")
    result = ASK.run_local({"prompt": f"token {secret} expired?", "gateway": str(gw_file)}, ctx(tmp_path / "x"))
    assert result.rc == 0
    (req,) = fake_llm.chats()
    assert "canary-ask-Secret-991" not in req.raw and secrets.MASK in req.raw


def test_no_answer_is_a_failed_step_naming_every_attempt(fake_llm, tmp_path, closed_port):
    fake_llm.script("fake-model", F.server_error(503))
    write_gateway(tmp_path, {
        "local": {"kind": "ollama", "model": "qwen2.5-coder:7b", "api_base": f"http://127.0.0.1:{closed_port}"},
        "fake": {"kind": "openai", "model": "fake-model", "api_base": fake_llm.url + "/v1"},
    })
    params = {"prompt": "hello", "gateway": "gateway.yaml"}
    result = ASK.run_local(params, ctx(tmp_path))
    assert result.rc == 1 and result.out == ""
    assert "no LLM provider answered (ask)" in result.err and "connection refused" in result.err
    assert "503" in result.err
    status, message = ASK.outcome(params, ASK.plan(params, {}, ctx(tmp_path)), [result], lambda e, n: None)
    assert status == "failed" and message.startswith("no LLM provider answered (ask)")


def test_one_gateway_per_file_and_a_default_for_the_run(fake_llm, gw_file, tmp_path, monkeypatch):
    first = gateways.gateway_for("gateway.yaml", str(tmp_path))
    assert gateways.gateway_for(str(gw_file)) is first  # the breaker spans the run
    monkeypatch.setenv("OPSRUN_GATEWAY", str(gw_file))
    assert gateways.gateway_for(None) is first
    from runner.gateway import Gateway

    other = Gateway.from_file(gw_file)
    gateways.set_default_gateway(other)  # apply shares its run's gateway
    monkeypatch.delenv("OPSRUN_GATEWAY")
    assert gateways.gateway_for(None) is other


def test_apply_registers_the_answer_for_later_steps(fake_llm, gw_file, tmp_path):
    """Through the real Executor: the answer's JSON drives a later step."""
    from runner.apply import Executor
    from runner.journal import Journal, new_run_id

    fake_llm.script("fake-model", '{"severity": "high"}')
    out = tmp_path / "severity.txt"
    pb_file = tmp_path / "triage.yaml"
    pb_file.write_text(f"""\
opsrun: 1
name: triage
hosts: local
steps:
  - id: collect
    run: {{command: "echo '{LOG}'", changed_when: "false"}}
  - id: triage
    llm.ask:
      prompt: "How bad is this? {{{{ steps.collect.stdout }}}}"
      schema: {json.dumps(SEVERITY)}
      gateway: gateway.yaml
  - id: record
    run: "echo {{{{ steps.triage.data.json.severity }}}} by {{{{ steps.triage.data.provider }}}} > {out}"
""")
    inv = config.load_inventory(None)
    events: list[dict[str, Any]] = []
    with Session(inv, config.load_playbook(str(pb_file), inv), {}) as session:
        plan, host_plans = make_plan(session, ["local"])
        journal = Journal(new_run_id(), root=tmp_path / ".opsrun")
        try:
            recap = Executor(session, plan, host_plans, journal, on_event=events.append).run()
        finally:
            journal.close()
    assert recap.ok, [e for e in events if e["type"] in ("step_end", "attempt")]
    assert out.read_text() == "high by fake\n"
    triage = next(r for r in recap.hosts["local"].results if r.step_id == "triage")
    assert triage.status == "ok" and triage.stdout == '{"severity": "high"}'
    assert triage.data["json"] == {"severity": "high"} and triage.data["model"] == "fake-model"
    (req,) = fake_llm.chats()
    assert req.body["messages"][-1]["content"] == f"How bad is this? {LOG}"  # stdout without its trailing newline


def test_the_documented_triage_example_lets_opsrun_quote_the_answer():
    """docs/llm.md's llm.ask example: valid, and the model's answer reaches the shell only through
    a template opsrun quotes by context (no quotes of its own around it, which would undo that)."""
    import re

    text = (Path(__file__).resolve().parent.parent / "docs" / "llm.md").read_text()
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if "id: triage" in b)
    steps = yaml.safe_load(block)
    doc = load.parse(yaml.safe_dump({"opsrun": 1, "name": "doc", "hosts": "local", "steps": steps}), "doc.yaml")
    assert not schema.validate_playbook(doc)
    page = next(s for s in steps if s["id"] == "page")
    assert "{{ steps.triage.data.json.reason }}" in page["run"]
    assert not re.search(r"""['"]\s*\{\{|\}\}\s*['"]""", page["run"]), page["run"]
