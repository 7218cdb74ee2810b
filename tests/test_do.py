"""`opsrun do` end to end, as the real CLI (runner.cli.main, no terminal) against the fake LLM server
on loopback and the `local` host writing under tmp_path: approval limits, fixes, replans, one deadline.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import oracle as O
from tests.peers import fake_llm as F

pytestmark = [pytest.mark.peer, pytest.mark.usefixtures("network_audit")]

REQUEST = "write a greeting and a motd file"


def gateway_file(project: Path, fake: F.FakeLLM, *, routing_deadline_s: float = 30, **do: Any) -> Path:
    path = project / "gateway.yaml"
    data: dict[str, Any] = {
        "opsrun": 1,
        "providers": {"fake": {"kind": "openai", "model": "fake-model", "api_base": fake.url + "/v1"}},
        "routing": {"retries_per_provider": 0, "deadline_s": routing_deadline_s, "cooldown_s": 60},
        "cache": {"enabled": False},
    }
    if do:
        data["do"] = do
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def project(tmp_path: Path, fake_llm: F.FakeLLM) -> Path:
    folder = tmp_path / "project"
    (folder / "out").mkdir(parents=True)
    (folder / "inventory.yaml").write_text(
        "opsrun: 1\nhosts:\n  local: {transport: local, forbid: ['glob:echo danger*']}\n")
    return folder


def cli(project: Path) -> O.Oracle:
    return O.Oracle(project, inventory=project / "inventory.yaml", in_process=True)


def do(project: Path, *args: str) -> O.Call:
    return cli(project).opsrun("do", *args, "-i", str(project / "inventory.yaml"))


def pb(*steps: dict[str, Any], **top: Any) -> str:
    return json.dumps({"opsrun": 1, "name": "greeting", "hosts": "local", **top, "steps": list(steps)})


def file_step(project: Path, sid: str, name: str, content: str) -> dict[str, Any]:
    return {"id": sid, "file": {"path": str(project / "out" / name), "content": content}}


def check_step(project: Path) -> dict[str, Any]:
    return {"id": "check", "run": {"command": f"test -f {project / 'out' / 'ready'}", "changed_when": "false"}}


FIX = json.dumps({"diagnosis": "the ready marker is missing", "confidence": 0.4,
                  "steps": [{"id": "look", "run": {"command": "true", "changed_when": "false"}}]})


def timeline(project: Path, run_id: str) -> dict[str, Any]:
    call = cli(project).opsrun("runs", "show", run_id, "--json")
    assert call.rc == 0, call.show()
    return dict(json.loads(call.stdout))


def do_run_id(call: O.Call) -> str:
    line = next(ln for ln in call.stderr.splitlines() if ln.startswith("-- do run "))
    return line.split()[3]


def oracle_problems(project: Path, do_run: str, n: int, apply_run: str) -> list[str]:
    """The plan do showed for pass n against what its apply run did (tests/oracle.py)."""
    plan = json.loads((project / ".opsrun" / "runs" / do_run / f"plan-{n}.json").read_text())
    planned = [O.Planned.from_json(s) for s in plan["steps"]]
    events = (project / ".opsrun" / "runs" / apply_run / "events.jsonl").read_text().splitlines()
    applied = O.parse_apply(O.Call(("apply",), 0, "\n".join([*events, '{"type": "recap"}']), ""))
    return O.compare(planned, applied.results)


# ---------------------------------------------------------------- request -> plan -> --yes -> apply


def test_request_to_applied_within_limits(fake_llm, project):
    fake_llm.script("fake-model", pb(file_step(project, "greeting", "hello.txt", "hello\n"),
                                     file_step(project, "motd", "motd.txt", "welcome\n")))
    gw = gateway_file(project, fake_llm)
    kept = project / "site.yaml"
    call = do(project, REQUEST, "--gateway", str(gw), "--yes", "-o", str(kept))
    assert call.rc == 0, call.show()
    assert (project / "out" / "hello.txt").read_text() == "hello\n"
    assert "+ greeting" in call.stdout and "Plan for 'greeting'" in call.stdout  # the plan renderer of `plan`
    run_id = do_run_id(call)
    doc = timeline(project, run_id)
    assert doc["outcome"] == "ok"
    types = [e["type"] for e in doc["events"]]
    assert types == ["do_start", "draft", "plan", "approval", "apply", "applied", "do_end"], types
    approval = doc["events"][3]
    assert approval["decision"] == "auto" and approval["digest"] == doc["events"][2]["digest"]
    apply_run = doc["events"][4]["apply_run"]
    assert oracle_problems(project, run_id, 1, apply_run) == []
    # the kept playbook: what ran, with do's policy; a re-plan converges; no model is needed to repeat it
    assert yaml.safe_load(kept.read_text())["policy"]["escalate"] == ["llm"]
    assert (project / "site.draft1.yaml").read_text() == kept.read_text()
    fake_llm.stop()
    again = cli(project)
    assert not O.unconverged(again.plan(kept).steps)
    replay = again.apply(kept)
    assert replay.call.rc == 0 and replay.recap["totals"].get("changed", 0) == 0, replay.call.show()
    text = cli(project).opsrun("runs", "show", run_id)
    assert "draft 1: 2 step(s) (greeting, motd) by fake" in text.stdout, text.stdout
    assert "approval 1: automatic (--yes, within max_changes 10)" in text.stdout


def test_yes_is_refused_beyond_the_limits_and_nothing_is_applied(fake_llm, project):
    two = pb(file_step(project, "greeting", "hello.txt", "hello\n"), file_step(project, "motd", "motd.txt", "x\n"))
    blocked = pb({"id": "shout", "run": "echo {{ word }}"}, vars={"word": "danger"})
    fake_llm.script("fake-model", two, blocked)
    gw = gateway_file(project, fake_llm, max_changes=5)
    call = do(project, REQUEST, "--gateway", str(gw), "--yes", "--max-changes", "1")
    assert call.rc == 3, call.show()
    assert "--yes may not approve this plan" in call.stderr
    assert "2 step(s) change or may change, more than the limit of 1" in call.stderr
    assert "a human is needed" in call.stderr
    assert not (project / "out" / "hello.txt").exists()
    call = do(project, "say danger", "--gateway", str(gw), "--yes")
    assert call.rc == 3, call.show()
    assert "blocked by a safety rule (!): local/shout" in call.stderr
    doc = timeline(project, do_run_id(call))
    approval = next(e for e in doc["events"] if e["type"] == "approval")
    assert approval["decision"] == "refused" and doc["outcome"] == "waiting_for_human"
    assert not [e for e in doc["events"] if e["type"] == "apply"]
    # without --yes and without a terminal nobody can approve: a human is needed too
    fake_llm.script("fake-model", two)
    call = do(project, REQUEST, "--gateway", str(gw))
    assert call.rc == 3 and "nobody at a terminal to approve this plan" in call.stderr, call.show()
    assert not (project / "out" / "hello.txt").exists()
    listed = json.loads(cli(project).opsrun("runs", "list", "--json").stdout)
    assert sorted(r["playbook"] for r in listed) == ["do: say danger", f"do: {REQUEST}", f"do: {REQUEST}"]
    assert [r["outcome"] for r in listed] == ["waiting_for_human"] * 3


# ---------------------------------------------------------------- failure -> fixes -> replan


def test_a_failure_the_fix_does_not_mend_is_replanned(fake_llm, project):
    first = pb(file_step(project, "greeting", "hello.txt", "hello\n"), check_step(project))
    second = pb(file_step(project, "ready", "ready", "ok\n"), check_step(project))
    fake_llm.script("fake-model", first, FIX, second)
    gw = gateway_file(project, fake_llm)
    kept = project / "site.yaml"
    call = do(project, REQUEST, "--gateway", str(gw), "--yes", "-o", str(kept))
    assert call.rc == 0, call.show()
    assert (project / "out" / "ready").exists() and (project / "out" / "hello.txt").exists()
    # the replan prompt carried the evidence: what finished, the failed step and its command, the fix
    chats = fake_llm.chats()
    assert len(chats) == 3
    replan = chats[2].body["messages"][-1]["content"]
    for part in ("Playbook 1 for this request was applied and stopped", "finished: local/greeting (changed)",
                 "FAILED: step 'check' on local", f"$ test -f {project / 'out' / 'ready'}",
                 "fix for 'check' on local: the ready marker is missing", "work that remains only"):
        assert part in replan, (part, replan)
    run_id = do_run_id(call)
    doc = timeline(project, run_id)
    types = [e["type"] for e in doc["events"] if e["type"] in ("draft", "plan", "approval", "fix", "replan")]
    assert types == ["draft", "plan", "approval", "fix", "replan", "draft", "plan", "approval"], types
    fix = next(e for e in doc["events"] if e["type"] == "fix")
    assert fix["ok"] and fix["diagnosis"] == "the ready marker is missing"
    passes = [e for e in doc["events"] if e["type"] == "applied"]
    assert [p["ok"] for p in passes] == [False, True]
    assert oracle_problems(project, run_id, 2, passes[1]["apply_run"]) == []
    drafts = sorted(p.name for p in project.glob("site.draft*.yaml"))
    assert drafts == ["site.draft1.yaml", "site.draft2.yaml"]
    assert (project / "site.draft2.yaml").read_text() == kept.read_text()
    stored = project / ".opsrun" / "runs" / run_id / "draft-1.yaml"
    assert stored.read_text() == (project / "site.draft1.yaml").read_text()
    # repeated without a model: nothing to change
    fake_llm.stop()
    replay = cli(project).apply(kept)
    assert replay.call.rc == 0 and replay.recap["totals"].get("changed", 0) == 0, replay.call.show()
    text = cli(project).opsrun("runs", "show", run_id).stdout
    assert "fix: check on local: the ready marker is missing" in text and "replan: draft 2 asked for, after run" in text, text


def test_replans_exhausted_stop_for_a_human_with_the_evidence(fake_llm, project):
    failing = pb(check_step(project))
    fake_llm.script("fake-model", failing, failing)
    gw = gateway_file(project, fake_llm, max_fixes=0)
    call = do(project, REQUEST, "--gateway", str(gw), "--yes", "--max-replans", "1")
    assert call.rc == 3, call.show()
    assert "the fixes and 1 replan(s) ran out: step 'check' on local failed" in call.stderr
    assert "FAILED: step 'check' on local" in call.stderr and "opsrun apply --resume" in call.stderr
    assert len(fake_llm.chats()) == 2  # two drafts, no fix asked (max_fixes 0)
    doc = timeline(project, do_run_id(call))
    end = doc["events"][-1]
    assert end["type"] == "do_end" and end["outcome"] == "waiting_for_human"
    assert (project / end["report"]).read_text().count("FAILED: step 'check' on local") == 1


def test_an_invalid_draft_is_repaired_within_its_rounds(fake_llm, project):
    bad = pb({"id": "greeting", "file": {"path": str(project / "out" / "hello.txt"), "contnet": "hi\n"}})
    fake_llm.script("fake-model", bad, pb(file_step(project, "greeting", "hello.txt", "hi\n")))
    gw = gateway_file(project, fake_llm)
    call = do(project, REQUEST, "--gateway", str(gw), "--yes", "--max-repairs", "1")
    assert call.rc == 0, call.show()
    assert "unknown key 'contnet'" in fake_llm.chats()[1].body["messages"][-1]["content"]
    draft = next(e for e in timeline(project, do_run_id(call))["events"] if e["type"] == "draft")
    assert draft["tries"] == 2 and draft["ok"]


def test_one_deadline_covers_the_whole_run(fake_llm, project):
    """Draft 1.5 s, the fix 3 s: with one 4 s deadline the fix is cut and no replan is asked
    for; with a deadline per request the fix would answer and a third request would follow."""
    first = pb(check_step(project))
    fake_llm.script("fake-model", F.slow(first, pieces=3, delay=0.5), F.slow(FIX, pieces=3, delay=1.0),
                    first)
    gw = gateway_file(project, fake_llm, routing_deadline_s=60, deadline_s=4)
    call = do(project, REQUEST, "--gateway", str(gw), "--yes")
    assert call.rc == 3, call.show()
    assert "the deadline of 4s for the whole do run, do.deadline_s, was reached" in call.stderr
    assert len(fake_llm.chats()) == 2
    events = timeline(project, do_run_id(call))["events"]
    took = (datetime.fromisoformat(events[-1]["ts"]) - datetime.fromisoformat(events[0]["ts"])).total_seconds()
    assert events[-1]["type"] == "do_end" and 3 < took < 4 + 3, took


# ---------------------------------------------------------------- a person at the terminal


class Person:
    """The DoUI of a person at a terminal who answers `answer` to the approval prompt."""

    interactive = True

    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.asked: list[Any] = []
        self.refusals: list[list[str]] = []

    def note(self, text: str) -> None: ...
    def begin(self, run_id: str) -> None: ...
    def drafted(self, n: int, draft: Any, path: Path) -> None: ...
    def planned(self, plan: Any) -> None: ...
    def starting(self, run_id: str) -> None: ...
    def applied(self, outcome: Any) -> None: ...

    def refused(self, reasons: list[str]) -> None:
        self.refusals.append(reasons)

    def ask(self, plan: Any) -> bool:
        self.asked.append(plan)
        return self.answer

    def approve_fix(self, fix: Any) -> bool:
        return False

    def running(self, plan: Any) -> Any:
        import contextlib

        class View:
            human = None

            def event(self, ev: dict[str, Any]) -> None: ...

        return contextlib.nullcontext(View())


@pytest.mark.parametrize("answer", [False, True])
def test_beyond_the_limits_a_person_at_the_terminal_decides(fake_llm, make_gateway, project, monkeypatch, answer):
    from runner.errors import OpsrunError
    from runner.llm.do import DoLimits, DoRequest
    from runner.llm.do import do as run_do

    monkeypatch.chdir(project)
    fake_llm.script("fake-model", pb(file_step(project, "greeting", "hello.txt", "hello\n"),
                                     file_step(project, "motd", "motd.txt", "x\n")))
    person = Person(answer)
    req = DoRequest(REQUEST, inventory=str(project / "inventory.yaml"), yes=True)
    if answer:
        done = run_do(req, person, make_gateway(), limits=DoLimits(max_changes=1))
        assert done.ok and (project / "out" / "hello.txt").exists()
    else:
        with pytest.raises(OpsrunError, match="cancelled: nothing was changed") as info:
            run_do(req, person, make_gateway(), limits=DoLimits(max_changes=1))
        assert info.value.exit_code == 1 and not (project / "out" / "hello.txt").exists()
    assert len(person.asked) == 1
    assert person.refusals == [["2 step(s) change or may change, more than the limit of 1"]]
    doc = timeline(project, "last" if not answer else done.run_id)
    approval = next(e for e in doc["events"] if e["type"] == "approval")
    assert approval["decision"] == ("human" if answer else "declined")


def test_secrets_in_a_failure_never_reach_the_replan_or_the_journal(fake_llm, project):
    from runner import secrets

    canary = "canary-Do-5e1f0c"
    secrets.mark(canary)
    (project / "out" / "token").write_text(f"token={canary}\n")
    leak = {"id": "check", "run": {"command": f"cat {project / 'out' / 'token'} >&2; false", "changed_when": "false"}}
    fake_llm.script("fake-model", pb(leak), pb(file_step(project, "ready", "ready", "ok\n")))
    gw = gateway_file(project, fake_llm, max_fixes=0)
    call = do(project, REQUEST, "--gateway", str(gw), "--yes")
    assert call.rc == 0, call.show()
    replan = fake_llm.chats()[1]
    assert f"stderr: token={secrets.MASK}" in replan.body["messages"][-1]["content"]
    assert all(canary not in r.raw for r in fake_llm.chats())
    run_dir = project / ".opsrun" / "runs" / do_run_id(call)
    for path in run_dir.iterdir():
        assert canary not in path.read_text(), path


def test_the_cli_asks_at_a_terminal(fake_llm, project):
    """The real command in a pseudo-terminal: no --yes, so it asks; `y` applies."""
    import os
    import pty
    import select
    import subprocess
    import sys

    fake_llm.script("fake-model", pb(file_step(project, "greeting", "hello.txt", "hello\n")))
    gw = gateway_file(project, fake_llm)
    master, slave = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent), "NO_COLOR": "1"}
    env.pop("OPSRUN_STATE_DIR", None)
    proc = subprocess.Popen([sys.executable, "-m", "runner", "do", REQUEST, "-i", str(project / "inventory.yaml"),
                             "--gateway", str(gw)], cwd=project, env=env, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    seen, answered, deadline = b"", False, time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                seen += chunk
            if not answered and b"Apply these changes?" in seen:
                os.write(master, b"y\n")
                answered = True
            if proc.poll() is not None and not ready:
                break
        rc = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    text = seen.decode(errors="replace")
    assert answered and rc == 0, text
    assert "+ greeting" in text and (project / "out" / "hello.txt").read_text() == "hello\n"


def test_a_replan_that_stays_invalid_stops_for_a_human(fake_llm, project):
    bad = pb({"id": "ready", "file": {"path": str(project / "out" / "ready"), "contnet": "x"}})
    fake_llm.script("fake-model", pb(check_step(project)), bad, bad)
    gw = gateway_file(project, fake_llm, max_fixes=0)
    call = do(project, REQUEST, "--gateway", str(gw), "--yes", "--max-repairs", "1", "--deadline", "30")
    assert call.rc == 3, call.show()
    assert "the revised playbook 2 is not usable: the model's playbook is still not valid after 2 tries" in call.stderr
    doc = timeline(project, do_run_id(call))
    drafts = [e for e in doc["events"] if e["type"] == "draft"]
    assert [d["ok"] for d in drafts] == [True, False] and "unknown key 'contnet'" in drafts[1]["error"]
    assert doc["events"][0]["deadline"] == "the deadline of 30s for the whole do run, --deadline"
