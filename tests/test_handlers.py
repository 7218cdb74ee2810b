"""Handlers end to end on `local`, held to the plan/apply oracle: notified by a change they run
once per host at the end (or at a flush step), not when nothing changed, twice when notified
again after a flush, never on a failed host unless `force_handlers`; role handlers; validate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.oracle import Oracle

ROOT = Path(__file__).resolve().parent.parent


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def playbook(project: Path, *parts: str) -> Path:
    """site.yaml for `local`, of `parts` (each dedented); @T stands for the folder it manages."""
    target = project / "t"
    target.mkdir(exist_ok=True)
    body = "opsrun: 1\nname: handlers\nhosts: local\n" + "".join(textwrap.dedent(p) for p in parts)
    path = project / "site.yaml"
    path.write_text(body.replace("@T", str(target)))
    return path


def opsrun(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "OPSRUN_STATE_DIR"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=project, text=True, capture_output=True,
                          env=env, timeout=120, stdin=subprocess.DEVNULL)


def log(project: Path) -> list[str]:
    path = project / "t" / "log"
    return path.read_text().split() if path.exists() else []


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("type") == kind]


HANDLERS = """\
handlers:
  - id: restart
    run: echo restart >> @T/log
  - id: reload
    run: echo reload >> @T/log
"""


# ---------------------------------------------------------------- notified, not notified, twice


def test_notified_twice_runs_once_at_the_end_and_not_again(tmp_path: Path) -> None:
    pb = playbook(tmp_path, HANDLERS, """\
        steps:
          - id: a
            file: {path: @T/a.conf, content: "a\\n"}
            notify: restart
          - id: b
            file: {path: @T/b.conf, content: "b\\n"}
            notify: [restart]
          - id: c
            file: {path: @T/c.conf, content: "c\\n"}
        """)
    report = Oracle(tmp_path).check(pb, known=True, check_actions=True)
    first = report.first.step("restart")
    assert (first.status, first.actions) == ("run", (f"echo restart >> {tmp_path}/t/log",))
    assert report.first.find("reload") is None  # nobody notifies it: not in the plan
    assert [sp.instance for sp in report.first.steps][-1] == "restart"  # after every step
    entry = next(s for s in report.first.doc["steps"] if s["instance"] == "restart")
    assert entry["handler"] == {"at": "end", "notified_by": ["a", "b"]}
    assert log(tmp_path) == ["restart"]
    assert [e["handlers"] for e in of_type(report.apply.events, "notify")] == [["restart"], ["restart"]]
    (ran,) = of_type(report.apply.events, "handler")
    assert (ran["step"], ran["at"], ran["notified_by"]) == ("restart", "end", ["a", "b"])
    # second run: nothing changes, so nothing notifies: planned and applied as skipped
    again = report.second.step("restart")
    assert again.status == "skip" and "not notified: steps 'a', 'b' change nothing" in again.summary
    p = opsrun(tmp_path, "apply", "site.yaml", "--yes")
    assert p.returncode == 0, p.stderr
    assert log(tmp_path) == ["restart"]
    text = opsrun(tmp_path, "plan", "site.yaml").stdout
    assert "= restart: skipped (not notified: steps 'a', 'b' change nothing)  (handler of steps 'a', 'b', " \
           "after the host's steps)" in text, text


def test_only_the_steps_that_change_notify(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a.conf").write_text("a\n")
    pb = playbook(tmp_path, HANDLERS, """\
        steps:
          - id: a
            file: {path: @T/a.conf, content: "a\\n"}
            notify: restart
          - id: b
            file: {path: @T/b.conf, content: "b\\n"}
            notify: reload
        """)
    report = Oracle(tmp_path).check(pb, known=True)
    assert report.first.step("restart").status == "skip"
    assert report.first.step("reload").status == "run"
    assert log(tmp_path) == ["reload"]
    assert "restart" not in {e.get("step") for e in report.apply.events}  # not notified: nothing to say


def test_flush_runs_the_handlers_there_and_again_when_notified_after(tmp_path: Path) -> None:
    pb = playbook(tmp_path, HANDLERS, """\
        steps:
          - id: a
            file: {path: @T/a.conf, content: "a\\n"}
            notify: [restart, reload]
          - id: now
            flush_handlers: true
          - id: b
            file: {path: @T/b.conf, content: "b\\n"}
            notify: restart
        """)
    report = Oracle(tmp_path).check(pb, known=True)
    order = [sp.instance for sp in report.first.steps]
    assert order == ["a", "restart@now", "reload@now", "b", "restart"]
    assert log(tmp_path) == ["restart", "reload", "restart"]
    ends = [e["instance"] for e in of_type(report.apply.events, "step_end")]
    assert ends == ["a", "restart@now", "reload@now", "b", "restart"]
    # the second plan: every run of the handlers skipped, each where it would run
    assert [sp.status for sp in report.second.steps] == ["noop", "skip", "skip", "noop", "skip"]


def test_a_handler_may_notify_a_later_handler(tmp_path: Path) -> None:
    pb = playbook(tmp_path, """\
        handlers:
          - id: render
            file: {path: @T/rendered, content: "r\\n"}
            notify: restart
          - id: restart
            run: echo restart >> @T/log
        steps:
          - id: a
            file: {path: @T/a.conf, content: "a\\n"}
            notify: render
        """)
    report = Oracle(tmp_path).check(pb, known=True)
    assert [sp.status for sp in report.first.steps] == ["create", "create", "run"]
    assert log(tmp_path) == ["restart"]


def test_a_notifier_decided_at_apply_makes_the_handler_undecided_with_its_reason(tmp_path: Path) -> None:
    pb = playbook(tmp_path, HANDLERS, """\
        steps:
          - id: migrate
            run: {command: "echo 'Applied 2 migrations'", changed_when: "'Applied' in stdout"}
            notify: restart
        """)
    report = Oracle(tmp_path).check(pb, non_convergent=["migrate", "restart"])
    sp = report.first.step("restart")
    assert sp.status == "unknown"
    assert sp.reason == "notified by step 'migrate', whose change is decided at apply"
    assert sp.summary.startswith("runs only if step 'migrate' changes something: > will run")
    assert log(tmp_path) == ["restart"]  # it did change
    assert report.first.doc["steps"][-1]["conditional_on"] == ["migrate"]


def test_a_failed_host_runs_no_handlers_unless_force_handlers(tmp_path: Path) -> None:
    steps = """\
        steps:
          - id: a
            file: {path: @T/a.conf, content: "a\\n"}
            notify: restart
          - id: broken
            run: exit 3
        """
    playbook(tmp_path, HANDLERS, steps)
    p = opsrun(tmp_path, "apply", "site.yaml", "--yes", "--json")
    assert p.returncode != 0
    events = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    (skipped,) = of_type(events, "handlers_not_run")
    assert skipped["handlers"] == ["restart"] and "force_handlers" in skipped["reason"]
    assert log(tmp_path) == []
    recap = events[-1]
    assert recap["hosts"]["local"]["handlers"][0]["status"] == "not run"
    # force_handlers: the notified handler runs at the end all the same
    (tmp_path / "t" / "a.conf").unlink()
    playbook(tmp_path, "force_handlers: true\n", HANDLERS, steps)
    p = opsrun(tmp_path, "apply", "site.yaml", "--yes")
    assert p.returncode != 0
    assert log(tmp_path) == ["restart"]
    assert "* local handlers: restart changed" in p.stdout, p.stdout


def test_free_strategy_runs_the_handlers_per_host(tmp_path: Path) -> None:
    pb = playbook(tmp_path, "strategy: free\n" + HANDLERS, """\
        steps:
          - id: a
            file: {path: @T/a.conf, content: "a\\n"}
            notify: reload
          - id: now
            flush_handlers: true
          - id: b
            file: {path: @T/b.conf, content: "b\\n"}
            notify: reload
        """)
    Oracle(tmp_path).check(pb, known=True)
    assert log(tmp_path) == ["reload", "reload"]


# ---------------------------------------------------------------- step files and roles


def test_role_handlers_and_playbook_handlers_from_inside_a_role(tmp_path: Path) -> None:
    write(tmp_path / "roles" / "app" / "role.yaml", """\
        params: {name: {type: string}}
        steps:
          - id: conf
            file: {path: "{{ root }}/{{ name }}.conf", content: "{{ name }}\\n"}
            notify: [restart, announce]
        handlers:
          - id: restart
            run: "echo restart-{{ name }} >> {{ root }}/log"
        """)
    pb = playbook(tmp_path, """\
        vars: {root: "@T"}
        handlers:
          - id: announce
            run: echo announce >> @T/log
        steps:
          - id: shop
            role: {path: roles/app, with: {name: shop}}
          - id: outlet
            role: {path: roles/app, with: {name: outlet}}
        """)
    assert opsrun(tmp_path, "validate", "site.yaml").returncode == 0
    report = Oracle(tmp_path).check(pb, known=True)
    order = [sp.instance for sp in report.first.steps]
    # in the order listed: those of the roles (in the order they are used), then the playbook's
    assert order == ["shop.conf", "outlet.conf", "shop.restart", "outlet.restart", "announce"]
    assert log(tmp_path) == ["restart-shop", "restart-outlet", "announce"]


# ---------------------------------------------------------------- validate


def test_validate_reports_handler_mistakes_where_they_are_written(tmp_path: Path) -> None:
    playbook(tmp_path, """\
        handlers:
          - id: restart
            run: echo restart
            notify: reload
          - id: reload
            run: echo reload
            notify: restart
          - id: lonely
            run: echo lonely
          - id: a
            run: echo clash
        steps:
          - id: a
            run: echo a
            notify: [restrat, b]
          - id: b
            run: "echo {{ steps.reload.rc }}"
          - id: now
            flush_handlers: true
            when: steps.a.changed
        """)
    p = opsrun(tmp_path, "validate", "site.yaml")
    assert p.returncode == 4
    found = p.stderr
    for line in (
        "site.yaml:10:13: error: handler 'reload' notifies handler 'restart', listed before it",
        "site.yaml:11:9: warning: handler 'lonely' is never notified",
        "site.yaml:13:9: error: handler id 'a' is already the id of a step (line 16)",
        "site.yaml:18:14: error: no handler 'restrat'",
        "    hint: did you mean 'restart'?",
        "site.yaml:18:23: error: 'b' is a step, not a handler",
        "site.yaml:20:10: error: 'reload' is a handler: no step reads a handler's result",
        "site.yaml:23:5: error: unknown key 'when' in step 'now'",
    ):
        assert line in found, f"{line!r} not in\n{found}"


def test_handler_keys_the_schema_refuses(tmp_path: Path) -> None:
    playbook(tmp_path, """\
        handlers:
          - id: restart
            run: echo restart
            register: out
            tags: [web]
        steps:
          - id: a
            run: echo a
            notify: restart
        """)
    p = opsrun(tmp_path, "validate", "site.yaml")
    assert p.returncode == 4
    assert "site.yaml:7:5: error: register cannot be used on a handler (no step reads a handler's result)" in p.stderr
    assert "cannot be used on a handler: it runs when notified, whatever --tags selects" in p.stderr


@pytest.mark.parametrize("flush", ["meta: flush_handlers", "listen: restart"])
def test_ansible_handler_habits_get_the_opsrun_way(tmp_path: Path, flush: str) -> None:
    playbook(tmp_path, f"""\
        steps:
          - id: a
            run: echo a
            {flush}
        """)
    p = opsrun(tmp_path, "validate", "site.yaml")
    assert p.returncode == 4
    assert "flush_handlers: true" in p.stderr or "notify: <id>" in p.stderr, p.stderr


# ---------------------------------------------------------------- saved plans and resume


def test_a_saved_plan_with_handlers_applies_as_reviewed(tmp_path: Path) -> None:
    playbook(tmp_path, HANDLERS, """\
        steps:
          - id: a
            file: {path: @T/a.conf, content: "a\\n"}
            notify: restart
          - id: now
            flush_handlers: true
        """)
    assert opsrun(tmp_path, "plan", "site.yaml", "-o", "plan.json").returncode in (0, 2)
    p = opsrun(tmp_path, "apply", "plan.json", "--yes")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "diverged" not in p.stdout
    assert log(tmp_path) == ["restart"]


def test_resume_notifies_again_from_the_steps_that_finished_before(tmp_path: Path) -> None:
    """A run stopped for a human after `a` changed: `apply --resume` does not run `a` again,
    but its change still notifies, so the handler runs at the end of the resumed run."""
    playbook(tmp_path, HANDLERS, """\
        steps:
          - id: a
            file: {path: @T/a.conf, content: "a\\n"}
            notify: restart
          - id: gate
            run: test -f @T/go
            policy: {escalate: [human]}
        """)
    first = opsrun(tmp_path, "apply", "site.yaml", "--yes", "--json")
    assert first.returncode == 3, first.stdout + first.stderr
    run_id = json.loads(first.stdout.splitlines()[-1])["run_id"]
    assert log(tmp_path) == []
    (tmp_path / "t" / "go").write_text("")
    p = opsrun(tmp_path, "apply", "--resume", run_id, "--yes")
    assert p.returncode == 0, p.stdout + p.stderr
    assert log(tmp_path) == ["restart"]
