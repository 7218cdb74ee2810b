"""End-to-end on `local`: the shipped hello playbook plans, applies, and is idempotent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def opsrun(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=cwd, text=True,
                          capture_output=True, env={**os.environ, **(env or {})}, timeout=60)


def test_hello_plan_apply_idempotent(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    pb = str(ROOT / "playbooks" / "hello.yaml")
    inv = str(ROOT / "inventory.yaml")
    args = ("-i", inv, "--var", f"demo_dir={demo}")
    first = opsrun("plan", pb, *args, "--detailed-exitcode", cwd=tmp_path)
    assert first.returncode == 2, first.stdout + first.stderr
    applied = opsrun("apply", pb, *args, "--yes", cwd=tmp_path)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert (demo / "motd").read_text().startswith("Hello from opsrun, local!")
    again = opsrun("apply", pb, *args, "--yes", cwd=tmp_path)
    assert again.returncode == 0
    assert "Apply: 0 changed" in again.stdout, again.stdout
    after = opsrun("plan", pb, *args, "--detailed-exitcode", cwd=tmp_path)
    assert after.returncode == 0, after.stdout
