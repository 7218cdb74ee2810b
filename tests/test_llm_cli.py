"""The LLM rung of the escalation ladder through the CLI: gateway.yaml in the project points
at the fake server; the fix is validated, run (auto_fix) and the step retried; secrets stay out
of the prompt; without a reachable provider the rung is skipped with a clear note."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

CANARY = "tok-CANARY-93b1"


def write_gateway(tmp_path: Path, api_base: str) -> None:
    doc = {"opsrun": 1,
           "providers": {"fake": {"kind": "openai", "model": "fake-model", "api_base": api_base}},
           "routing": {"retries_per_provider": 0, "deadline_s": 20},
           "cache": {"enabled": False}}
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(doc))


def playbook(tmp_path: Path, flag: Path) -> None:
    (tmp_path / "p.yaml").write_text(f"""\
opsrun: 1
name: needs a flag
hosts: local
policy:
  retry: {{attempts: 1}}
  escalate: [llm]
  auto_fix: true
steps:
  - id: check
    run: cat {flag} || {{ echo "missing, token={{{{ secret('CANARY') }}}}" >&2; exit 1; }}
""")


def run(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OPSRUN_SECRET_CANARY": CANARY, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "NO_PROXY": "127.0.0.1,localhost"}
    return subprocess.run([sys.executable, "-m", "runner", "apply", "p.yaml", "--yes"], cwd=tmp_path, text=True,
                          capture_output=True, env=env, timeout=180, stdin=subprocess.DEVNULL)


def test_cli_applies_an_llm_fix_and_retries(fake_llm, tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    write_gateway(tmp_path, fake_llm.url + "/v1")
    playbook(tmp_path, flag)
    fix = {"diagnosis": "The flag file is missing.", "confidence": 0.8,
           "steps": [{"id": "make_flag", "file": {"path": str(flag), "content": "up\n"}}]}
    fake_llm.script("fake-model", json.dumps(fix))
    p = run(tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert flag.read_text() == "up\n"
    (req,) = fake_llm.chats()
    prompt = json.dumps(req.body["messages"])
    assert "missing, token=***" in prompt and CANARY not in prompt
    events = [json.loads(line) for run_dir in (tmp_path / ".opsrun" / "runs").iterdir()
              for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert [e["ok"] for e in events if e["type"] == "llm_fix_result"] == [True]
    assert CANARY not in json.dumps(events)


def test_cli_unsafe_fix_is_refused(fake_llm, tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    write_gateway(tmp_path, fake_llm.url + "/v1")
    playbook(tmp_path, flag)
    bad = {"diagnosis": "wipe it", "confidence": 0.9, "steps": [{"id": "wipe", "run": "rm -rf / --no-preserve-root"}]}
    for _ in range(4):
        fake_llm.script("fake-model", json.dumps(bad))
    p = run(tmp_path)
    assert p.returncode == 1
    events = [json.loads(line) for run_dir in (tmp_path / ".opsrun" / "runs").iterdir()
              for line in (run_dir / "events.jsonl").read_text().splitlines()]
    fixes = [e for e in events if e["type"] == "llm_fix"]
    assert fixes and not fixes[0]["ok"] and "rm-root" in fixes[0]["error"]
    assert not any(e["type"] == "llm_fix_result" for e in events)


def test_cli_no_provider_reachable_skips_the_rung(closed_port: int, tmp_path: Path, llm_env: None) -> None:
    write_gateway(tmp_path, f"http://127.0.0.1:{closed_port}/v1")
    playbook(tmp_path, tmp_path / "flag")
    p = run(tmp_path)
    assert p.returncode == 1
    events = [json.loads(line) for run_dir in (tmp_path / ".opsrun" / "runs").iterdir()
              for line in (run_dir / "events.jsonl").read_text().splitlines()]
    (fix,) = [e for e in events if e["type"] == "llm_fix"]
    assert not fix["ok"] and "fake" in fix["error"] and "refused" in fix["error"].lower()
