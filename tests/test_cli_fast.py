"""runner.cli.fast (plain `plan`/`apply` command lines read without typer) against the typer
commands: the same options, the same values for every command line it reads, typer's own answer
for everything else, the same output and exit code end to end, and no typer or pydantic loaded."""

from __future__ import annotations

import functools
import inspect
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import typer

from runner.cli import fast, typer_app

ROOT = Path(__file__).resolve().parent.parent


def _click_command(name: str) -> Any:
    group = typer.main.get_command(typer_app.app)
    return group.commands[name]  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(fast.OPTIONS))
def test_tables_match_the_typer_commands(name: str) -> None:
    declared: dict[str, tuple[str, str]] = {}
    positional = None
    for param in _click_command(name).params:
        if param.param_type_name == "argument":
            positional = (param.name, param.required)
            continue
        if param.name == "help":
            continue
        annotation = param.type_descriptor.annotation
        kind = ("flag" if param.is_flag else "list" if param.multiple else "int" if annotation is int else "str")
        assert annotation in (bool, int, str, list[str]), (name, param.opts, annotation)
        if kind == "int":
            assert (param.min, param.max) == (1, None), (name, param.opts, "the fast path reads counts >= 1")
        assert not param.secondary_opts, (name, param.opts, "a --no- form the fast path does not read")
        assert param.envvar is None, (name, param.opts)
        for opt in param.opts:
            declared[opt] = (param.name, kind)
    assert fast.OPTIONS[name] == declared
    assert fast.POSITIONAL[name] == positional


def _typer_params(argv: list[str]) -> dict[str, Any]:
    """The parameters typer hands the command's function for `argv` (the same signature,
    recorded instead of run)."""
    from runner.cli import apply, plan

    function = {"apply": apply.apply, "plan": plan.plan}[argv[0]]
    got: dict[str, Any] = {}

    @functools.wraps(function)
    def record(**kwargs: Any) -> None:
        got.update(kwargs)

    app = typer.Typer()
    app.command(argv[0])(record)
    app.command("other")(lambda: None)  # a group, as opsrun's: the command name comes first
    typer.main.get_command(app).main(args=argv, prog_name="opsrun", standalone_mode=False)
    return got


READ = [
    ["apply", "site.yaml", "-i", "inv.yaml", "--yes", "--forks", "10"],
    ["apply", "site.yaml", "--inventory=inv.yaml", "-y", "-f", "3", "--json"],
    ["apply", "--yes", "site.yaml", "-e", "a=1", "--var", "@v.yaml", "-e", "b=2", "-t", "x,y", "--tags", "z"],
    ["apply", "plan.json", "--allow-drift", "--junit", "out/j.xml", "--run-id", "R1", "--shard", "1/2"],
    ["apply", "--resume", "20261206-abc", "-y"],
    ["apply", "site.yaml", "-l", "web", "--limit", "db", "--skip-tags", "slow", "-y"],
    ["apply"],
    ["plan", "site.yaml"],
    ["plan", "site.yaml", "-o", "p.json", "--format", "markdown", "--detailed-exitcode", "--offline"],
    ["plan", "--json", "site.yaml", "-i", "inv.yaml", "-f", "64", "--shard=2/3", "--junit=j.xml"],
]


@pytest.mark.parametrize("argv", READ, ids=[" ".join(a) for a in READ])
def test_reads_as_typer_does(argv: list[str]) -> None:
    found = fast.parse(argv)
    assert found is not None and found[0] == argv[0]
    run = fast.run_apply_signature() if argv[0] == "apply" else fast.run_plan_signature()
    defaults = {k: p.default for k, p in run.parameters.items() if p.default is not inspect.Parameter.empty}
    mine = {**defaults, **found[1]}
    theirs = _typer_params(argv)
    assert mine == theirs


LEFT_TO_TYPER = [
    ["--help"], ["apply", "--help"], ["plan", "-h"], ["validate", "site.yaml"], ["--version"],
    ["apply", "a.yaml", "b.yaml"], ["plan"], ["apply", "--forks", "0"], ["apply", "--forks", "x"],
    ["apply", "--forks", "-1"], ["apply", "-yf", "3"], ["apply", "-iinv.yaml"], ["apply", "-i=inv.yaml"],
    ["apply", "--inventory"], ["apply", "--inventory="], ["apply", "-i", "-x"], ["apply", "--yes=1"],
    ["apply", "--", "x.yaml"], ["apply", "-"], ["apply", "--inv", "x"], ["plan", "x.yaml", "--no-offline"],
    ["apply", "x.yaml", "--offline"], ["plan", "x.yaml", "--yes"], ["apply", "--forks", "007"],
]


@pytest.mark.parametrize("argv", LEFT_TO_TYPER, ids=[" ".join(a) for a in LEFT_TO_TYPER])
def test_anything_else_is_left_to_typer(argv: list[str]) -> None:
    assert fast.parse(argv) is None


def _opsrun(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
                                                      "OPSRUN_STATE_DIR": str(cwd / "state"), "HOME": str(cwd)})


@pytest.mark.parametrize("command", [["plan", "site.yaml", "--detailed-exitcode"],
                                     ["apply", "site.yaml", "--yes"],
                                     ["apply", "missing.yaml", "--yes"]])
def test_fast_and_typer_paths_answer_alike(tmp_path: Path, command: list[str]) -> None:
    answers = []
    for way in ("fast", "typer"):
        work = tmp_path / way
        work.mkdir()
        (work / "site.yaml").write_text(textwrap.dedent(f"""\
            opsrun: 1
            name: site
            hosts: local
            steps:
              - id: note
                file: {{path: "{work}/out/note.txt", content: "v1\\n"}}
            """))
        if way == "fast":
            code = f"""
                import sys
                from runner.cli import main
                try:
                    main({command!r})
                finally:
                    print("LOADED", [m for m in ("typer", "pydantic", "click") if m in sys.modules], file=sys.stderr)
                """
        else:
            code = f"""
                import sys
                from runner.cli import _fail, _finish, typer_app
                try:
                    code = typer_app.run({command!r})
                except BaseException as exc:
                    _fail(exc)
                _finish(code)
                """
        p = _opsrun(code, work)
        assert "Traceback" not in p.stderr, p.stderr
        text = (p.stdout + p.stderr).replace(str(work), "W")
        if way == "fast":
            assert "LOADED []" in text, text
            text = text.replace("LOADED []\n", "")
        answers.append((p.returncode, _mask_ids(text)))
    assert answers[0] == answers[1]


def _mask_ids(text: str) -> str:
    import re

    text = re.sub(r"\b\d+\.\d+s\b", "Ts", text)  # durations
    return re.sub(r"\b\d{8}T?\d{6}\S*|\b[0-9a-f]{8,}\b", "ID", text)
