"""The run report tells the whole truth: an escalation's rung, the LLM's diagnosis and its fix
as a plan, the fix and undo steps as they ran, the rollback, and the recap counts, on the
console, in `runs show` and in the `--json` stream. End to end on `local`, with the real fake
LLM server on loopback; every apply event type checked to render without a `None`.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from runner import report, report_runs
from runner.journal import RunInfo

pytestmark = [pytest.mark.usefixtures("network_audit")]

CANARY = "tok-CANARY-51d7e"


class Result:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def opsrun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """`opsrun ARGS` in this process (the real CLI entry point, cwd tmp_path): litellm is imported
    once for the whole test session instead of once per command."""
    from runner import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPSRUN_SECRET_CANARY", CANARY)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.delenv("OPSRUN_STATE_DIR", raising=False)

    def run(*args: str) -> Result:
        capsys.readouterr()
        try:
            cli.main(list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


def journal(cwd: Path, run_id: str) -> list[dict[str, Any]]:
    text = (cwd / ".opsrun" / "runs" / run_id / "events.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def project(tmp_path: Path, llm_url: str) -> Path:
    """A playbook whose `check` an LLM fix gets through, whose `migrate` no fix can help, so the
    host rolls back `check` and `folder`; the gateway points at the fake LLM server."""
    d = tmp_path / "app"
    (tmp_path / "gateway.yaml").write_text(
        "opsrun: 1\nproviders:\n"
        f"  fake: {{kind: openai, model: fake-model, api_base: '{llm_url}/v1'}}\n"
        "routing: {retries_per_provider: 0, deadline_s: 20}\ncache: {enabled: false}\n"
    )
    (tmp_path / "p.yaml").write_text(textwrap.dedent(f"""\
        opsrun: 1
        name: report
        hosts: local
        on_failure: rollback
        policy:
          retry: {{attempts: 1}}
          escalate: [llm]
          auto_fix: true
        steps:
          - id: folder
            file: {{path: {d}, state: directory}}
            undo: {{file: {{path: {d}, state: absent}}}}
          - id: check
            run: cat {d}/flag
            undo: rm -f {d}/flag
          - id: migrate
            run: echo "token {{{{ secret('CANARY') }}}} rejected" >&2; exit 3
    """))
    return d


def script_llm(fake_llm: Any, d: Path, tmp_path: Path) -> None:
    fix = {"diagnosis": "The flag file is missing.", "confidence": 0.9, "steps": [
        {"id": "fix_flag", "file": {"path": f"{d}/flag", "content": "up\n"}},
        {"id": "fix_log", "run": f"echo fixed >> {tmp_path}/fix.log"},
    ]}
    none = {"diagnosis": f"The service rejects the token {CANARY}; rotate it.", "confidence": 0.3, "steps": []}
    fake_llm.script("fake-model", json.dumps(fix), json.dumps(none))


def run_id_of(text: str) -> str:
    m = re.search(r"Recap (\S+)", text)
    assert m, text
    return m.group(1)


@pytest.mark.peer
def test_console_and_runs_show_tell_escalation_fix_and_rollback(tmp_path: Path, fake_llm: Any, opsrun: Any) -> None:
    d = project(tmp_path, fake_llm.url)
    script_llm(fake_llm, d, tmp_path)
    p = opsrun("apply", "p.yaml", "--yes")
    out = p.stdout
    assert p.returncode == 1, out + p.stderr
    assert not d.exists(), "the rollback removed the folder"
    assert (tmp_path / "fix.log").read_text() == "fixed\n", "the fix ran once"
    applying = out[out.index("Applying") :]
    expected = [
        # the failed try, the rung, the diagnosis and the proposed fix as a plan
        f"  try 1     local  check: $ cat {d}/flag -> rc 1",
        "  escalate  local  check: to the LLM fixer (rung 'llm'): exit code 1",
        "  diagnosis local  check: The flag file is missing. (confidence 0.90, fake/fake-model, ",
        "      proposed fix (2 steps):",
        f"      ? fix_flag: file {{\"path\": \"{d}/flag\", \"content\": \"up\\n\"}}",
        "      > fix_log: run",
        f"          $ echo fixed >> {tmp_path}/fix.log",
        # each fix step planned (probed) just before it runs, then what it ran
        f"  fix       local  check: + fix_flag: create file {d}/flag (3 bytes)",
        f"          put {d}/flag (3 bytes)",
        "          +up",
        f"  fix       local  fix_flag: $ put {d}/flag (3 bytes) -> rc 0",
        "  fix       local  check: > fix_log: will run",
        f"  fix       local  fix_log: $ echo fixed >> {tmp_path}/fix.log -> rc 0",
        "  fix ran   local  check: the step is tried again",
        "  changed   local  check (",
        # no fix for migrate: the diagnosis (secret masked) and why nothing ran
        "  escalate  local  migrate: to the LLM fixer (rung 'llm'): exit code 3",
        "  no fix    local  migrate: The service rejects the token ***; rotate it. (confidence 0.30",
        "      no fix to run: the model proposed no steps",
        "  failed    local  migrate (",
        # the rollback, newest first, each undo as a plan and as it ran
        "  rollback  local: undoing check, folder (newest first)",
        "  undo      local  check: > undo_check: will run",
        f"          $ rm -f {d}/flag",
        f"  undo      local  undo_check: $ rm -f {d}/flag -> rc 0",
        "  undone    local  check: its undo ran",
        f"  undo      local  folder: - undo_folder: remove directory {d}",
        f"          $ rm -rf -- {d}",
        "  undone    local  folder: its undo ran",
        "  rollback  local: finished",
        # the recap: fixed and undone next to the step statuses, each escalation, the rollback
        "  ~ local check: fixed by an LLM fix: The flag file is missing.",
        "  ^ local migrate: escalated to the LLM fixer: no LLM fix: the model proposed no steps "
        "(The service rejects the token ***; rotate it.)",
        "  x local migrate: rc 3: token *** rejected",
        "  < local rolled back: 2 step(s) undone",
        "Apply: 2 changed, 0 ok, 1 failed, 0 skipped, 0 blocked, 0 unreachable, 1 fixed, 2 undone; "
        "rolled back: local",
    ]
    at = 0
    for line in expected:  # in this order
        found = applying.find(line, at)
        assert found >= 0, f"missing (in order): {line!r}\n{applying}"
        at = found + len(line)
    header = next(ln for ln in applying.splitlines() if ln.startswith("  host "))
    row = next(ln for ln in applying.splitlines() if ln.startswith("  local "))
    cells = dict(zip(header.split()[1:], row.split()[1:], strict=True))
    assert cells == {"ok": "0", "changed": "2", "failed": "1", "skipped": "0", "blocked": "0",
                     "unreachable": "0", "fixed": "1", "undone": "2"}, applying
    assert "None" not in out and CANARY not in out + p.stderr

    run_id = run_id_of(out)
    shown = opsrun("runs", "show", run_id)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    for line in (
        "  local  check  escalate: to the LLM fixer (rung 'llm'): exit code 1",
        "  local  check  diagnosis: The flag file is missing. (confidence 0.90, fake/fake-model",
        "    proposed fix (2 steps):",
        f"        $ echo fixed >> {tmp_path}/fix.log",
        f"  local  check  fix: + fix_flag: create file {d}/flag (3 bytes)",
        f"  local  fix_flag  fix: $ put {d}/flag (3 bytes) -> rc 0",
        "  local  check  fix ran: the step is tried again",
        "  local  migrate  no fix: The service rejects the token ***; rotate it.",
        "  local  rollback: undoing check, folder (newest first)",
        "  local  check  undo: > undo_check: will run",
        f"  local  undo_folder  undo: $ rm -rf -- {d} -> rc 0",
        "  local  folder  undone: its undo ran",
        "  local  rollback: finished",
        "local: 2 changed, 1 failed, 2 escalated, 1 fixed, 2 undone, rolled back",
    ):
        assert line in text, f"runs show lacks {line!r}\n{text}"
    assert "None" not in text and CANARY not in text
    as_json = json.loads(opsrun("runs", "show", run_id, "--json").stdout)
    assert as_json["hosts"]["local"] == {"ok": 0, "changed": 2, "failed": 1, "skipped": 0, "blocked": 0,
                                         "unreachable": 0, "escalated": 2, "fixes": 1, "fixed": 1, "undone": 2,
                                         "undo_failed": 0, "rolled_back": 1}
    # every event of the run has its line in `runs show`
    types = {e["type"] for e in journal(tmp_path, run_id)}
    assert {"llm_fix", "fix_plan", "fix", "llm_fix_result", "rollback_start", "undo_plan", "undo",
            "undo_end", "rollback_end"} <= types


@pytest.mark.peer
def test_json_stream_carries_every_event_and_the_recap_counts(tmp_path: Path, fake_llm: Any, opsrun: Any) -> None:
    d = project(tmp_path, fake_llm.url)
    script_llm(fake_llm, d, tmp_path)
    p = opsrun("apply", "p.yaml", "--yes", "--json")
    assert p.returncode == 1, p.stdout + p.stderr
    stream = [json.loads(line) for line in p.stdout.splitlines()]
    recap = stream[-1]
    assert recap["type"] == "recap"
    journaled = journal(tmp_path, recap["run_id"])
    # written by the CLI around the run (and `process` records, for resume): the recap ends the stream
    cli_only = {"run_start", "run_end", "resume", "process"}
    assert [e["seq"] for e in stream[:-1]] == [e["seq"] for e in journaled if e["type"] not in cli_only]
    fix_plans = [e["plan"] for e in stream if e["type"] == "fix_plan"]
    assert [(f["instance"], f["marker"]) for f in fix_plans] == [("fix_flag", "+"), ("fix_log", ">")]
    assert fix_plans[1]["actions"][0]["command"] == f"echo fixed >> {tmp_path}/fix.log"
    undo_plans = [(e["instance"], e["plan"]["marker"]) for e in stream if e["type"] == "undo_plan"]
    assert undo_plans == [("check", ">"), ("folder", "-")]
    assert recap["totals"] == {"ok": 0, "changed": 2, "failed": 1, "skipped": 0, "blocked": 0, "unreachable": 0,
                               "escalated": 2, "fixes": 1, "fixed": 1, "undone": 2, "undo_failed": 0,
                               "rolled_back": 1}
    host = recap["hosts"]["local"]
    assert host["rolled_back"] and host["counts"]["fixed"] == 1 and host["counts"]["undone"] == 2
    first, second = host["escalations"]
    assert first["rung"] == "llm" and first["instance"] == "check" and first["fix_ran"]
    assert first["diagnosis"] == "The flag file is missing." and first["step_status"] == "changed"
    assert [s["id"] for s in first["fix_steps"]] == ["fix_flag", "fix_log"]
    assert second["rung"] == "llm" and not second["fix_ok"] and second["error"] == "the model proposed no steps"
    assert second["diagnosis"] == "The service rejects the token ***; rotate it."
    assert second["step_status"] == "failed"
    assert CANARY not in p.stdout + p.stderr


@pytest.mark.peer
def test_a_fix_that_is_not_run_is_still_shown_as_a_plan(tmp_path: Path, fake_llm: Any, opsrun: Any) -> None:
    d = project(tmp_path, fake_llm.url)
    text = (tmp_path / "p.yaml").read_text().replace("  auto_fix: true\n", "")
    (tmp_path / "p.yaml").write_text(text.replace("on_failure: rollback\n", ""))
    fix = {"diagnosis": "The flag file is missing.", "confidence": 0.9,
           "steps": [{"id": "fix_touch", "run": f"touch {d}/flag"}]}
    fake_llm.script("fake-model", json.dumps(fix))
    p = opsrun("apply", "p.yaml", "--yes")
    assert p.returncode == 1, p.stdout + p.stderr
    assert not (d / "flag").exists(), "without auto_fix and no human, the fix does not run"
    out = p.stdout
    for line in (
        "  diagnosis local  check: The flag file is missing. (confidence 0.90",
        "      > fix_touch: run",
        f"          $ touch {d}/flag",
        "  note      local  check: fix not run: needs auto_fix: true or a human's approval",
        "  ^ local check: escalated to the LLM fixer: an LLM fix was proposed (The flag file is missing.) "
        "but not run",
        "0 fixed, 0 undone",
    ):
        assert line in out, f"missing {line!r}\n{out}"
    assert "fix_plan" not in {e["type"] for e in journal(tmp_path, run_id_of(out))}


def test_human_rung_on_the_console(tmp_path: Path, opsrun: Any) -> None:
    (tmp_path / "p.yaml").write_text(textwrap.dedent("""\
        opsrun: 1
        name: human
        hosts: local
        policy: {retry: {attempts: 1}, escalate: [human]}
        steps:
          - id: needs_you
            run: echo "disk full" >&2; exit 7
    """))
    p = opsrun("apply", "p.yaml", "--yes")
    assert p.returncode == 3, p.stdout + p.stderr
    out = p.stdout
    assert "  escalate  local  needs_you: to a human (rung 'human'): exit code 7" in out, out
    assert "  waiting   local  needs_you: the run stops for a human; report: " in out
    assert "escalation.md" in out
    assert "  ^ local needs_you: escalated to a human: waiting for a human" in out
    assert "None" not in out


# ---------------------------------------------------------------- every event type


def _apply_event_types() -> set[str]:
    """The event types runner/apply/ emits, read from its source (labels of fragments too)."""
    src = "\n".join(p.read_text() for p in sorted((Path(report.__file__).parent / "apply").glob("*.py")))
    types = set(re.findall(r'emit\(\s*"(\w+)"', src))
    labels = set(re.findall(r'label="(\w+)"', src))  # _run_fragment emits `label` and f"{label}_plan"
    types |= labels
    if 'f"{label}_plan"' in src:
        types |= {f"{label}_plan" for label in labels}
    return types


SAMPLES: dict[str, dict[str, Any]] = {
    "step_start": {"kind": "run", "title": "t"},
    "attempt": {"attempt": 2, "command": "false", "rc": 1, "duration": 0.01, "stdout_tail": "", "stderr_tail": "boom"},
    "step_end": {"status": "failed", "rc": 1, "attempts": 2, "duration": 0.5, "message": "rc 1: boom", "table": None},
    "register": {"result": {"changed": False}},
    "step_done_earlier": {},
    "retry": {"attempt": 1, "delay": 0.5, "reason": "try 2 of 3", "failure": "nonzero"},
    "escalate": {"to": "llm", "note": "no LLM fixer available (install opsrun[llm]); skipping"},
    "llm_fix": {"ok": True, "diagnosis": "d", "confidence": 0.5, "steps": [{"id": "f", "run": "true"}],
                "provider": "p", "model": "m", "latency_s": 0.1, "prompt_chars": 10, "error": "", "fingerprint": "x"},
    "llm_fix_result": {"ok": False},
    "fix": {"ok": False, "error": "no step kind in ['bogus']"},
    "fix_plan": {"plan": {"instance": "f", "status": "run", "summary": "will run", "actions": [
        {"kind": "cmd", "display": "true", "command": "true"}], "diff": "", "reason": ""}},
    "undo": {"attempt": 1, "command": "rm -f x", "rc": 0, "duration": 0.01, "stdout_tail": "", "stderr_tail": ""},
    "undo_plan": {"plan": {"instance": "undo_x", "status": "delete", "summary": "remove x", "actions": []}},
    "undo_end": {"ok": False},
    "rollback_start": {"steps": []},
    "rollback_end": {},
    "waiting_for_human": {"report": "/r/escalation.md", "notify_error": "webhook answered HTTP 500"},
    "human_decision": {"choice": "edit", "command": "make it work"},
    "note": {"note": "the same fix was already tried; not again"},
    "blocked": {"reason": "rule 'rm-root' forbids: rm -rf /"},
    "verify": {"command": "curl -f localhost", "rc": 7, "duration": 0.2, "stdout_tail": "", "stderr_tail": "refused"},
    "attempt_error": {"attempt": 1, "error": "connection reset", "error_type": "ConnectError"},
    "interrupted": {"note": "stopped after the current action"},
    "artifact": {"path": "artifacts/local/shot.png", "bytes": 42},
    "host_unreachable": {"error": "no route to host"},
    "batch_start": {"hosts": ["a", "b"]},
    "plan_diverged": {"planned": "noop", "now": "update", "reason": "planned '= x', now '~ x'"},
    "notify": {"handlers": ["restart"]},
    "handler": {"handler": "restart", "at": "end", "notified_by": ["conf", "site"]},
    "handlers_not_run": {"at": "flush", "handlers": ["restart"], "reason": "a step failed on this host"},
    "until": {"attempt": 2, "met": False, "tries": 2, "of": 4, "error": None, "delay": 0.5, "expression": "rc == 0"},
}


def test_every_apply_event_type_has_a_console_and_a_timeline_line() -> None:
    emitted = _apply_event_types()
    assert {"escalate", "llm_fix", "fix", "undo", "fix_plan", "undo_plan", "undo_end", "rollback_end"} <= emitted
    missing = emitted - set(SAMPLES)
    assert not missing, f"new apply event types without a rendering check here and in report.py: {missing}"
    events = [{"seq": i, "ts": "2026-12-03T10:00:00+00:00", "type": t, "host": "h1", "step": "s",
               "instance": "s", **fields} for i, (t, fields) in enumerate(SAMPLES.items(), 1)]
    for ev in events:
        line = report.event_line(ev)
        if ev["type"] in report.FOLDED:
            assert line is None
            continue
        assert line and "None" not in line, (ev["type"], line)
    assert "no LLM fixer available" in (report.event_line(events[6]) or "")
    timeline = report_runs.run_timeline(RunInfo("r", Path("."), [
        {"seq": 0, "ts": "2026-12-03T10:00:00+00:00", "type": "run_start", "hosts": ["h1"]}, *events]))
    assert "None" not in timeline
    body = timeline.splitlines()[3:]
    for ev in events:
        label = (report.describe(ev) or (ev["type"],))[0]
        if ev["type"] == "step_start":
            label = "start (run)"
        elif ev["type"] == "register":
            label = "registered"
        elif ev["type"] == "attempt":
            label = "try 2: $ false"
        assert any(label in ln for ln in body), (ev["type"], label, timeline)


def test_event_lines_off_a_terminal_are_flushed_in_batches_never_held_long(monkeypatch: Any) -> None:
    """runner.cli.output.Lines: on a terminal every line is flushed; elsewhere lines written
    together share a flush, a line written alone is flushed by a timer within FLUSH_S, and
    close() flushes the rest; order is kept."""
    import sys
    import time as _time

    from runner.cli.output import Lines

    class Stream:
        def __init__(self, tty: bool) -> None:
            self.tty, self.text, self.flushed, self.flushes = tty, "", "", 0

        def isatty(self) -> bool:
            return self.tty

        def write(self, s: str) -> None:
            self.text += s

        def flush(self) -> None:
            self.flushes += 1
            self.flushed = self.text

    pipe = Stream(False)
    monkeypatch.setattr(sys, "stdout", pipe)
    lines = Lines()
    for i in range(200):
        lines.write(f"line {i}\n")
    assert pipe.flushes <= 3, pipe.flushes  # the first line, then the timer
    deadline = _time.monotonic() + 2 * Lines.FLUSH_S + 1
    while pipe.flushed != pipe.text and _time.monotonic() < deadline:
        _time.sleep(0.01)
    assert pipe.flushed == pipe.text, "a line was held past the timer"
    lines.write("last\n")
    lines.close()
    assert pipe.flushed.endswith("line 199\nlast\n") and pipe.text.count("\n") == 201
    tty = Stream(True)
    monkeypatch.setattr(sys, "stdout", tty)
    lines = Lines()
    for i in range(5):
        lines.write(f"{i}\n")
    assert tty.flushes == 5
