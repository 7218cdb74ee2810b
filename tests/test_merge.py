"""`runs merge`: real journals of runs that applied disjoint hosts, merged into one recap;
overlapping hosts and different playbooks are refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runner import merge
from runner.errors import InvalidInput

INVENTORY = """\
opsrun: 1
hosts:
  a: {transport: local}
  b: {transport: local}
  c: {transport: local}
"""

PLAYBOOK = """\
opsrun: 1
name: m
hosts: all
steps:
  - id: mark
    file: {{path: "{d}/{{{{ inventory_hostname }}}}", content: "x\\n"}}
  - id: fail_on_c
    when: inventory_hostname == 'c'
    run: "exit 3"
"""


def _apply(work: Path, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    work.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, "-m", "runner", "apply", str(root / "pb.yaml"), "-i",
                           str(root / "inv.yaml"), "--yes", *args], cwd=work, capture_output=True,
                          text=True, timeout=60)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "inv.yaml").write_text(INVENTORY, encoding="utf-8")
    (tmp_path / "out").mkdir()
    (tmp_path / "pb.yaml").write_text(PLAYBOOK.format(d=tmp_path / "out"), encoding="utf-8")
    return tmp_path


def test_disjoint_runs_merge_into_one_recap(project: Path) -> None:
    assert _apply(project / "w1", project, "--limit", "a,b").returncode == 0
    assert _apply(project / "w2", project, "--limit", "c").returncode != 0
    runs = [merge.find_run(project / "w1"), merge.find_run(project / "w2" / ".opsrun")]
    doc = merge.merge(runs)
    assert sorted(doc["hosts"]) == ["a", "b", "c"]
    assert doc["hosts"]["a"]["counts"]["changed"] == 1 and doc["hosts"]["c"]["counts"]["failed"] == 1
    assert doc["totals"]["failed"] == 1 and doc["ok"] is False
    text = merge.merged_text(doc)
    assert "| c" in text and "NOT OK" in text
    json.dumps(doc)  # a document for machines


def test_overlapping_runs_are_refused(project: Path) -> None:
    assert _apply(project / "w1", project, "--limit", "a").returncode == 0
    assert _apply(project / "w2", project, "--limit", "a,b").returncode == 0
    with pytest.raises(InvalidInput, match="host a was applied by two runs"):
        merge.merge([merge.find_run(project / "w1"), merge.find_run(project / "w2")])


def test_not_a_run_folder(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no opsrun run here"):
        merge.find_run(tmp_path)
