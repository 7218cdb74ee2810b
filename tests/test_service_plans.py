"""runner.service: the project, read-only ops, the plan store, approvals bound to the plan digest
and the audit log, on real `local` playbooks whose files live under tmp_path."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from runner.approval_policy import AutoLimits
from runner.errors import DriftError, InvalidInput
from runner.service import approvals, audit, ops, plans
from runner.service.project import Project

CANARY = "canary-Svc-9d2e71"


def playbook(target: Path, *, extra: str = "") -> str:
    return f"""\
opsrun: 1
name: svc demo
hosts: local
steps:
  - id: dir
    file:
      path: {target}
      state: directory
  - id: motd
    file:
      path: {target}/motd
      content: "hello\\n"
{extra}"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    monkeypatch.delenv("OPSRUN_STATE_DIR", raising=False)
    root = tmp_path / "proj"
    root.mkdir()
    (root / "site.yaml").write_text(playbook(tmp_path / "out"))
    return Project.at(root)


def test_project_paths_stay_inside(project: Project, tmp_path: Path) -> None:
    assert project.state == project.root / ".opsrun"
    assert project.inside("site.yaml") == project.root / "site.yaml"
    for bad in ("../x.yaml", "/etc/passwd", "sub/../../x"):
        with pytest.raises(InvalidInput, match="not inside the project"):
            project.inside(bad)
    (project.root / "out").symlink_to(tmp_path)
    with pytest.raises(InvalidInput, match="not inside"):
        project.inside("out/proj/../x.yaml")
    assert project.inventory_arg() == "<embedded inventory>"  # no inventory.yaml: never the cwd's


def test_state_dir_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSRUN_STATE_DIR", str(tmp_path / "st"))
    assert Project.at(tmp_path).state == tmp_path / "st"


def test_validate_text_and_path(project: Project) -> None:
    good = ops.validate(project, path="site.yaml")
    assert good == {"ok": True, "errors": [], "warnings": []}
    bad = ops.validate(project, text="opsrun: 1\nname: x\nhosts: local\nsteps:\n  - id: a\n    fiel: {}\n")
    assert not bad["ok"]
    assert bad["errors"][0]["line"] == 6 and bad["errors"][0]["file"] == "playbook.yaml"
    with pytest.raises(InvalidInput, match="not inside"):
        ops.validate(project, path="../../etc/hosts")
    with pytest.raises(InvalidInput, match="either as text or as a path"):
        ops.validate(project)


def test_inventory_masks_secrets(project: Project) -> None:
    (project.root / "inventory.yaml").write_text(
        "opsrun: 1\nhosts:\n  box:\n    transport: local\n    vars: {db_password: hunter2-canary, port: 5}\n"
        "groups:\n  web:\n    hosts: [box]\n")
    inv = ops.inventory(project)
    assert inv["hosts"]["box"]["transport"] == "local"
    assert inv["hosts"]["box"]["groups"] == ["web"]
    assert inv["hosts"]["box"]["vars"]["db_password"] == "***" and inv["hosts"]["box"]["vars"]["port"] == 5
    assert inv["groups"]["web"]["hosts"] == ["box"]
    assert "hunter2" not in json.dumps(inv)


def test_plan_store_approve_and_audit(project: Project, tmp_path: Path) -> None:
    rec = plans.create_plan(project, path="site.yaml", actor="alice", origin="cli")
    assert rec.digest.startswith("sha256:") and rec.doc["summary"]["change"] == 2
    assert "| local | `+` | `motd` |" in rec.markdown
    folder = project.state / "plans" / rec.id
    for name in ("plan.json", "plan.md", "meta.json"):
        assert stat.S_IMODE(os.stat(folder / name).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    again = plans.get_plan(project, rec.id)
    assert again.digest == rec.digest and again.summary()["approved"] is False
    assert [p.id for p in plans.list_plans(project)] == [rec.id]
    assert not (tmp_path / "out").exists()  # planning changes nothing

    with pytest.raises(DriftError, match="not the sha256:0"):
        approvals.approve(project, rec.id, approver="bob", how="terminal", digest="sha256:0")
    assert approvals.approval_of(project, rec.id) is None
    ok = approvals.approve(project, rec.id, approver="bob", how="terminal", digest=rec.digest)
    assert ok.digest == rec.digest and approvals.approval_of(project, rec.id) == ok
    assert plans.get_plan(project, rec.id).summary()["approved"] is True

    # the stored plan edited after approval: its digest moves, the approval no longer holds
    doc = json.loads((folder / "plan.json").read_text())
    doc["steps"][0]["summary"] = "something else"
    (folder / "plan.json").write_text(json.dumps(doc))
    assert approvals.approval_of(project, rec.id) is None

    log = audit.read(project)
    assert [(e["actor"], e["action"]) for e in log] == [
        ("alice", "plan"), ("bob", "approve_refused"), ("bob", "approve")]
    assert all(e["plan_id"] == rec.id for e in log)
    assert log[0]["digest"] == rec.digest and log[2]["how"] == "terminal"
    assert stat.S_IMODE(os.stat(project.state / "audit.jsonl").st_mode) == 0o600


def test_plan_refuses_invalid_playbook_text_and_ids(project: Project) -> None:
    with pytest.raises(InvalidInput) as info:
        plans.create_plan(project, text="opsrun: 1\nname: x\nhosts: local\nsteps: 3\n", actor="a", origin="mcp")
    assert info.value.diagnostics and "expected a list" in info.value.diagnostics[0].message
    assert plans.list_plans(project) == []
    for bad in ("../../etc", "x", ""):
        with pytest.raises(InvalidInput, match="no plan"):
            plans.get_plan(project, bad)


def test_agent_text_passes_the_safety_gate(project: Project) -> None:
    """A playbook given as text (an agent's) is planned like a person's: a forbidden command
    shows as blocked (`!`) and the auto-approve policy refuses it."""
    text = playbook(project.root / "o", extra="  - id: wipe\n    run: rm -rf /\n")
    rec = plans.create_plan(project, text=text, actor="agent", origin="mcp")
    assert rec.playbook == str(project.state / "plans" / rec.id / "playbook.yaml")
    wipe = next(s for s in rec.doc["steps"] if s["instance"] == "wipe")
    assert wipe["status"] == "blocked"
    why = approvals.auto_approve(project, rec.id, AutoLimits(), approver="policy")
    assert isinstance(why, list) and "blocked by a safety rule" in why[0]
    assert approvals.approval_of(project, rec.id) is None
    fine = plans.create_plan(project, text=playbook(project.root / "o"), actor="agent", origin="mcp")
    got = approvals.auto_approve(project, fine.id, AutoLimits(max_changes=5), approver="policy")
    assert isinstance(got, approvals.Approval) and got.how == "policy"
    actions = [e["action"] for e in audit.read(project)]
    assert actions == ["plan", "auto_approve_refused", "plan", "approve"]


def test_secrets_never_reach_the_plan_store_or_audit(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSRUN_SECRET_SVC_TOK", CANARY)
    text = playbook(project.root / "o", extra=(
        "  - id: conf\n    file:\n      path: " + str(project.root / "o" / "conf") + "\n"
        "      content: \"token={{ secret('SVC_TOK') }}\\n\"\n"))
    rec = plans.create_plan(project, text=text, actor="agent", origin="http")
    approvals.approve(project, rec.id, approver="bob", how="http", digest=rec.digest)
    audit.record(project, "bob", "note", token=CANARY, detail=f"said {CANARY}")
    assert CANARY not in rec.markdown and CANARY not in json.dumps(rec.doc)
    for path in project.state.rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), path
    assert audit.read(project)[-1]["token"] == "***"


def test_runs_and_run(project: Project) -> None:
    assert ops.runs(project) == []
    with pytest.raises(InvalidInput):
        ops.run(project, "nope")


def test_ask_uses_the_project_gateway_once_per_process(project: Project, fake_llm) -> None:  # type: ignore[no-untyped-def]
    (project.root / "gateway.yaml").write_text(
        "opsrun: 1\nproviders:\n  fake:\n    kind: openai\n    model: fake-model\n"
        f"    api_base: {fake_llm.url}/v1\nrouting: {{retries_per_provider: 0, deadline_s: 10}}\n"
        f"cache: {{enabled: false, dir: {project.state / 'cache'}}}\n")
    fake_llm.script("fake-model", "forty-two")
    got = ops.ask(project, "what is the answer?")
    assert got["text"] == "forty-two" and got["provider"] == "fake" and got["model"] == "fake-model"
    assert ops.gateway(project) is ops.gateway(Project.at(project.root))  # one rate limit for every client
    (req,) = fake_llm.chats()
    assert "what is the answer?" in json.dumps(req.body)


def test_a_plan_that_cannot_be_made_leaves_nothing(project: Project) -> None:
    with pytest.raises(InvalidInput, match="leaves no host"):
        plans.create_plan(project, text=playbook(project.root / "o"), limit="web", actor="a", origin="http")
    assert list((project.state / "plans").iterdir()) == []
    assert audit.read(project) == []
