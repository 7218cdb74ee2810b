"""Plans across steps on Android devices: later steps on the same setting, property,
package, app or file plan against what the earlier ones leave (runner/overlay.py).

Table tests run short step sequences through the real planner pieces (expand, StepDecider,
an Overlay) with probe answers written as the device prints them; an end-to-end test plans,
applies and re-plans a multi-step playbook on a fake device behind the real adb server and
checks, per step, that apply did what the plan said.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runner import config
from runner.errors import Diagnostic
from runner.model import ProbeResult, StepPlan
from runner.overlay import Overlay
from runner.planner import StepDecider, expand_host
from runner.session import Session
from tests.fixtures_adb import FakeDevice, make_fake_apk


def R(text: str = "", rc: int = 0) -> ProbeResult:
    return ProbeResult(rc, text.encode())


INVENTORY = """\
opsrun: 1
hosts:
  tab:
    transport: adb
    serial: "127.0.0.1:5555"
"""


def plan_sequence(
    tmp_path: Path, steps: str, facts: dict[str, dict[str, ProbeResult]], files: dict[str, bytes] | None = None
) -> tuple[dict[str, StepPlan], Overlay]:
    """Plan `steps` on one device as `opsrun plan` does, with these probe answers
    (instance key -> probe key -> answer) instead of a device's."""
    for name, data in (files or {}).items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "inventory.yaml").write_text(INVENTORY)
    (tmp_path / "site.yaml").write_text("opsrun: 1\nname: t\nhosts: tab\nsteps:\n" + textwrap.indent(
        textwrap.dedent(steps), "  "))
    inv = config.load_inventory(str(tmp_path / "inventory.yaml"))
    session = Session(inv, config.load_playbook(str(tmp_path / "site.yaml"), inv))
    errors: list[Diagnostic] = []
    instances = expand_host(session, "tab", list(session.playbook.steps), {}, errors)
    assert not errors, errors
    overlay = Overlay()
    decider = StepDecider(session, "tab", overlay)
    out = {}
    for inst in instances:
        asked = {p.key for p in inst.kind.probes(inst.params, inst.ctx)} if inst.params is not None else set()
        given = facts.get(inst.key, {})
        assert set(given) <= asked, (inst.key, set(given) - asked)
        out[inst.key] = decider.decide(inst, {k: given.get(k, R("", 1)) for k in asked})
    return out, overlay


def said(sp: StepPlan) -> tuple[str, str, list[str]]:
    return sp.change.status, sp.change.summary, [a.display() for a in sp.change.actions]


# ---------------------------------------------------------------- settings and props

SETTING_TWICE = """\
- id: a
  adb.setting: {namespace: global, key: stay_on, value: 3}
- id: b
  adb.setting: {namespace: global, key: stay_on, value: 7}
- id: c
  adb.setting: {namespace: global, key: stay_on, state: absent}
- id: d
  adb.setting: {namespace: global, key: other, value: 1}
"""


def test_setting_later_steps_see_the_earlier_value(tmp_path: Path) -> None:
    plans, overlay = plan_sequence(tmp_path, SETTING_TWICE, {
        "a": {"value": R("null\n")}, "b": {"value": R("null\n")}, "c": {"value": R("null\n")},
        "d": {"value": R("1\n")},
    })
    assert said(plans["a"]) == ("create", "set global stay_on = '3' (not set now)", ["settings put global stay_on 3"])
    assert said(plans["b"]) == ("update", "set global stay_on: '3' -> '7'", ["settings put global stay_on 7"])
    assert plans["b"].change.diff == "-3\n+7\n"
    assert said(plans["c"]) == ("delete", "delete setting global stay_on (now '7')",
                                ["settings delete global stay_on"])
    assert plans["d"].change.status == "noop"  # another key: as on the device
    # three steps fight over one setting: named once each pair
    assert [(c.first, c.second) for c in overlay.conflicts] == [("a", "b"), ("b", "c")]


def test_setting_same_value_twice_is_noop_and_no_conflict(tmp_path: Path) -> None:
    plans, overlay = plan_sequence(tmp_path, """\
        - id: a
          adb.setting: {namespace: secure, key: k, value: true}
        - id: b
          adb.setting: {namespace: secure, key: k, value: 1}
        """, {"a": {"value": R("0\n")}, "b": {"value": R("0\n")}})
    assert plans["a"].change.status == "update"
    assert said(plans["b"])[:2] == ("noop", "setting secure k is '1'")
    assert overlay.conflicts == []


def test_prop_set_then_checked_then_waited_for(tmp_path: Path) -> None:
    plans, _ = plan_sequence(tmp_path, """\
        - id: set
          adb.prop: {name: persist.kiosk, value: "on", assert: false}
        - id: check
          adb.prop: {name: persist.kiosk, value: "on"}
        - id: wait
          adb.wait: {for: property, property: persist.kiosk, value: "on"}
        - id: read
          adb.prop: persist.kiosk
        """, {n: ({"value": R("\n")} if n != "wait" else {"now": R("", 1)}) for n in ("set", "check", "wait", "read")})
    assert said(plans["set"]) == ("create", "setprop persist.kiosk: '' -> 'on'", ["setprop persist.kiosk on"])
    assert said(plans["check"])[:2] == ("noop", "persist.kiosk is 'on'")  # not "will fail"
    assert said(plans["wait"])[:2] == ("noop", "persist.kiosk = 'on': already so")
    assert plans["read"].change.data["value"] == "on"


# ---------------------------------------------------------------- packages and apps

APK_STEPS = """\
- id: install
  adb.install: app.apk
- id: again
  adb.install: app.apk
- id: start
  adb.app: {package: com.example.kiosk, foreground: true}
- id: remove
  adb.uninstall: com.example.kiosk
- id: start_again
  adb.app: com.example.kiosk
- id: remove_again
  adb.uninstall: com.example.kiosk
"""


def _apk(tmp_path: Path, version: int) -> bytes:
    make_fake_apk(tmp_path / "app.apk", "com.example.kiosk", version)
    return (tmp_path / "app.apk").read_bytes()


def test_install_start_uninstall_of_one_package(tmp_path: Path) -> None:
    _apk(tmp_path, 12)
    other = R("package:com.example.kioskhelper versionCode:3\n")  # pm list matches by substring
    not_running = {"pid": R("", 1), "path": R("", 1), "front": R("  mResumedActivity: x u0 com.launcher/.Home\n")}
    plans, overlay = plan_sequence(tmp_path, APK_STEPS, {
        "install": {"list": other, "dumpsys": R("", 1)},
        "again": {"list": other, "dumpsys": R("", 1)},
        "start": not_running,
        "remove": {"list": R("package:com.example.kioskhelper\n")},
        "start_again": {"pid": R("", 1), "path": R("", 1)},
        "remove_again": {"list": R("package:com.example.kioskhelper\n")},
    })
    assert plans["install"].change.status == "create"
    assert said(plans["again"])[:2] == ("noop", "com.example.kiosk versionCode 12 is installed")
    start = plans["start"].change
    assert start.status == "create" and "(not installed yet)" not in start.summary, start.summary
    assert said(plans["remove"]) == ("delete", "uninstall com.example.kiosk", ["pm uninstall -- com.example.kiosk"])
    assert plans["start_again"].change.summary == "start com.example.kiosk (not installed yet)"
    assert said(plans["remove_again"])[:2] == ("noop", "com.example.kiosk is not installed")
    # installed, then removed again: the playbook cannot converge, and says so
    assert [(c.first, c.second, c.what) for c in overlay.conflicts] == [
        ("again", "remove", "adb.pkg com.example.kiosk"), ("start", "remove", "adb.app com.example.kiosk")]


def test_upgrade_then_upgrade_sees_the_planned_version(tmp_path: Path) -> None:
    _apk(tmp_path, 12)
    (tmp_path / "old.apk").write_bytes((tmp_path / "app.apk").read_bytes())
    make_fake_apk(tmp_path / "new.apk", "com.example.kiosk", 14)
    plans, overlay = plan_sequence(tmp_path, """\
        - id: one
          adb.install: old.apk
        - id: two
          adb.install: new.apk
        - id: back
          adb.install: old.apk
        - id: running
          adb.app: {package: com.example.kiosk, state: stopped}
        """, {
        "one": {"list": R("package:com.example.kiosk versionCode:9\n")},
        "two": {"list": R("package:com.example.kiosk versionCode:9\n")},
        "back": {"list": R("package:com.example.kiosk versionCode:9\n")},
        "running": {"pid": R("4242\n"), "path": R("package:/data/app/x/base.apk\n")},
    })
    assert plans["one"].change.summary == "upgrade com.example.kiosk versionCode 9 -> 12"
    assert plans["two"].change.summary == "upgrade com.example.kiosk versionCode 12 -> 14"
    back = plans["back"].change
    assert back.status == "blocked" and "versionCode 14 is installed" in back.reason
    # the reinstall ended the process the device shows running now
    assert said(plans["running"])[:2] == ("noop", "com.example.kiosk is not running")
    assert [(c.first, c.second) for c in overlay.conflicts] == [("one", "two")]


def test_old_android_dumpsys_answer_is_replaced_too(tmp_path: Path) -> None:
    _apk(tmp_path, 12)
    old = {"list": R(""), "dumpsys": R("", 1)}  # Android < 9: no versionCode in pm list
    plans, _ = plan_sequence(tmp_path, """\
        - id: one
          adb.install: app.apk
        - id: two
          adb.install: {src: app.apk}
        """, {"one": old, "two": old})
    assert plans["one"].change.status == "create"
    assert plans["two"].change.status == "noop"


def test_app_front_after_other_app_and_after_input_is_unknown(tmp_path: Path) -> None:
    plans, _ = plan_sequence(tmp_path, """\
        - id: a
          adb.app: {package: com.a, foreground: true}
        - id: b
          adb.app: {package: com.b, foreground: true}
        - id: a_again
          adb.app: {package: com.a, foreground: true}
        - id: stop_b
          adb.app: {package: com.b, state: stopped}
        - id: tap
          adb.input: {keyevent: HOME}
        - id: b_front
          adb.app: {package: com.b, foreground: true}
        """, {
        "a": {"pid": R("", 1), "path": R("package:/a\n"), "front": R("mResumedActivity: u0 com.l/.H\n")},
        "b": {"pid": R("", 1), "path": R("package:/b\n"), "front": R("mResumedActivity: u0 com.l/.H\n")},
        "a_again": {"pid": R("", 1), "path": R("package:/a\n"), "front": R("mResumedActivity: u0 com.l/.H\n")},
        "stop_b": {"pid": R("", 1), "path": R("package:/b\n")},
        "b_front": {"pid": R("", 1), "path": R("package:/b\n"), "front": R("x\n")},
    })
    assert plans["a"].change.status == "create"
    assert plans["b"].change.status == "create"
    a_again = plans["a_again"].change
    assert a_again.status == "update" and a_again.summary == "bring com.a to the foreground", a_again.summary
    assert said(plans["stop_b"]) == ("update", "stop com.b (pid planned)", ["am force-stop -- com.b"])
    unknown = plans["b_front"].change
    assert unknown.status == "unknown"
    assert "adb.input" in unknown.reason and "foreground" in unknown.reason, unknown.reason


# ---------------------------------------------------------------- files

FILE_ABSENT = R("absent\n")


def test_push_twice_and_shell_removes(tmp_path: Path) -> None:
    plans, overlay = plan_sequence(tmp_path, """\
        - id: one
          adb.push: {src: a.json, dest: /sdcard/k/config.json}
        - id: same
          adb.push: {src: a.json, dest: /sdcard/k/config.json, mode: "0600"}
        - id: other
          adb.push: {src: b.json, dest: /sdcard/k/config.json}
        - id: wipe
          adb.shell: {command: "rm -rf /sdcard/k", removes: /sdcard/k}
        - id: three
          adb.push: {src: a.json, dest: /sdcard/k/config.json}
        - id: made
          adb.shell: {command: "echo hi > /sdcard/k/x", creates: /sdcard/k/x}
        - id: over
          adb.push: {src: a.json, dest: /sdcard/k/x}
        """, {
        "one": {"file": FILE_ABSENT}, "same": {"file": FILE_ABSENT}, "other": {"file": FILE_ABSENT},
        "wipe": {"removes": R("", 0)}, "three": {"file": FILE_ABSENT}, "made": {"creates": R("", 1)},
        "over": {"file": FILE_ABSENT},
    }, files={"a.json": b"{}\n", "b.json": b'{"b": 1}\n'})
    assert plans["one"].change.status == "create"
    assert said(plans["same"]) == ("update", "chmod /sdcard/k/config.json: 0644 -> 0600",
                                   ["chmod 0600 /sdcard/k/config.json"])
    other = plans["other"].change
    assert other.status == "update" and "size 3 -> 9 bytes" in other.summary, other.summary
    assert plans["wipe"].change.status == "run"
    assert plans["three"].change.status == "create"  # the folder was removed before it
    over = plans["over"].change
    assert over.status == "unknown" and "made by step 'made'" in over.reason, over.reason
    # a push over another's content, and a folder removed with what a step pushed into it
    assert [(c.first, c.second) for c in overlay.conflicts] == [("same", "other"), ("other", "wipe")]


# ---------------------------------------------------------------- end to end

E2E = """\
    opsrun: 1
    name: effects
    hosts: tablets
    steps:
      - id: stay_low
        adb.setting: {namespace: global, key: opsrun_effects, value: 1}
      - id: stay_high
        adb.setting: {namespace: global, key: opsrun_effects, value: 1}
      - id: apk
        adb.install: app.apk
      - id: apk_again
        adb.install: {src: app.apk, grant_permissions: true}
      - id: start
        adb.app: {package: com.example.kiosk, activity: .MainActivity, foreground: true}
      - id: still_running
        adb.app: com.example.kiosk
      - id: config
        adb.push: {src: config.json, dest: /sdcard/Download/kiosk/config.json}
      - id: config_mode
        adb.push: {src: config.json, dest: /sdcard/Download/kiosk/config.json, mode: "0600"}
      - id: pull_back
        adb.pull: {src: /sdcard/Download/kiosk/config.json, dest: pulled.json}
      - id: setprop
        adb.prop: {name: persist.opsrun.effects, value: "yes", assert: false}
      - id: checkprop
        adb.prop: {name: persist.opsrun.effects, value: "yes"}
    """


def _opsrun(*args: str, cwd: Path) -> Any:
    from tests.test_adb import opsrun

    return opsrun(*args, cwd=cwd)


def check_apply_did_what_plan_said(plan_doc: dict[str, Any], events: list[dict[str, Any]]) -> None:
    """Per (host, instance): plan `=` -> ok/skipped, `+ ~ - >` -> changed (ok for read-only
    runs), `?` carries a reason; apply never journals that it decided otherwise."""
    ends = {(e["host"], e["instance"]): e for e in events if e.get("type") == "step_end"}
    diverged = [e for e in events if e.get("type") == "plan_diverged"]
    assert not diverged, diverged
    for sp in plan_doc["steps"]:
        key = (sp["host"], sp["instance"])
        end = ends.get(key)
        assert end is not None, f"no result for {key}"
        marker = sp["marker"]
        if marker == "=":
            assert end["status"] in ("ok", "skipped"), (key, sp["summary"], end)
        elif marker in "+~-":
            assert end["status"] == "changed", (key, sp["summary"], end)
        elif marker == ">":
            assert end["status"] in ("changed", "ok"), (key, sp["summary"], end)
        elif marker == "?":
            assert sp["reason"], (key, sp)
        else:
            raise AssertionError(f"{key}: planned {marker} {sp['summary']}")


@pytest.mark.peer
def test_multi_step_playbook_on_one_device_plans_what_apply_does(
    fake_android: Callable[..., FakeDevice], tmp_path: Path
) -> None:
    from tests.test_adb import device_state, events_of, recap_of, write, write_inventory

    dev = fake_android("tab1")
    write_inventory(tmp_path / "inventory.yaml", {"tab1": dev})
    write(tmp_path / "site.yaml", E2E)
    make_fake_apk(tmp_path / "app.apk", "com.example.kiosk", 12)
    (tmp_path / "config.json").write_text('{"url": "https://example.com"}\n')

    p = _opsrun("plan", "site.yaml", "--json", cwd=tmp_path)
    assert p.returncode in (0, 2), p.stdout + p.stderr
    plan_doc = json.loads(p.stdout)
    by = {sp["instance"]: sp for sp in plan_doc["steps"]}
    assert by["stay_low"]["marker"] == "+" and by["stay_high"]["marker"] == "="
    assert by["apk"]["marker"] == "+" and by["apk_again"]["marker"] == "="
    assert by["start"]["marker"] == "+" and "(not installed yet)" not in by["start"]["summary"]
    assert by["still_running"]["marker"] == "="
    assert by["config"]["marker"] == "+" and by["config_mode"]["marker"] == "~"
    assert by["config_mode"]["actions"][0]["display"] == "chmod 0600 /sdcard/Download/kiosk/config.json"
    assert by["pull_back"]["marker"] == "+"
    assert by["setprop"]["marker"] == "+" and by["checkprop"]["marker"] == "="
    assert plan_doc["warnings"] == []

    first = _opsrun("apply", "site.yaml", "--yes", "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr
    check_apply_did_what_plan_said(plan_doc, events_of(first.stdout))
    assert recap_of(first.stdout)["totals"]["failed"] == 0
    assert device_state(dev, "settings.json")["global"]["opsrun_effects"] == "1"
    assert (tmp_path / "pulled.json").read_text() == '{"url": "https://example.com"}\n'

    again = _opsrun("plan", "site.yaml", "--json", "--detailed-exitcode", cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr
    assert all(sp["marker"] == "=" for sp in json.loads(again.stdout)["steps"]), again.stdout
