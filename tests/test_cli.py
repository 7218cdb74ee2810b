"""The CLI end to end on `local`: exit codes, errors without tracebacks, saved plans and
drift, the lock, the journal and `runs`, and start-up staying free of heavy imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("litellm", "proxmoxer", "adbutils", "fabric", "paramiko")


def opsrun(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "OPSRUN_STATE_DIR"}
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        cwd=cwd,
        text=True,
        capture_output=True,
        env=env,
        timeout=60,
        input=stdin,
    )


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def no_traceback(p: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in p.stderr + p.stdout, p.stderr


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write(
        tmp_path / "site.yaml",
        f"""\
        opsrun: 1
        name: site
        hosts: local
        vars:
          dir: {tmp_path}/out
        steps:
          - id: folder
            file: {{path: "{{{{ dir }}}}", state: directory}}
          - id: note
            file:
              path: "{{{{ dir }}}}/note.txt"
              content: "v1\\n"
        """,
    )
    return tmp_path


def test_help_lists_commands_and_exit_codes(tmp_path: Path) -> None:
    p = opsrun("--help", cwd=tmp_path)
    assert p.returncode == 0
    for word in ("validate", "plan", "apply", "runs", "schema", "Exit codes"):
        assert word in p.stdout


def test_startup_imports_no_heavy_library(tmp_path: Path, project: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        from runner.cli import main
        for argv in (["--help"], ["validate", "site.yaml"], ["plan", "site.yaml"]):
            try:
                main(argv)
            except SystemExit as exc:
                assert exc.code in (0, 2), (argv, exc.code)
        heavy = [m for m in {HEAVY!r} if m in sys.modules]
        print("HEAVY", heavy)
        """
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in p.stdout, p.stdout + p.stderr


def test_only_the_program_freezes_the_collector_as_it_exits(project: Path) -> None:
    """The `opsrun` program (main() reading sys.argv) freezes the garbage collector before the
    interpreter exits (finalization then skips searching every object for cycles) and still
    runs atexit handlers and flushes its output; main(argv) called in a process leaves the
    collector alone."""
    import gc

    from runner.cli import main

    before = gc.get_freeze_count()
    cwd = os.getcwd()
    os.chdir(project)
    try:
        with pytest.raises(SystemExit):
            main(["plan", "site.yaml"])
    finally:
        os.chdir(cwd)
    assert gc.isenabled() and gc.get_freeze_count() == before
    code = textwrap.dedent(
        """
        import atexit, gc, sys
        atexit.register(lambda: print("atexit", gc.isenabled(), gc.get_freeze_count() > 0))
        sys.argv = ["opsrun", "plan", "site.yaml"]
        from runner.cli import main
        main()
        """
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True, timeout=60)
    assert p.returncode in (0, 2), p.stderr
    assert p.stdout.rstrip().endswith("atexit False True"), p.stdout
    assert "Plan:" in p.stdout or "plan" in p.stdout.lower()


def test_plan_detailed_exitcode_and_formats(project: Path) -> None:
    p = opsrun("plan", "site.yaml", "--detailed-exitcode", cwd=project)
    assert p.returncode == 2, p.stderr
    assert "+ folder: create directory" in p.stdout
    assert "Plan: 2 to change, 0 unchanged on 1 host" in p.stdout
    j = opsrun("plan", "site.yaml", "--json", cwd=project)
    doc = json.loads(j.stdout)
    assert doc["format"] == "opsrun-plan" and doc["version"] == 1
    assert [s["marker"] for s in doc["steps"]] == ["+", "+"]
    assert doc["steps"][1]["actions"][0]["kind"] == "put"
    md = opsrun("plan", "site.yaml", "--format", "markdown", cwd=project)
    assert md.stdout.startswith("### opsrun plan: `site`")
    assert "| local | `+` | `note` |" in md.stdout


def test_offline_plan_probes_nothing(project: Path) -> None:
    p = opsrun("plan", "site.yaml", "--offline", cwd=project)
    assert p.returncode == 0
    assert "? folder: not probed" in p.stdout
    assert not (project / "out").exists()


def test_apply_refuses_without_terminal_or_yes(project: Path) -> None:
    p = opsrun("apply", "site.yaml", cwd=project, stdin="")
    assert p.returncode == 1
    assert "no terminal to confirm" in p.stderr and "--yes" in p.stderr
    assert not (project / "out").exists()
    no_traceback(p)


def test_apply_then_saved_plan_drift(project: Path) -> None:
    assert opsrun("plan", "site.yaml", "-o", "plan.json", cwd=project).returncode == 0
    # someone changes the host after the review
    (project / "out").mkdir()
    (project / "out" / "note.txt").write_text("edited by hand\n")
    refused = opsrun("apply", "plan.json", cwd=project)
    assert refused.returncode == 1
    assert "state moved since the plan" in refused.stderr
    assert "step 'note' on local" in refused.stderr and "content" in refused.stderr
    assert (project / "out" / "note.txt").read_text() == "edited by hand\n"
    # a fresh plan applies exactly
    assert opsrun("plan", "site.yaml", "-o", "plan.json", cwd=project).returncode == 0
    ok = opsrun("apply", "plan.json", cwd=project)
    assert ok.returncode == 0, ok.stderr
    assert (project / "out" / "note.txt").read_text() == "v1\n"
    # the playbook changing after the plan is refused too
    opsrun("plan", "site.yaml", "-o", "plan.json", cwd=project)
    site = project / "site.yaml"
    site.write_text(site.read_text().replace("v1", "v2"))
    changed = opsrun("apply", "plan.json", cwd=project)
    assert changed.returncode == 1 and "playbook" in changed.stderr and "changed since" in changed.stderr


def test_journal_and_runs(project: Path) -> None:
    p = opsrun("apply", "site.yaml", "--yes", cwd=project)
    assert p.returncode == 0, p.stderr
    runs = list((project / ".opsrun" / "runs").iterdir())
    assert len(runs) == 1
    events = [json.loads(line) for line in (runs[0] / "events.jsonl").read_text().splitlines()]
    types = [e["type"] for e in events]
    assert types[0] == "run_start" and types[-1] == "run_end"
    assert types.count("step_end") == 2 and "attempt" in types
    attempt = next(e for e in events if e["type"] == "attempt")
    assert {"command", "rc", "duration", "stdout_tail"} <= set(attempt)
    assert (runs[0] / "plan.json").is_file()
    listed = opsrun("runs", "list", cwd=project)
    assert runs[0].name in listed.stdout and "ok" in listed.stdout
    shown = opsrun("runs", "show", runs[0].name[:12], cwd=project)
    assert shown.returncode == 0 and "note" in shown.stdout and "run end: ok" in shown.stdout
    missing = opsrun("runs", "show", "nope", cwd=project)
    assert missing.returncode == 4 and "no run 'nope'" in missing.stderr
    assert not (project / ".opsrun" / "lock").exists()


def test_lock_held_by_live_process_refuses(project: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        state = project / ".opsrun"
        state.mkdir()
        import socket
        import time

        (state / "lock").write_text(
            json.dumps(
                {
                    "owner": "ci@box",
                    "host": socket.gethostname(),
                    "pid": holder.pid,
                    "run_id": "R1",
                    "started": time.time(),
                    "expires": time.time() + 600,
                }
            )
        )
        p = opsrun("apply", "site.yaml", "--yes", cwd=project)
        assert p.returncode == 1
        assert "another apply holds the lock: run R1" in p.stderr
        holder.kill()
        holder.wait()
        p2 = opsrun("apply", "site.yaml", "--yes", cwd=project)
        assert p2.returncode == 0, p2.stderr
        assert "stale lock" in p2.stderr
    finally:
        holder.kill()
        holder.wait()


BAD_INPUTS = {
    "undefined_var": (
        """\
        opsrun: 1
        name: x
        hosts: local
        steps:
          - id: a
            run: echo {{ nope }}
        """,
        ["x.yaml:5:", "undefined variable", "nope"],
    ),
    "unknown_host": (
        """\
        opsrun: 1
        name: x
        hosts: webservers
        steps:
          - id: a
            run: "true"
        """,
        ["x.yaml:3:", "webservers"],
    ),
    "yaml_syntax": ("opsrun: 1\nname: [x\n", ["x.yaml:", "YAML"]),
    "missing_template": (
        """\
        opsrun: 1
        name: x
        hosts: local
        steps:
          - id: t
            template: {src: nothere.j2, dest: /tmp/x}
        """,
        ["x.yaml:5:", "nothere.j2"],
    ),
    "loop_not_list": (
        """\
        opsrun: 1
        name: x
        hosts: local
        vars: {n: 3}
        steps:
          - id: a
            loop: "{{ n }}"
            run: echo {{ item }}
        """,
        ["x.yaml:6:", "loop must be a list"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
@pytest.mark.parametrize("command", ["plan", "apply"])
def test_bad_input_is_located_exit_4(tmp_path: Path, case: str, command: str) -> None:
    text, fragments = BAD_INPUTS[case]
    write(tmp_path / "x.yaml", text)
    args = ["--yes"] if command == "apply" else []
    p = opsrun(command, "x.yaml", *args, cwd=tmp_path)
    no_traceback(p)
    assert p.returncode == 4, p.stdout + p.stderr
    for frag in fragments:
        assert frag in p.stderr, p.stderr


def test_bad_arguments_exit_4(project: Path) -> None:
    for args in (["plan", "missing.yaml"], ["plan", "site.yaml", "--var", "novalue"], ["plan", "site.yaml", "--format", "x"],
                 ["plan", "site.yaml", "--bogus"], ["schema", "nope"], ["plan", "site.yaml", "--limit", "ghost"]):
        p = opsrun(*args, cwd=project)
        no_traceback(p)
        assert p.returncode == 4, (args, p.stderr)


def test_failing_step_exit_1_and_recap(tmp_path: Path) -> None:
    write(
        tmp_path / "f.yaml",
        """\
        opsrun: 1
        name: f
        hosts: local
        steps:
          - id: boom
            run: echo oops >&2; exit 7
          - id: after
            run: echo never
        """,
    )
    p = opsrun("apply", "f.yaml", "--yes", cwd=tmp_path)
    no_traceback(p)
    assert p.returncode == 1
    assert "rc 7" in p.stdout and "oops" in p.stdout
    applied = p.stdout.split("Applying", 1)[1]
    assert "local  after" not in applied  # a failed host stops (on_failure: stop)
    assert "1 failed" in p.stdout


def test_schema_command_prints_json(tmp_path: Path) -> None:
    for name in ("playbook", "inventory"):
        p = opsrun("schema", name, cwd=tmp_path)
        assert p.returncode == 0
        assert json.loads(p.stdout)["$schema"].startswith("https://json-schema.org/draft/2020-12")


def test_saved_plan_and_run_files_are_private(project: Path) -> None:
    (project / "plan.json").write_text("old")
    (project / "plan.json").chmod(0o644)
    p = opsrun("plan", "site.yaml", "-o", "plan.json", cwd=project)
    assert p.returncode == 0, p.stderr
    assert (project / "plan.json").stat().st_mode & 0o777 == 0o600
    a = opsrun("apply", "plan.json", cwd=project)
    assert a.returncode == 0, a.stderr
    state = project / ".opsrun"
    for path in [state, *state.rglob("*")]:
        assert path.stat().st_mode & 0o777 == (0o700 if path.is_dir() else 0o600), path


def test_a_symlinked_runs_folder_is_refused(project: Path) -> None:
    elsewhere = project / "elsewhere"
    elsewhere.mkdir()
    (project / ".opsrun").mkdir()
    (project / ".opsrun" / "runs").symlink_to(elsewhere)
    p = opsrun("apply", "site.yaml", "--yes", cwd=project)
    no_traceback(p)
    assert p.returncode == 1 and "is a symbolic link" in p.stderr, p.stderr
    assert list(elsewhere.iterdir()) == []
    for command in (["runs", "list"], ["runs", "show", "last"]):
        r = opsrun(*command, cwd=project)
        no_traceback(r)
        assert r.returncode == 1 and "is a symbolic link" in r.stderr
    assert not (project / ".opsrun" / "lock").exists()


def test_runs_show_skips_journal_lines_that_are_not_objects(project: Path) -> None:
    assert opsrun("apply", "site.yaml", "--yes", cwd=project).returncode == 0
    [run] = (project / ".opsrun" / "runs").iterdir()
    with (run / "events.jsonl").open("a") as fh:
        fh.write('[1, 2]\n"text"\n7\n')
    for args in ([], ["--json"]):
        shown = opsrun("runs", "show", "last", *args, cwd=project)
        no_traceback(shown)
        assert shown.returncode == 0 and "ok" in shown.stdout
    listed = opsrun("runs", "list", cwd=project)
    assert listed.returncode == 0 and run.name in listed.stdout
