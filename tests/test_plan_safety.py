"""Safety at plan time: file destinations a rule forbids are `!` in the plan (not only at
apply), and built-in rules lifted by `allow:` are said in the plan."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path


def _plan(tmp_path: Path, body: str) -> dict[str, object]:
    pb = tmp_path / "pb.yaml"
    pb.write_text("opsrun: 1\nname: t\nhosts: local\n" + textwrap.dedent(body))
    (tmp_path / "src.txt").write_text("x\n")
    res = subprocess.run([sys.executable, "-m", "runner", "plan", str(pb), "--json"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout))


def test_forbidden_destinations_are_blocked_in_the_plan(tmp_path: Path) -> None:
    plan = _plan(tmp_path, f"""
        steps:
          - id: disk
            copy: {{src: src.txt, dest: /dev/sda}}
          - id: sysrq
            file: {{path: /proc/sysrq-trigger, content: "b"}}
          - id: kernel
            line: {{path: /proc/sys/kernel/hostname, line: x}}
          - id: etc
            file: {{path: /etc, state: absent}}
          - id: fine
            file: {{path: "{tmp_path}/ok", content: "x"}}
        """)
    by = {s["instance"]: s for s in plan["steps"]}  # type: ignore[union-attr]
    assert {k: v["status"] for k, v in by.items()} == {
        "disk": "blocked", "sysrq": "blocked", "kernel": "blocked", "etc": "blocked", "fine": "create"}
    assert "kernel-file" in by["kernel"]["reason"] and "rm-root" in by["etc"]["reason"]


def test_lifted_rules_are_said_in_the_plan(tmp_path: Path) -> None:
    plan = _plan(tmp_path, """
        allow: [power]
        steps:
          - id: hi
            run: {command: "echo hi", changed_when: "false"}
        """)
    assert any("allow 'power' lifts built-in rule 'power'" in w for w in plan["warnings"])  # type: ignore[union-attr]
    assert not _plan(tmp_path, "steps:\n  - id: hi\n    run: 'echo hi'\n")["warnings"]
