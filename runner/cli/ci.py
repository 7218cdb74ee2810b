"""The CI side of validate, plan and apply: `--junit FILE` reports, GitHub Actions annotations,
and the documents a failed command still leaves. Imports ci_report and formats when used.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from runner.cli.output import err, error_text, out
from runner.errors import HumanNeeded, OpsrunError

if TYPE_CHECKING:
    from runner.errors import Diagnostic


def github_actions() -> bool:
    """Running as a GitHub Actions step (the runner sets GITHUB_ACTIONS=true)."""
    return os.environ.get("GITHUB_ACTIONS") == "true"


def write_junit(path: str | None, text: str) -> None:
    """The JUnit report, written whole (a reader never sees half of it)."""
    if not path:
        return
    from runner.files import write_atomic

    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, text.encode("utf-8"), mode=0o644)
    except OSError as exc:
        raise OpsrunError(f"cannot write the JUnit report to {path}: {exc.strerror or exc}") from None


def annotate(diags: Iterable[Diagnostic], *, machine_stdout: bool) -> None:
    """Under GitHub Actions, each located diagnostic as an `::error file=…,line=…::` workflow
    command. GitHub documents stdout for them; when stdout carries a machine document (JSON,
    markdown) they go to stderr instead, which the runner reads for commands too."""
    if not github_actions():
        return
    from runner.ci_report import github_annotations

    lines = github_annotations(
        d if d.file and Path(d.file).is_file() else replace(d, file="", message=f"{d.where()}: {d.message}")
        for d in diags
    )
    if lines:
        (err if machine_stdout else out)("\n".join(lines) + "\n")


@contextmanager
def failure_documents(command: str, fmt: str, junit: str | None, *, json_lines: bool = False) -> Iterator[None]:
    """An error that stops `command` still leaves its documents: the JUnit file (an error
    case), the error document on stdout for a machine format (`json_lines`: as the last line of
    an event stream, `{"type": "error", ...}`), the annotations of its located errors. The
    error then goes on (its message on stderr, its exit code)."""
    try:
        yield
    except HumanNeeded:
        raise  # the run happened: its documents are written by the command
    except OpsrunError as exc:
        from runner import formats
        from runner.ci_report import junit_error
        from runner.secrets import redact

        annotate(getattr(exc, "diagnostics", None) or [], machine_stdout=fmt != "text")
        write_junit(junit, junit_error(command, redact(error_text(exc, ""))))
        if json_lines and fmt == "json":
            import json

            from runner.ci_report import error_document

            document = json.dumps({"type": "error", **error_document(command, exc)}) + "\n"
        else:
            document = formats.error(exc, command, fmt)
        if document:
            out(document)
        raise
