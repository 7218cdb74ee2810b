"""The CLI end to end against a launched fakepve process: the shipped proxmox-lab playbook
plans, applies and converges; API calls are shown with the token masked; faults are clear."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.fixtures_pve import PveProcess
from tests.oracle import Oracle

ROOT = Path(__file__).resolve().parent.parent
LAB = str(ROOT / "playbooks" / "proxmox-lab.yaml")


def opsrun(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=cwd, text=True, capture_output=True,
                          env={**os.environ, **env}, timeout=120, stdin=subprocess.DEVNULL)


def inventory(tmp_path: Path, settings: dict[str, Any]) -> None:
    doc = {"opsrun": 1, "hosts": {"pve-lab": settings}}
    (tmp_path / "inventory.yaml").write_text(yaml.safe_dump(doc))


def test_lab_playbook_plans_applies_and_converges(pve_process: PveProcess, tmp_path: Path) -> None:
    inventory(tmp_path, pve_process.settings())
    env = pve_process.env()
    plan = opsrun("plan", LAB, "--detailed-exitcode", cwd=tmp_path, env=env)
    assert plan.returncode == 2, plan.stdout + plan.stderr
    assert "POST nodes/pve1/lxc" in plan.stdout or "POST /nodes/pve1/lxc" in plan.stdout, plan.stdout
    first = opsrun("apply", LAB, "--yes", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    second = opsrun("apply", LAB, "--yes", cwd=tmp_path, env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Apply: 0 changed" in second.stdout, second.stdout
    again = opsrun("plan", LAB, "--detailed-exitcode", cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stdout
    # the cluster report is shown as a table, and the token never appears anywhere
    assert "lab-web1" in first.stdout
    journal = "".join(p.read_text() for p in (tmp_path / ".opsrun").rglob("*.json*"))
    for text in (plan.stdout, first.stdout, first.stderr, journal):
        assert pve_process.token_secret not in text
    events = [json.loads(line) for run in (tmp_path / ".opsrun" / "runs").iterdir()
              for line in (run / "events.jsonl").read_text().splitlines()]
    assert any(e["type"] == "attempt" and str(e.get("command", "")).startswith("POST") for e in events)


def test_wrong_token_is_a_clear_error(pve_process: PveProcess, tmp_path: Path) -> None:
    inventory(tmp_path, pve_process.settings())
    env = {**pve_process.env(), "OPSRUN_TEST_PVE_TOKEN": "not-the-token"}
    p = opsrun("plan", LAB, cwd=tmp_path, env=env)
    assert p.returncode == 1
    assert "token" in p.stdout.lower() and "rejected" in p.stdout.lower(), p.stdout + p.stderr
    assert "Traceback" not in p.stderr and "not-the-token" not in p.stdout + p.stderr


def test_env_fallbacks_need_no_settings(pve_process: PveProcess, tmp_path: Path) -> None:
    inventory(tmp_path, {"transport": "proxmox", "ca_file": pve_process.cafile, "node": "pve1"})
    p = opsrun("plan", LAB, cwd=tmp_path, env=pve_process.env())
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Plan:" in p.stdout


def test_lab_playbook_holds_the_plan_apply_oracle(pve_process: PveProcess, tmp_path: Path) -> None:
    """Per container and snapshot, apply does what the plan said; the re-plan shows no change."""
    inventory(tmp_path, pve_process.settings())
    oracle = Oracle(tmp_path, env=pve_process.env())
    first = oracle.check(LAB, check_actions=True)
    assert {sp.status for sp in first.first.steps if sp.step == "containers"} == {"create"}
    oracle.check(LAB, check_actions=True)  # the second run holds it too
