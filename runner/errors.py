"""The exception tree and the exit codes; nothing here prints or exits (runner.cli does).

OpsrunError (exit 1)                     base: a message meant for a person
├── InvalidInput (exit 4)                playbook/inventory/vars/plan file is wrong;
│                                        carries located Diagnostics
├── TransportError (exit 1)              reaching a target went wrong (host named)
│   ├── ConnectError                     could not connect / connection lost
│   │   └── HostKeyError                 unknown or changed host key
│   ├── AuthError                        credentials refused
│   ├── CommandTimeout                   a command ran past its timeout
│   └── ApiError                         an API answered with an error (fields kept)
├── Blocked (exit 1)                     a safety rule stopped a command
├── DriftError (exit 1)                  state moved since the saved plan
├── LockError (exit 1)                   another apply holds the lock
├── MissingExtra (exit 1)                an optional dependency is not installed
└── HumanNeeded (exit 3)                 stopped waiting for a human (CI, no terminal)
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2
EXIT_HUMAN = 3
EXIT_INVALID = 4


@dataclass(frozen=True)
class Diagnostic:
    """One located problem in an input file."""

    file: str
    line: int  # 1-based; 0 when unknown
    col: int  # 1-based; 0 when unknown
    message: str
    path: str = ""  # JSON path, e.g. "steps[2].run.command"
    hint: str = ""  # what to do about it ("did you mean 'command'?")
    severity: str = "error"  # or "warning": reported, does not fail validate
    via: str = ""  # in an included file: the include steps that led there ("site.yaml:8:5 <- ...")

    def where(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}" + (f":{self.col}" if self.col else "")
        return self.file

    def render(self) -> str:
        at = f" (at {self.path})" if self.path else ""
        hint = f"\n    hint: {self.hint}" if self.hint else ""
        via = f"\n    included by {self.via}" if self.via else ""
        return f"{self.where()}: {self.severity}: {self.message}{at}{hint}{via}"

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "path": self.path,
            "message": self.message,
            "hint": self.hint,
            "severity": self.severity,
            **({"included_by": self.via} if self.via else {}),
        }


class OpsrunError(Exception):
    """Base of every error opsrun reports to a person."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def render(self) -> str:
        return self.message + (f"\n  hint: {self.hint}" if self.hint else "")


class InvalidInput(OpsrunError):
    """Input files or arguments are wrong; carries every located diagnostic."""

    exit_code = EXIT_INVALID

    def __init__(self, message: str, diagnostics: list[Diagnostic] | None = None, *, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.diagnostics = list(diagnostics or [])

    def render(self) -> str:
        if not self.diagnostics:
            return super().render()
        lines = [d.render() for d in self.diagnostics]
        n = len(self.diagnostics)
        lines.append(f"{n} error{'s' if n != 1 else ''}: {self.message}")
        return "\n".join(lines)


class TransportError(OpsrunError):
    """Reaching a target failed; `host` names it."""

    def __init__(self, host: str, message: str, *, hint: str = "") -> None:
        super().__init__(f"{host}: {message}", hint=hint)
        self.host = host
        self.detail = message


class ConnectError(TransportError):
    """Could not connect to the host, or the connection was lost."""


class HostKeyError(ConnectError):
    """The host key is unknown or changed, under a policy that refuses it."""


class AuthError(TransportError):
    """The host refused our credentials."""


class CommandTimeout(TransportError):
    """A command did not finish within its timeout."""


class ApiError(TransportError):
    """An API answered with an error; `fields` keeps per-field messages."""

    def __init__(
        self,
        host: str,
        message: str,
        *,
        status: int = 0,
        fields: dict[str, str] | None = None,
        hint: str = "",
    ) -> None:
        super().__init__(host, message, hint=hint)
        self.status = status
        self.fields = dict(fields or {})


class Blocked(OpsrunError):
    """A safety rule refused a command before it reached the target."""

    def __init__(self, command: str, rule: str, *, host: str = "") -> None:
        where = f"{host}: " if host else ""
        super().__init__(
            f"{where}blocked by safety rule {rule!r}: {command}",
            hint="add an 'allow:' entry in the inventory or playbook if this is intended",
        )
        self.command = command
        self.rule = rule


class DriftError(OpsrunError):
    """The target moved since the saved plan was made."""


class LockError(OpsrunError):
    """Another apply holds the state lock."""


class MissingExtra(OpsrunError):
    """An optional dependency group is not installed."""

    def __init__(self, extra: str, what: str) -> None:
        super().__init__(
            f"{what} needs the '{extra}' extra, which is not installed",
            hint=f"pip install 'opsrun[{extra}]'",
        )


def resume_command(run_id: str, *, interactive: bool = True) -> str:
    """The command that continues a run. Without a terminal nobody can confirm, so a resume
    there needs --yes (as `apply PLAYBOOK` does): the hint says so, ready to paste into CI."""
    return f"opsrun apply --resume {run_id}" + ("" if interactive else " --yes")


class HumanNeeded(OpsrunError):
    """A run stopped because a human must decide; `run_id` lets them resume it."""

    exit_code = EXIT_HUMAN

    def __init__(self, run_id: str, report_path: str, summary: str = "", *, interactive: bool = True) -> None:
        super().__init__(
            f"stopped for a human decision: {summary}",
            hint=f"read {report_path}, act, then: {resume_command(run_id, interactive=interactive)}",
        )
        self.run_id = run_id
        self.report_path = report_path
