"""Output formats come from one table (runner/formats.py): the CLI's choices, its errors and
every rendering go through it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runner import formats, report_runs
from runner.errors import InvalidInput
from runner.journal import RunInfo

ROOT = Path(__file__).resolve().parent.parent
EVENTS = [
    {"seq": 1, "ts": "2026-12-03T10:00:00+00:00", "type": "run_start", "playbook": "p.yaml", "hosts": ["h1"]},
    {"seq": 2, "ts": "2026-12-03T10:00:01+00:00", "type": "step_end", "host": "h1", "step": "s", "instance": "s",
     "status": "changed", "rc": 0, "attempts": 1, "duration": 0.1, "message": "done"},
    {"seq": 3, "ts": "2026-12-03T10:00:02+00:00", "type": "run_end", "outcome": "ok", "totals": {"changed": 1}},
]


def test_the_choices_of_each_document_come_from_the_table() -> None:
    assert formats.names("plan") == ("text", "markdown", "json")
    assert formats.names("runs") == formats.names("run") == formats.names("recap") == ("text", "json")
    assert formats.choices_text("plan") == "text | markdown | json"
    with pytest.raises(InvalidInput, match=r"--format 'xml': use text, markdown or json"):
        formats.check("xml", "plan")
    with pytest.raises(InvalidInput, match=r"--format 'markdown': use text or json"):
        formats.runs([], "markdown")


def test_each_format_renders_through_the_report() -> None:
    run = RunInfo("r1", Path("."), EVENTS)
    assert formats.run(run, "text") == report_runs.run_timeline(run)
    assert formats.runs([run], "text") == report_runs.runs_table([run])
    shown = json.loads(formats.run(run, "json"))
    assert shown["run_id"] == "r1" and shown["outcome"] == "ok" and shown["hosts"]["h1"]["changed"] == 1
    listed = json.loads(formats.runs([run], "json"))
    assert listed == [{"run_id": "r1", "started": EVENTS[0]["ts"], "playbook": "p.yaml", "outcome": "ok"}]


def test_the_plan_option_help_shows_the_table() -> None:
    p = subprocess.run([sys.executable, "-m", "runner", "plan", "--help"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stderr
    assert formats.choices_text("plan") in p.stdout
