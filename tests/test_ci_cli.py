"""CI outputs through the real CLI on `local`: --junit for validate, plan and apply (read back
with junitparser), GitHub annotations under GITHUB_ACTIONS, error documents on stdout when a
machine format cannot have its document, the resume hint that works without a terminal, and
`validate --skip-other` for pre-commit."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from junitparser import Error, Failure, JUnitXml, Skipped

ROOT = Path(__file__).resolve().parent.parent


def opsrun(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("OPSRUN_STATE_DIR", "GITHUB_ACTIONS")}
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env={**base, **(env or {})}, stdin=subprocess.DEVNULL)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def cases(path: Path) -> dict[tuple[str, str], list[type]]:
    doc = JUnitXml.fromfile(str(path))
    return {(c.classname, c.name): [type(r) for r in c.result] for suite in doc for c in suite}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write(tmp_path / "inventory.yaml", """\
        opsrun: 1
        hosts:
          a: {transport: local}
          b: {transport: local}
        """)
    write(tmp_path / "site.yaml", f"""\
        opsrun: 1
        name: site
        hosts: all
        steps:
          - id: dir
            file: {{path: "{tmp_path}/out/{{{{ inventory_hostname }}}}", state: directory}}
          - id: fail_on_b
            when: inventory_hostname == 'b'
            run: "exit 3"
          - id: after
            run: "true"
        """)
    write(tmp_path / "bad.yaml", """\
        opsrun: 1
        name: bad
        hosts: all
        steps:
          - id: x
            run: "echo {{ nope }}"
        """)
    return tmp_path


def test_validate_junit_and_github_annotations(project: Path) -> None:
    write(project / "typo.yaml", """\
        opsrun: 1
        name: typo
        hosts: all
        steps:
          - id: x
            rn: "true"
        """)
    p = opsrun("validate", "site.yaml", "typo.yaml", "--junit", "reports/v.xml", cwd=project,
               env={"GITHUB_ACTIONS": "true"})
    assert p.returncode == 4
    got = cases(project / "reports" / "v.xml")
    assert got == {("validate", "site.yaml"): [], ("validate", "typo.yaml"): [Failure]}
    annotations = [line for line in p.stdout.splitlines() if line.startswith("::")]
    assert annotations and annotations[0].startswith("::error file=typo.yaml,line=6,col="), p.stdout
    assert "typo.yaml:6" in p.stderr  # the human text stays
    plain = opsrun("validate", "site.yaml", "typo.yaml", cwd=project)
    assert "::error" not in plain.stdout + plain.stderr  # only under GitHub Actions
    j = opsrun("validate", "typo.yaml", "--json", cwd=project, env={"GITHUB_ACTIONS": "true"})
    doc = json.loads(j.stdout)  # stdout stays one document; the annotations go to stderr
    assert doc["valid"] is False and doc["errors"][0]["line"] == 6
    assert "::error file=typo.yaml,line=6" in j.stderr


def test_validate_bad_inventory_and_bad_var_are_documents(project: Path) -> None:
    write(project / "broken.yaml", "opsrun: 1\nhosts: [\n")
    p = opsrun("validate", "site.yaml", "-i", "broken.yaml", "-e", "novalue", "--json", "--junit", "v.xml",
               cwd=project)
    assert p.returncode == 4
    doc = json.loads(p.stdout)
    assert doc["valid"] is False and {e["file"] for e in doc["errors"]} >= {"broken.yaml"}
    assert any("novalue" in e["message"] or "NAME=VALUE" in e["message"] + e["hint"] for e in doc["errors"])
    got = cases(project / "v.xml")
    assert got[("validate", "broken.yaml")] == [Failure] and got[("validate", "--var")] == [Failure]
    gh = opsrun("validate", "site.yaml", "missing.yaml", "-e", "novalue", cwd=project, env={"GITHUB_ACTIONS": "true"})
    lines = gh.stdout.splitlines()  # no file to point at: annotations of the run, saying where
    assert "::error title=opsrun error::missing.yaml: no such file" in lines
    assert any(line.startswith("::error title=opsrun error::--var: ") for line in lines), lines


def test_plan_junit_one_case_per_host_and_step(project: Path) -> None:
    p = opsrun("plan", "site.yaml", "--junit", "plan.xml", cwd=project)
    assert p.returncode == 0, p.stderr
    got = cases(project / "plan.xml")
    assert sorted(got) == sorted((f"plan.{h}", s) for h in "ab" for s in ("dir", "fail_on_b", "after"))
    assert all(r == [] for r in got.values())


@pytest.mark.parametrize("broken", ["playbook", "inventory"])
def test_plan_that_cannot_be_made_still_prints_documents(project: Path, broken: str) -> None:
    args = ["bad.yaml"] if broken == "playbook" else ["site.yaml", "-i", "missing.yaml"]
    env = {"GITHUB_ACTIONS": "true"}
    j = opsrun("plan", *args, "--json", "--junit", "plan.xml", cwd=project, env=env)
    assert j.returncode == 4, j.stderr
    doc = json.loads(j.stdout)
    assert doc["ok"] is False and doc["command"] == "plan" and doc["error"]["exit_code"] == 4
    assert cases(project / "plan.xml") == {("plan", "plan"): [Error]}
    md = opsrun("plan", *args, "--format", "markdown", cwd=project)
    assert md.returncode == 4
    assert md.stdout.startswith("### opsrun plan failed")
    assert "Nothing was planned (exit code 4)." in md.stdout
    if broken == "playbook":
        d = doc["error"]["diagnostics"][0]
        assert d["file"] == "bad.yaml" and d["line"] == 5 and "nope" in d["message"]
        assert "- `bad.yaml:5` step 'x' on host 'a'" in md.stdout
        assert "::error file=bad.yaml,line=5" in j.stderr  # plan's located errors are annotated too
    else:
        assert "missing.yaml" in doc["error"]["message"] + json.dumps(doc["error"]["diagnostics"])
    text = opsrun("plan", *args, cwd=project)
    assert text.returncode == 4 and text.stdout == "" and "error" in text.stderr


def test_apply_junit_failed_and_never_run_steps(project: Path) -> None:
    p = opsrun("apply", "site.yaml", "--yes", "--junit", "apply.xml", cwd=project)
    assert p.returncode == 1
    got = cases(project / "apply.xml")
    assert got[("apply.a", "dir")] == [] and got[("apply.a", "after")] == []
    assert got[("apply.a", "fail_on_b")] == [Skipped]  # its when is false on a
    assert got[("apply.b", "fail_on_b")] == [Failure]
    assert got[("apply.b", "after")] == [Skipped]  # planned, never run: b stopped
    doc = JUnitXml.fromfile(str(project / "apply.xml"))
    assert doc.tests == 6 and doc.failures == 1


def test_apply_that_cannot_run_writes_an_error_document(project: Path) -> None:
    p = opsrun("apply", "bad.yaml", "--yes", "--json", "--junit", "apply.xml", cwd=project)
    assert p.returncode == 4
    last = json.loads(p.stdout.splitlines()[-1])
    assert last["type"] == "error" and last["ok"] is False and last["error"]["diagnostics"][0]["line"] == 5
    assert cases(project / "apply.xml") == {("apply", "apply"): [Error]}
    refused = opsrun("apply", "site.yaml", "--json", cwd=project)  # no terminal, no --yes
    assert refused.returncode == 1
    assert json.loads(refused.stdout.splitlines()[-1])["error"]["message"].startswith("not applying")


def test_resume_hint_without_a_terminal_is_the_command_that_works(tmp_path: Path) -> None:
    marker = tmp_path / "ready"
    write(tmp_path / "p.yaml", f"""\
        opsrun: 1
        name: esc
        hosts: local
        policy:
          retry: {{attempts: 1}}
          escalate: [human]
        steps:
          - id: first
            run: echo ran >> {tmp_path}/first.log
          - id: needs_marker
            run: test -f {marker}
        """)
    p = opsrun("apply", "p.yaml", "--yes", cwd=tmp_path)
    assert p.returncode == 3, p.stdout + p.stderr
    hint = re.search(r"then: (opsrun apply --resume \S+ --yes)$", p.stderr, re.MULTILINE)
    assert hint, p.stderr
    run_id = shlex.split(hint.group(1))[3]
    report = (tmp_path / ".opsrun" / "runs" / run_id / "escalation.md").read_text()
    assert f"opsrun apply --resume {run_id} --yes" in report
    marker.write_text("ok")
    asked = opsrun("apply", "--resume", run_id, cwd=tmp_path)  # as a person might type it in CI
    assert asked.returncode == 1
    assert f"opsrun apply --resume {run_id} --yes" in asked.stderr
    r = opsrun(*shlex.split(hint.group(1))[1:], cwd=tmp_path)  # the hint, exactly
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "first.log").read_text() == "ran\n"


def test_skip_other_lets_pre_commit_pass_other_yaml(tmp_path: Path) -> None:
    write(tmp_path / "docker-compose.yml", "services:\n  web: {image: nginx}\n")
    write(tmp_path / "group_vars" / "all.yaml", "port: 8080\n")
    write(tmp_path / "chart.yaml", "{{ if .Values.x }}: [\n")  # not even YAML
    write(tmp_path / "pb.yaml", "opsrun: 1\nname: p\nhosts: local\nsteps:\n  - id: a\n    run: 'true'\n")
    files = ["docker-compose.yml", "group_vars/all.yaml", "chart.yaml", "pb.yaml"]
    strict = opsrun("validate", *files, cwd=tmp_path)
    assert strict.returncode == 4 and "not an opsrun playbook" in strict.stderr
    p = opsrun("validate", "--skip-other", *files, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "ok: 1 file valid, 3 other YAML skipped\n"
    j = json.loads(opsrun("validate", "--skip-other", "--json", *files, cwd=tmp_path).stdout)
    assert [f["file"] for f in j["files"] if f.get("skipped")] == files[:3]
    write(tmp_path / "pb.yaml", "opsrun: 1\nname: p\nhosts: local\nsteps:\n  - id: a\n    rn: 'true'\n")
    still = opsrun("validate", "--skip-other", *files, cwd=tmp_path)
    assert still.returncode == 4 and "pb.yaml:6" in still.stderr  # opsrun files are still checked


def test_the_pre_commit_hook_uses_skip_other() -> None:
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    hook = next(h for h in hooks if h["id"] == "opsrun-validate")
    assert hook["entry"] == "opsrun validate --skip-other"
    assert hook["files"] == r"\.(ya?ml)$"
