"""JUnit and GitHub annotations from real plan and apply documents, read back with a JUnit
parser: one test case per (host, step instance), failures where apply failed or plan blocked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from junitparser import Error, Failure, JUnitXml, Skipped

from runner import ci_report
from runner.errors import Diagnostic

PLAYBOOK = """\
opsrun: 1
name: ci
hosts: local
steps:
  - id: dir
    file: {{path: {d}/x, state: directory}}
  - id: items
    loop: [a, b]
    file: {{path: "{d}/x/{{{{ item }}}}", content: "hi\\n"}}
  - id: bad
    run: "echo 'no <good> & \\x01' >&2; exit 3"
  - id: after
    run: "true"
  - id: skipped
    when: false
    run: "true"
"""


def _opsrun(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60)


def _cases(xml: str, path: Path) -> dict[tuple[str, str], object]:
    path.write_text(xml, encoding="utf-8")
    doc = JUnitXml.fromfile(str(path))
    return {(case.classname, case.name): case for suite in doc for case in suite}


def test_plan_and_apply_junit_name_every_host_step(tmp_path: Path) -> None:
    pb = tmp_path / "ci.yaml"
    pb.write_text(PLAYBOOK.format(d=tmp_path), encoding="utf-8")
    plan = json.loads(_opsrun("plan", str(pb), "--json", cwd=tmp_path).stdout)
    cases = _cases(ci_report.junit_plan(plan), tmp_path / "plan.xml")
    assert list(cases) == [("plan.local", i) for i in ("dir", "items[0]", "items[1]", "bad", "after", "skipped")]
    assert all(not case.result for case in cases.values())  # nothing blocked

    lines = _opsrun("apply", str(pb), "--yes", "--json", cwd=tmp_path).stdout.splitlines()
    recap = json.loads(lines[-1])
    planned = [(s["host"], s["instance"]) for s in plan["steps"]]
    cases = _cases(ci_report.junit_apply(recap, planned), tmp_path / "apply.xml")
    results = {name: [type(r) for r in case.result] for (_, name), case in cases.items()}
    assert results["dir"] == [] and results["items[1]"] == []
    assert results["bad"] == [Failure]
    assert results["after"] == [Skipped] and results["skipped"] == [Skipped]  # the host stopped at `bad`
    assert "stopped" in cases[("apply.local", "after")].result[0].message
    doc = JUnitXml.fromfile(str(tmp_path / "apply.xml"))
    assert doc.failures == 1 and doc.tests == len(cases)


def test_blocked_plan_step_fails_and_unreachable_host_is_an_error(tmp_path: Path) -> None:
    plan = {"hosts": ["a", "b"], "unreachable": {"b": "connection refused"},
            "steps": [{"host": "a", "instance": "wipe", "marker": "!", "summary": "blocked by rule power",
                       "reason": "reboot", "actions": []}]}
    cases = _cases(ci_report.junit_plan(plan), tmp_path / "p.xml")
    assert [type(r) for r in cases[("plan.a", "wipe")].result] == [Failure]
    assert [type(r) for r in cases[("plan.b", "connect")].result] == [Error]


def test_validate_junit_and_annotations_escape_what_they_carry(tmp_path: Path) -> None:
    diags = [Diagnostic("pb,1.yaml", 3, 5, "unknown key 'x'\nsecond: 100%", hint="did you mean 'y'?"),
             Diagnostic("pb,1.yaml", 9, 0, "two steps fight", severity="warning")]
    cases = _cases(ci_report.junit_validate([("pb,1.yaml", diags), ("ok.yaml", [])]), tmp_path / "v.xml")
    assert [type(r) for r in cases[("validate", "pb,1.yaml")].result] == [Failure]
    assert cases[("validate", "ok.yaml")].result == []
    lines = ci_report.github_annotations(diags)
    assert lines[0] == ("::error file=pb%2C1.yaml,line=3,col=5,title=opsrun error::"
                        "unknown key 'x'%0Asecond: 100%25 (hint: did you mean 'y'?)")
    assert lines[1].startswith("::warning file=pb%2C1.yaml,line=9,title=opsrun warning::")


def test_a_command_that_could_not_run_still_writes_a_document(tmp_path: Path) -> None:
    cases = _cases(ci_report.junit_error("plan", "the inventory is not valid"), tmp_path / "e.xml")
    assert [type(r) for r in cases[("plan", "plan")].result] == [Error]
