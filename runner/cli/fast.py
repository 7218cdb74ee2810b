"""The common command lines of `plan` and `apply` read without typer (whose parameter coercion
costs ~0.1 s per start); anything else goes to typer. Imports no typer, click or pydantic.

Only a plain subset is read here: the command first, then `--long VALUE`, `--long=VALUE`,
`-s VALUE` and flags, each value non-empty and not starting with `-`, at most the one
positional argument. Help, a bad or unknown option, a missing argument: typer's own answer.
tests/test_cli_fast.py checks these tables against the typer commands' declared options and
that both read every command line the same.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

# option -> (parameter, kind): str (the last one given wins), list (repeatable), int (>= 1), flag
_SHARED: dict[str, tuple[str, str]] = {
    "--inventory": ("inventory", "str"), "-i": ("inventory", "str"),
    "--var": ("var", "list"), "-e": ("var", "list"),
    "--limit": ("limit", "str"), "-l": ("limit", "str"),
    "--shard": ("shard", "str"),
    "--tags": ("tags", "list"), "-t": ("tags", "list"),
    "--skip-tags": ("skip_tags", "list"),
    "--forks": ("forks", "int"), "-f": ("forks", "int"),
    "--junit": ("junit", "str"),
}
OPTIONS: dict[str, dict[str, tuple[str, str]]] = {
    "apply": {
        **_SHARED,
        "--run-id": ("run_id", "str"),
        "--yes": ("yes", "flag"), "-y": ("yes", "flag"),
        "--allow-drift": ("allow_drift", "flag"),
        "--resume": ("resume", "str"),
        "--json": ("as_json", "flag"),
    },
    "plan": {
        **_SHARED,
        "--offline": ("offline", "flag"),
        "--out": ("out_file", "str"), "-o": ("out_file", "str"),
        "--format": ("fmt", "str"),
        "--json": ("as_json", "flag"),
        "--detailed-exitcode": ("detailed_exitcode", "flag"),
    },
}
POSITIONAL = {"apply": ("target", False), "plan": ("playbook", True)}  # (parameter, required)
_COUNT = re.compile(r"[1-9][0-9]{0,8}")


def parse(argv: list[str]) -> tuple[str, dict[str, Any]] | None:
    """(command, its parameters as typer would pass them), or None: leave it to typer."""
    if not argv or argv[0] not in OPTIONS:
        return None
    command, table = argv[0], OPTIONS[argv[0]]
    positional, required = POSITIONAL[command]
    params: dict[str, Any] = {}
    rest = argv[1:]
    i = 0
    while i < len(rest):
        token = rest[i]
        i += 1
        if not token.startswith("-"):
            if positional in params:
                return None
            params[positional] = token
            continue
        name, eq, value = token.partition("=") if token.startswith("--") else (token, "", "")
        spec = table.get(name)
        if spec is None:
            return None
        param, kind = spec
        if kind == "flag":
            if eq:
                return None
            params[param] = True
            continue
        if not eq:
            if i >= len(rest):
                return None
            value = rest[i]
            i += 1
        if not value or value.startswith("-"):
            return None
        if kind == "int":
            if not _COUNT.fullmatch(value):
                return None
            params[param] = int(value)
        elif kind == "list":
            params.setdefault(param, []).append(value)
        else:
            params[param] = value
    if required and positional not in params:
        return None
    return command, params


def runner_for(argv: list[str]) -> Callable[[], int] | None:
    """The command line run without typer (a call returning the exit code), or None."""
    found = parse(argv)
    if found is None:
        return None
    command, params = found
    if command == "apply":
        from runner.cli.apply_run import run_apply

        return lambda: run_apply(**params)
    from runner.cli.plan_run import run_plan

    return lambda: run_plan(**params)


def run_apply_signature() -> inspect.Signature:
    from runner.cli.apply_run import run_apply

    return inspect.signature(run_apply)


def run_plan_signature() -> inspect.Signature:
    from runner.cli.plan_run import run_plan

    return inspect.signature(run_plan)
