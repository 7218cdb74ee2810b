"""The planned state carried across steps (runner/overlay.py, runner/steps/paths.py) and the
planner threading it: pure table tests of the overlay, then real plans and applies on the
local host where several steps touch one path, checked step by step against apply."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from runner.overlay import ABSENT, Effect, Identity, Overlay, PathState, Unknown

OPSRUN = [sys.executable, "-m", "runner"]


# ---------------------------------------------------------------- the overlay, pure


def test_removed_folder_takes_its_contents() -> None:
    ov = Overlay(identity=Identity("u", "g"))
    ov.record("f", [Effect(("path", "/d/a/f"), PathState("file", content=b"x"))])
    ov.record("rm", [Effect(("path", "/d"), ABSENT, tree=True)])
    assert ov.path("/d/a/f") == ABSENT
    assert ov.path("/d/a") == ABSENT
    assert ov.path("/other") is None


def test_folder_made_again_is_empty_and_parents_are_implied() -> None:
    ov = Overlay(identity=Identity("u", "g", 0o027))
    ov.record("rm", [Effect(("path", "/d"), ABSENT, tree=True)])
    ov.record("f", [Effect(("path", "/d/sub/x"), PathState("file", content=b"x"))])
    parent = ov.path("/d/sub")
    assert isinstance(parent, PathState) and parent.type == "directory" and parent.fresh
    assert parent.mode == "0750" and parent.owner == "u"
    assert ov.path("/d/sub/other") == ABSENT  # in a folder made by the plan
    ov2 = Overlay(identity=Identity("u", "g"))
    ov2.record("f", [Effect(("path", "/srv/new/x"), PathState("file", content=b"x"))])
    implied = ov2.path("/srv/new")
    assert isinstance(implied, PathState) and implied.implied  # the host's own state wins if it exists
    assert ov2.path("/srv/new/y") is None


def test_uncertain_steps_make_what_they_touch_unknown() -> None:
    ov = Overlay()
    ov.record("maybe", [Effect(("path", "/d"), ABSENT, tree=True)], uncertain="it may not run")
    assert ov.path("/d/x") == Unknown("it may not run")
    ov.record("later", [Effect(("path", "/e"), Unknown(""))])
    assert isinstance(ov.path("/e"), Unknown) and "later" in ov.path("/e").reason


@pytest.mark.parametrize(
    ("first", "second", "fights"),
    [
        (PathState("file", content=b"a\n"), PathState("file", content=b"a\nb\n"), True),
        (PathState("file", content=b"a\n"), PathState("file", content=b"a\n"), False),
        (PathState("file", content=b"a\n"), ABSENT, True),
        (PathState("directory"), PathState("directory", mode="0700"), False),
        (PathState("link", link_target="/a"), PathState("link", link_target="/b"), True),
    ],
)
def test_conflicts_between_exact_steps(first: PathState, second: PathState, fights: bool) -> None:
    ov = Overlay()
    ov.record("one", [Effect(("path", "/p"), first)])
    ov.record("two", [Effect(("path", "/p"), second)])
    assert bool(ov.conflicts) is fights
    same = Overlay()  # items of one loop never fight each other
    same.record("l[0]", [Effect(("path", "/p"), first)])
    same.record("l[1]", [Effect(("path", "/p"), second)])
    assert not same.conflicts


# ---------------------------------------------------------------- plan vs apply on local


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*OPSRUN, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def _plan(pb: Path, *extra: str) -> dict[str, Any]:
    res = _run(["plan", str(pb), "--json", *extra], pb.parent)
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout))


def _apply(pb: Path, *extra: str) -> dict[str, str]:
    res = _run(["apply", str(pb), "--yes", "--json", *extra], pb.parent)
    assert res.returncode in (0, 1), res.stderr
    out = {}
    for line in res.stdout.splitlines():
        ev = json.loads(line)
        if ev.get("type") == "step_end":
            out[ev["instance"]] = ev["status"]
        assert ev.get("type") != "plan_diverged", ev
    return out


EXPECT = {"noop": {"ok", "skipped"}, "skip": {"ok", "skipped"}, "create": {"changed"}, "update": {"changed"},
          "delete": {"changed"}, "run": {"changed", "ok"}}


def _agree(plan: dict[str, Any], applied: dict[str, str]) -> None:
    wrong = []
    for sp in plan["steps"]:
        if sp["status"] == "unknown":
            assert sp["reason"], sp
            continue
        got = applied.get(sp["instance"])
        if got not in EXPECT[sp["status"]]:
            wrong.append(f"{sp['instance']}: plan {sp['status']} ({sp['summary']}), apply {got}")
    assert not wrong, "\n".join(wrong)


def _playbook(tmp_path: Path, steps: str, vars_: str = "") -> Path:
    pb = tmp_path / "pb.yaml"
    pb.write_text(
        f"opsrun: 1\nname: t\nhosts: local\nvars: {{d: {tmp_path / 'w'}{vars_}}}\nsteps:\n" + textwrap.dedent(steps)
    )
    return pb


def test_content_then_line_is_planned_against_the_content(tmp_path: Path) -> None:
    pb = _playbook(
        tmp_path,
        """
        - id: conf
          file: {path: "{{ d }}/app.conf", content: "a=1\\n"}
        - id: extra
          line: {path: "{{ d }}/app.conf", line: "b=2"}
        """,
    )
    for _ in range(2):  # first run and second run: the plan says what apply does
        plan = _plan(pb)
        _agree(plan, _apply(pb))
    extra = next(s for s in plan["steps"] if s["instance"] == "extra")
    assert extra["status"] == "update" and "+b=2" in extra["diff"] and " a=1" in extra["diff"]
    assert any("'conf' and 'extra'" in w for w in plan["warnings"])
    res = _run(["validate", str(pb)], tmp_path)
    assert res.returncode == 0 and "warning: steps 'conf' and 'extra' both manage" in res.stderr


def test_line_loop_diff_shows_every_earlier_line(tmp_path: Path) -> None:
    pb = _playbook(
        tmp_path,
        """
        - id: users
          loop: "{{ names }}"
          line: {path: "{{ d }}/users", line: "{{ item }}", create: true}
        """,
        ", names: [alice, bob, carol]",
    )
    plan = _plan(pb)
    last = next(s for s in plan["steps"] if s["instance"] == "users[2]")
    assert " alice" in last["diff"] and " bob" in last["diff"] and "+carol" in last["diff"]
    assert not plan["warnings"]
    _agree(plan, _apply(pb))
    assert all(s["status"] == "noop" for s in _plan(pb)["steps"])


def test_folder_removed_then_made_again(tmp_path: Path) -> None:
    pb = _playbook(
        tmp_path,
        """
        - id: wipe
          file: {path: "{{ d }}", state: absent}
        - id: mk
          file: {path: "{{ d }}", state: directory, mode: "0750"}
        - id: f
          file: {path: "{{ d }}/sub/x.txt", content: "hi\\n", mode: "0600"}
        - id: sub
          file: {path: "{{ d }}/sub", state: directory}
        - id: made
          run: {command: "mkdir -p {{ d }}/m && touch {{ d }}/m/f", creates: "{{ d }}/m/f"}
        - id: again
          run: {command: "echo again", creates: "{{ d }}/m/f"}
        """,
    )
    for _ in range(2):
        plan = _plan(pb)
        _agree(plan, _apply(pb))
    by = {s["instance"]: s["status"] for s in plan["steps"]}
    assert by == {"wipe": "delete", "mk": "create", "f": "create", "sub": "noop", "made": "run", "again": "noop"}


def test_register_and_stdout_without_newline(tmp_path: Path) -> None:
    pb = _playbook(
        tmp_path,
        """
        - id: greet
          register: g
          run: {command: "echo hello", changed_when: "false"}
        - id: show
          when: steps.greet.stdout == 'hello' and g.stdout == 'hello'
          run: "echo got {{ g.stdout }}"
        """,
    )
    plan = _plan(pb)
    show = next(s for s in plan["steps"] if s["instance"] == "show")
    assert show["status"] == "unknown" and "greet" in show["reason"]
    assert _apply(pb) == {"greet": "ok", "show": "changed"}
    saved = tmp_path / "plan.json"
    assert _run(["plan", str(pb), "-o", str(saved)], tmp_path).returncode == 0
    res = _run(["apply", str(saved), "--json"], tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr


def test_tags_and_steps_that_read_unselected_steps(tmp_path: Path) -> None:
    pb = _playbook(
        tmp_path,
        """
        - id: conf
          tags: [config]
          file: {path: "{{ d }}/c.conf", content: "x\\n"}
        - id: reload
          when: steps.conf.changed
          run: echo reload
        """,
    )
    plan = _plan(pb, "--skip-tags", "config")
    (reload,) = plan["steps"]
    assert reload["status"] == "skip" and "step 'conf' does not run" in reload["summary"]
    assert _apply(pb, "--skip-tags", "config") == {"reload": "skipped"}
    plan = _plan(pb, "--tags", "config")
    by = {s["instance"]: s for s in plan["steps"]}
    assert by["reload"]["status"] == "skip" and "it reads step 'conf'" in by["reload"]["summary"]
    _agree(plan, _apply(pb, "--tags", "config"))


def test_unless_after_a_change_is_unknown_with_a_reason(tmp_path: Path) -> None:
    pb = _playbook(
        tmp_path,
        """
        - id: conf
          file: {path: "{{ d }}/c", content: "x\\n"}
        - id: check
          run: {command: "echo fix", unless: "grep -q x {{ d }}/c"}
        """,
    )
    plan = _plan(pb)
    check = next(s for s in plan["steps"] if s["instance"] == "check")
    assert check["status"] == "unknown" and "'unless' check runs after step 'conf'" in check["reason"]
    _agree(plan, _apply(pb))
    second = {s["instance"]: s["status"] for s in _plan(pb)["steps"]}
    assert second == {"conf": "noop", "check": "noop"}
