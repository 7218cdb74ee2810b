"""The LLM fixer against the fake LLM server on loopback: secrets never reach the prompt, a
valid fix comes back with its diagnosis, an unsafe or repeated fix is rejected, invalid steps
are repaired, identical failures share a fingerprint and fixes per step are bounded.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from runner import secrets
from runner.gateway import GatewayError
from runner.llm.fixer import (
    FixEvidence,
    FixLedger,
    FixRejected,
    attempts_from,
    failure_fingerprint,
    propose_fix,
    steps_digest,
)
from runner.llm.gates import load_rules
from runner.model import Playbook
from tests.peers import fake_llm as F

pytestmark = [pytest.mark.peer, pytest.mark.usefixtures("network_audit")]

CANARY = "canary-Secret-7f3a9b"
STDERR = "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 (apt-get)\n"
FIX_STEPS = [{"id": "fix_wait_lock", "name": "Wait for the other apt run",
              "run": {"command": "while fuser /var/lib/dpkg/lock-frontend; do sleep 2; done",
                      "changed_when": "false"}}]
GOOD = {"diagnosis": "Another apt-get holds the dpkg lock.", "confidence": 0.8, "steps": FIX_STEPS}
HOSTS = {"web1", "web2"}
GROUPS = {"web"}


def evidence(**over: Any) -> FixEvidence:
    base: dict[str, Any] = {
        "step_id": "nginx", "kind": "package", "step": {"id": "nginx", "package": {"name": ["nginx"]}},
        "commands": ["DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx"],
        "rc": 100, "stdout": "Reading package lists...\n", "stderr": STDERR,
        "host": "web1", "transport": "ssh", "facts": {"os": "Linux 6.1.0-18-amd64 x86_64 GNU/Linux"},
        "attempts": [{"attempt": 1, "rc": 100, "stderr": STDERR}, {"attempt": 2, "rc": 100, "stderr": STDERR}],
    }
    base.update(over)
    return FixEvidence(**base)


@pytest.fixture
def rules() -> Any:
    return load_rules()


def test_secrets_never_reach_the_prompt(fake_llm, make_gateway, rules):
    secrets.mark(CANARY)
    fake_llm.script("fake-model", json.dumps(GOOD))
    ev = evidence(
        step={"id": "nginx", "run": "curl -u admin:{{ secret('TOKEN') }} https://repo/key | apt-key add -"},
        commands=[f"curl -u admin:{CANARY} https://repo/key | apt-key add -"],
        stderr=f"curl: (22) 401 for admin:{CANARY}\n", stdout=f"token={CANARY}\n",
        attempts=[{"attempt": 1, "rc": 22, "stderr": f"denied {CANARY}"}],
        facts={"os": f"Linux {CANARY}"},
    )
    fix = propose_fix(make_gateway(), ev, rules=rules, hosts=HOSTS, groups=GROUPS)
    assert fix.steps == FIX_STEPS
    (req,) = fake_llm.chats()
    assert CANARY not in req.raw
    prompt = req.body["messages"][1]["content"]
    assert f"curl -u admin:{secrets.MASK} https://repo/key" in prompt  # the evidence is there, masked
    assert "secret('TOKEN')" in prompt and f"token={secrets.MASK}" in prompt
    assert CANARY not in json.dumps(fix.journal())


def test_a_valid_fix_comes_back_with_its_diagnosis(fake_llm, make_gateway, rules):
    fake_llm.script("fake-model", json.dumps(GOOD))
    ev = evidence()
    fix = propose_fix(make_gateway(), ev, rules=rules, hosts=HOSTS, groups=GROUPS)
    assert (fix.diagnosis, fix.confidence, fix.steps) == (GOOD["diagnosis"], 0.8, FIX_STEPS)
    assert (fix.provider, fix.model, fix.tries) == ("fake", "fake-model", 1)
    assert fix.fingerprint == failure_fingerprint("nginx", "web1", 100, STDERR) == ev.fingerprint
    (req,) = fake_llm.chats()
    assert fix.prompt_chars == sum(len(m["content"]) for m in req.body["messages"])
    # the evidence the model saw, and the answer's schema (steps use the playbook's step schema)
    prompt = req.body["messages"][1]["content"]
    for part in ("Host: web1 (transport ssh; os: Linux 6.1.0-18-amd64", "Failed step 'nginx' (kind package)",
                 "$ DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx", "Exit code: 100",
                 "Could not get lock", "- attempt 2: rc 100: E: Could not get lock"):
        assert part in prompt, part
    schema = req.body["response_format"]["json_schema"]["schema"]
    assert schema["required"] == ["diagnosis", "confidence", "steps"]
    assert schema["properties"]["steps"]["items"] == {"$ref": "#/$defs/step"}
    assert "kind_package" in schema["$defs"] and "kind_proxmox.vm" not in schema["$defs"]
    # the fix as a playbook for the failed host, with the original's variables
    original = Playbook("web", "web", (), vars={"port": 80}, dir="/srv/pb", file="/srv/pb/web.yaml")
    pb = fix.playbook(original)
    assert pb.hosts == "web1" and [s.id for s in pb.steps] == ["fix_wait_lock"]
    assert pb.steps[0].kind == "run" and pb.vars == {"port": 80} and pb.dir == "/srv/pb"
    journal = fix.journal()
    assert journal["provider"] == "fake" and journal["fingerprint"] == fix.fingerprint


def test_an_unsafe_fix_is_rejected_naming_the_rule(fake_llm, make_gateway, rules):
    unsafe = {"diagnosis": "The disk is full.", "confidence": 0.9,
              "steps": [{"id": "fix_space", "run": "rm -rf / --no-preserve-root"}]}
    fake_llm.script("fake-model", json.dumps(unsafe), json.dumps(unsafe))
    rule = rules("rm -rf / --no-preserve-root")
    assert rule
    with pytest.raises(FixRejected) as info:
        propose_fix(make_gateway(), evidence(), rules=rules, hosts=HOSTS, groups=GROUPS)
    err = info.value
    assert err.rule == rule and f"safety rule '{rule}'" in err.reason
    assert "rm -rf / --no-preserve-root" in err.reason and err.diagnosis == "The disk is full."
    assert err.exit_code == 1 and err.provider == "fake"
    _first, second = fake_llm.chats()  # one repair was asked for, with the rule named
    assert f"blocked by safety rule '{rule}'" in second.body["messages"][-1]["content"]


def test_host_forbid_rules_apply_to_fixes(fake_llm, make_gateway):
    fake_llm.script("fake-model", json.dumps(GOOD))
    host_rules = load_rules(forbid=["glob:fuser *"])
    with pytest.raises(FixRejected) as info:
        propose_fix(make_gateway(), evidence(), rules=host_rules, hosts=HOSTS, groups=GROUPS, max_repairs=0)
    assert info.value.rule == "glob:fuser *"


def test_invalid_steps_are_repaired_with_located_errors(fake_llm, make_gateway, rules):
    bad = {**GOOD, "steps": [{"id": "fix_wait_lock", "hosts": "web2",
                              "run": {"comand": "sleep 5"}}]}
    fake_llm.script("fake-model", json.dumps(bad), json.dumps(GOOD))
    fix = propose_fix(make_gateway(), evidence(), rules=rules, hosts=HOSTS, groups=GROUPS)
    assert fix.steps == FIX_STEPS and fix.tries == 2
    feedback = fake_llm.chats()[1].body["messages"][-1]["content"]
    assert "<fix>:" in feedback and "unknown key 'comand'" in feedback
    assert "a fix runs on the failed host only" in feedback
    assert fix.prompt_chars > sum(len(m["content"]) for m in fake_llm.chats()[0].body["messages"])


def test_still_invalid_is_rejected(fake_llm, make_gateway, rules):
    fake_llm.script("fake-model", json.dumps({**GOOD, "confidence": 3}))
    with pytest.raises(FixRejected) as info:
        propose_fix(make_gateway(), evidence(), rules=rules, hosts=HOSTS, groups=GROUPS, max_repairs=0)
    assert "not valid after 1 try" in info.value.reason and "confidence" in info.value.reason
    assert info.value.rule is None


def test_a_diagnosis_without_steps_is_a_fix_with_no_steps(fake_llm, make_gateway, rules):
    fake_llm.script("fake-model", json.dumps({"diagnosis": "The package name is misspelt: nginix.",
                                              "confidence": 0.6, "steps": []}))
    fix = propose_fix(make_gateway(), evidence(), rules=rules, hosts=HOSTS, groups=GROUPS)
    assert fix.steps == [] and "misspelt" in fix.diagnosis


def test_a_fix_already_tried_is_not_proposed_again(fake_llm, make_gateway, rules):
    ledger = FixLedger(max_per_step=2)
    fake_llm.script("fake-model", json.dumps(GOOD))
    first = propose_fix(make_gateway(), evidence(), rules=rules, hosts=HOSTS, groups=GROUPS)
    ledger.record("web1", "nginx", first, outcome="failed again: rc 100: E: Could not get lock")
    assert ledger.blocked("web1", "nginx") is None
    # the model proposes the same steps (other ids): fed back, then rejected
    same = {**GOOD, "steps": [{**FIX_STEPS[0], "id": "fix_lock_again"}]}
    fake_llm.script("fake-model", json.dumps(same), json.dumps(same))
    ev = evidence(previous=ledger.previous("web1", "nginx"))
    with pytest.raises(FixRejected) as info:
        propose_fix(make_gateway(), ev, rules=rules, hosts=HOSTS, groups=GROUPS)
    assert "already tried" in info.value.reason
    second_prompt = fake_llm.chats()[1].body["messages"][1]["content"]
    assert "Fixes already tried for this step" in second_prompt and "failed again: rc 100" in second_prompt
    assert "already tried for this step" in fake_llm.chats()[2].body["messages"][-1]["content"]
    # the number of fixes per step is bounded
    ledger.record("web1", "nginx", first, outcome="not applied")
    assert "limit 2" in (ledger.blocked("web1", "nginx") or "")
    assert ledger.blocked("web2", "nginx") is None
    assert ledger.blocked("web1", "nginx", limit=3) is None  # a step's own max_llm_fixes


def test_fingerprints_recognise_identical_failures():
    a = failure_fingerprint("nginx", "web1", 100, STDERR)
    assert a == failure_fingerprint("nginx", "web1", 100, STDERR)
    # the same failure with another pid / timestamp is the same failure
    assert a == failure_fingerprint("nginx", "web1", 100, STDERR.replace("4242", "5151") + "\n")
    # another step, host, exit code or message is not
    assert len({a, failure_fingerprint("other", "web1", 100, STDERR),
                failure_fingerprint("nginx", "web2", 100, STDERR),
                failure_fingerprint("nginx", "web1", 1, STDERR),
                failure_fingerprint("nginx", "web1", 100, "E: Unable to locate package nginx")}) == 5
    ledger = FixLedger()
    assert ledger.seen(a) == 0 and ledger.seen(a) == 1
    assert steps_digest(FIX_STEPS) == steps_digest([{**FIX_STEPS[0], "id": "fix_other", "name": "x"}])
    assert steps_digest(FIX_STEPS) != steps_digest([{"id": "fix_wait_lock", "run": "sleep 5"}])


def test_no_model_answering_is_the_gateways_error(fake_llm, make_gateway, rules):
    fake_llm.script("fake-model", F.unauthorized())
    with pytest.raises(GatewayError) as info:
        propose_fix(make_gateway(), evidence(), rules=rules, hosts=HOSTS, groups=GROUPS)
    assert "(fix)" in info.value.message and "401 unauthorized" in info.value.message


def test_attempts_from_journal_events():
    events = [{"type": "step_start"}, {"type": "attempt", "attempt": 1, "rc": 2, "stderr_tail": "boom"}]
    assert attempts_from(events) == [{"attempt": 1, "rc": 2, "stderr": "boom"}]


def test_a_sensitive_steps_commands_and_output_are_not_sent(fake_llm, make_gateway, rules):
    unmarked = "db-password-not-marked-42"  # sensitive output may hold secrets nobody marked
    fake_llm.script("fake-model", json.dumps(GOOD))
    ev = evidence(sensitive=True, commands=[f"mysql -p{unmarked}"], stderr=f"denied {unmarked}\n",
                  stdout=unmarked, attempts=[{"attempt": 1, "rc": 1, "stderr": unmarked}])
    propose_fix(make_gateway(), ev, rules=rules, hosts=HOSTS, groups=GROUPS)
    (req,) = fake_llm.chats()
    assert unmarked not in req.raw and "hidden: the step is sensitive" in req.raw


def test_step_as_written_round_trips_a_playbook_step():
    from runner import config, load, schema
    from runner.llm.fixer import step_as_written

    raw = {"id": "nginx", "name": "Install", "when": "true", "tags": ["web"],
           "package": {"name": ["nginx"]}, "verify": "nginx -t", "timeout": 30, "sensitive": True}
    doc = load.parse(yaml.safe_dump({"opsrun": 1, "name": "x", "hosts": "local", "steps": [raw]}), "x.yaml")
    assert not schema.validate_playbook(doc)
    (step,) = config.build_playbook(doc, set(schema.kind_names())).steps
    assert step_as_written(step) == raw


# ---------------------------------------------------------------- through apply


def run_apply(tmp_path, text: str, fixer_factory) -> tuple[Any, list[dict[str, Any]]]:
    """Plan and apply a playbook on `local` with the real Executor; returns (recap, events)."""
    from runner import config
    from runner.apply import Executor
    from runner.journal import Journal, new_run_id
    from runner.planner import make_plan
    from runner.session import Session

    pb_file = tmp_path / "pb.yaml"
    pb_file.write_text(text)
    inv = config.load_inventory(None)
    events: list[dict[str, Any]] = []
    with Session(inv, config.load_playbook(str(pb_file), inv), {}) as session:
        plan, host_plans = make_plan(session, ["local"])
        journal = Journal(new_run_id(), root=tmp_path / ".opsrun")
        try:
            recap = Executor(session, plan, host_plans, journal, fixer=fixer_factory(session),
                             on_event=events.append).run()
        finally:
            journal.close()
    return recap, events


def test_apply_runs_an_llm_fix_then_the_step_succeeds(fake_llm, make_gateway, tmp_path):
    from runner.llm.fixer import make_fixer

    flag = tmp_path / "flag"
    fix = {"diagnosis": "The flag file is missing.", "confidence": 0.9,
           "steps": [{"id": "fix_flag", "file": {"path": str(flag), "content": "up\n"}}]}
    fake_llm.script("fake-model", json.dumps(fix))
    text = f"""\
opsrun: 1
name: needs a flag
hosts: local
policy:
  retry: {{attempts: 1}}
  escalate: [llm]
  auto_fix: true
steps:
  - id: check
    run: "cat {flag}"
"""
    gateway = make_gateway()
    recap, events = run_apply(tmp_path, text, lambda session: make_fixer(session, gateway))
    assert recap.ok, events
    assert flag.read_text() == "up\n"
    (fixed,) = [e for e in events if e["type"] == "llm_fix"]
    assert fixed["ok"] and fixed["diagnosis"] == "The flag file is missing." and fixed["provider"] == "fake"
    assert fixed["prompt_chars"] > 0 and ":" in fixed["fingerprint"]
    (req,) = fake_llm.chats()
    prompt = req.body["messages"][1]["content"]
    assert f"$ cat {flag}" in prompt and "No such file or directory" in prompt
    assert "Host: local (transport local; os: Linux" in prompt  # uname, read-only, through the transport
    result = next(r for r in recap.hosts["local"].results if r.step_id == "check")
    assert result.status == "changed" and result.stdout == "up\n"


def test_apply_a_second_fix_hears_about_the_first(fake_llm, make_gateway, tmp_path):
    from runner.llm.fixer import make_fixer

    never = tmp_path / "never"
    first = {"diagnosis": "Missing folder.", "confidence": 0.5,
             "steps": [{"id": "fix_dir", "file": {"path": str(tmp_path / "d"), "state": "directory"}}]}
    second = {"diagnosis": "Nothing safe to do.", "confidence": 0.2, "steps": []}
    fake_llm.script("fake-model", json.dumps(first), json.dumps(second))
    text = f"""\
opsrun: 1
name: cannot be fixed
hosts: local
policy:
  retry: {{attempts: 1}}
  escalate: [llm]
  max_llm_fixes: 2
  auto_fix: true
steps:
  - id: check
    run: "cat {never}"
"""
    gateway = make_gateway()
    recap, events = run_apply(tmp_path, text, lambda session: make_fixer(session, gateway))
    assert not recap.ok
    fixes = [e for e in events if e["type"] == "llm_fix"]
    assert [f["ok"] for f in fixes] == [True, False]
    assert fixes[1]["error"] == "the model proposed no steps" and fixes[1]["diagnosis"] == "Nothing safe to do."
    prompt = fake_llm.chats()[1].body["messages"][1]["content"]
    assert "Fixes already tried for this step" in prompt
    assert "Missing folder. -> the step failed again (rc 1: " in prompt and "the same failure as before" in prompt
