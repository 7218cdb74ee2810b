"""The data every stage hands to the next: playbooks, inventory, probes, changes, plans.

Plain frozen dataclasses with no behaviour beyond (de)serialising themselves; no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from runner.errors import Diagnostic

ResultStatus = Literal["ok", "changed", "failed", "skipped", "blocked", "unreachable"]
Status = Literal["noop", "create", "update", "delete", "run", "unknown", "blocked", "skip"]
MARKERS: dict[str, str] = {
    "create": "+",
    "update": "~",
    "delete": "-",
    "run": ">",
    "noop": "=",
    "unknown": "?",
    "blocked": "!",
    "skip": "=",
}
CHANGING = frozenset({"create", "update", "delete", "run"})
FLUSH = "flush_handlers"  # the kind of a step that only runs the handlers notified so far


# ---------------------------------------------------------------- inventory


@dataclass(frozen=True)
class Host:
    """One target: its name, how to reach it, and its merged variables."""

    name: str
    transport: str  # local | ssh | proxmox | adb
    settings: dict[str, Any] = field(default_factory=dict)  # transport settings
    vars: dict[str, Any] = field(default_factory=dict)  # the host's own vars
    group_vars: dict[str, Any] = field(default_factory=dict)  # inventory + group vars merged
    groups: tuple[str, ...] = ()
    forbid: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()
    implicit: bool = False  # `local` added without being written in the inventory


@dataclass(frozen=True)
class Inventory:
    hosts: dict[str, Host]
    groups: dict[str, tuple[str, ...]]  # group -> host names (children flattened)
    vars: dict[str, Any] = field(default_factory=dict)
    file: str = "<embedded>"
    digest: str = ""
    # located warnings from reading it (Ansible variables opsrun does not use, ...); for stderr
    warnings: list[Diagnostic] = field(default_factory=list, compare=False)
    # how it was built (runner.inventory.build.State): vars folders, sources read on demand
    state: Any = field(default=None, compare=False, repr=False)


# ---------------------------------------------------------------- playbook


@dataclass(frozen=True)
class IncludeLayer:
    """An include or role step that a step sits inside (runner/reuse.py): its `when`, the
    parameters it passes and the defaults it brings, evaluated in the caller's namespace."""

    id: str  # full id of the include step ("web", "web.tls")
    file: str  # where the include step is written
    line: int
    col: int
    target: str  # the step file or role folder it uses, as written
    given: dict[str, Any] = field(default_factory=dict)  # `with:` values as written
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {type, default, choices}
    defaults: dict[str, Any] = field(default_factory=dict)  # `defaults:` of the file (lowest precedence)
    when: str | None = None

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" + (f":{self.col}" if self.col else "")


@dataclass(frozen=True)
class Step:
    """One step as written (templates not yet rendered)."""

    id: str
    kind: str  # registered step kind name, e.g. "run", "file", "proxmox.lxc"
    params: Any  # the kind's parameters as written
    name: str = ""
    hosts: Any = None  # pattern(s) narrowing the playbook's hosts
    when: str | None = None
    loop: Any = None
    register: str | None = None
    verify: Any = None
    undo: Any = None
    policy: dict[str, Any] = field(default_factory=dict)
    timeout: float | None = None
    tags: tuple[str, ...] = ()
    sensitive: bool = False
    index: int = 0  # position in the steps list of the file it is written in
    line: int = 0
    col: int = 0
    file: str = ""  # the file it is written in, when not the playbook (an included step file)
    dir: str = ""  # the folder its local sources (src) resolve in, when not the playbook's: a role's
    layers: tuple[IncludeLayer, ...] = ()  # the includes it sits in, outermost first
    host_filters: tuple[Any, ...] = ()  # `hosts:` of those includes: each narrows the step's hosts
    notify: tuple[str, ...] = ()  # full ids of the handlers it notifies when it changes something
    until: str | None = None  # apply tries it again until this expression over its result holds
    retries: int = 3  # with until: tries after the first
    delay: float = 5.0  # with until: seconds between tries
    sudo: bool | None = None  # overrides the host's `sudo` for this step (None: the host's)
    handler: bool = False  # a handler (playbook or step file `handlers:`): runs when notified

    @property
    def flush(self) -> bool:
        """A `flush_handlers: true` step: the notified handlers run here, not at the end."""
        return self.kind == FLUSH

    @property
    def title(self) -> str:
        return self.name or self.id

    @property
    def source(self) -> str:
        """Where an included step is written, with the include chain ("" for playbook steps)."""
        if not self.layers:
            return ""
        via = " <- ".join(layer.where for layer in reversed(self.layers))
        return f"{self.file}:{self.line}:{self.col} (included by {via})"


@dataclass(frozen=True)
class Playbook:
    name: str
    hosts: Any
    steps: tuple[Step, ...]
    vars: dict[str, Any] = field(default_factory=dict)
    policy: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)  # strategy, serial, forks, ...
    forbid: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()
    file: str = ""
    dir: str = "."
    digest: str = ""
    handlers: tuple[Step, ...] = ()  # run once per host when notified, at a flush or at the end

    def handler(self, handler_id: str) -> Step | None:
        return next((h for h in self.handlers if h.id == handler_id), None)


# ---------------------------------------------------------------- probes and actions

# A guard returns the name of the safety rule that forbids a command, or None when allowed.
CommandGuard = Callable[[str], str | None]


def put_check(path: str) -> str:
    """The command a file upload is checked as by the safety rules (a write to `path`)."""
    return f"cat > {shlex.quote(path)}"


# SFTP requests an `sftp` action sends, and the command each is checked as by the safety
# rules (the shell command that would do the same to the path)
SFTP_METHODS = {"mkdir": "mkdir -- {p}", "chmod": "chmod {m} -- {p}", "remove": "rm -f -- {p}"}


@dataclass(frozen=True)
class Probe:
    """A read-only question to a host. Shell hosts get `command`; API hosts get `api`.

    `files`, when set, answers the same question from a transport's file access (SFTP, os
    calls) with the very answer `command` would give, or None to leave it to `command`."""

    key: str
    command: str | None = None
    api: tuple[str, str, tuple[tuple[str, Any], ...]] | None = None  # (method, path, params)
    sudo: bool | None = None  # a step's own `sudo:` (None: as the host says)
    files: Callable[[Any], ProbeResult | None] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class ProbeResult:
    rc: int
    stdout: bytes = b""
    stderr: bytes = b""
    data: Any = None  # decoded answer of an API probe

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(str(self.rc).encode())
        h.update(b"\0")
        h.update(self.stdout)
        if self.data is not None:
            h.update(json.dumps(self.data, sort_keys=True, default=str).encode())
        return h.hexdigest()[:16]


class ShellCommand(str):
    """A shell command whose secrets it reads from variables: `env` holds (name, value) for
    each; transports hand those over on stdin, never in argv. Otherwise a plain str."""

    env: tuple[tuple[str, str], ...]

    def __new__(cls, text: str, env: tuple[tuple[str, str], ...] = ()) -> ShellCommand:
        obj = super().__new__(cls, text)
        obj.env = env
        return obj

    def __reduce__(self) -> tuple[Any, ...]:
        return (ShellCommand, (str(self), self.env))


def command_env(*commands: object) -> tuple[tuple[str, str], ...]:
    """The secrets (name, value) the given commands reference, each once."""
    out: dict[str, str] = {}
    for c in commands:
        out.update(getattr(c, "env", ()))
    return tuple(sorted(out.items()))


@dataclass(frozen=True)
class Action:
    """One thing apply will send: a shell command, a file upload or an API call.

    `display` is what people see (secrets already masked by the caller at output time);
    the digest covers the real payload so a saved plan can be matched exactly.
    """

    kind: Literal["cmd", "put", "api", "local", "sftp"]
    command: str = ""  # cmd: the shell command
    path: str = ""  # put: destination; api: API path; sftp: the path the request is about
    content: bytes = b""  # put: the bytes to write
    mode: str | None = None  # put, sftp: octal string like "0644"
    method: str = ""  # api: GET/POST/PUT/DELETE; sftp: a key of SFTP_METHODS
    params: dict[str, Any] = field(default_factory=dict)  # api params / extra options
    stdin: bytes | None = None  # cmd: data fed to the command
    sudo: bool | None = None  # cmd/put/sftp: a step's own `sudo:` overriding the host's (None: the host's)
    wait_task: bool = False  # api: wait for the UPID it returns

    @property
    def env(self) -> tuple[tuple[str, str], ...]:
        """Secrets the command reads from variables (never shown; in the digest as hashes)."""
        return command_env(self.command)

    def display(self) -> str:
        return _SUDO_SHOWN[self.sudo] + self._display()

    def _display(self) -> str:
        if self.kind == "cmd":
            return self.command
        if self.kind == "put":
            mode = f", mode {self.mode}" if self.mode else ""
            return f"put {self.path} ({len(self.content)} bytes{mode})"
        if self.kind == "api":
            args = " ".join(f"{k}={_short(v)}" for k, v in sorted(self.params.items()))
            return f"{self.method} {self.path}" + (f" {args}" if args else "")
        if self.kind == "sftp":
            if self.method == "chmod":
                return f"sftp chmod {self.path} {self.mode}"
            return f"sftp {self.method} {self.path}" + (f" (mode {self.mode})" if self.mode else "")
        return self.command

    def checked_as(self) -> str:
        """The command the safety rules judge this action as ("" for API and local actions)."""
        if self.kind == "cmd":
            return self.command
        if self.kind == "put":
            return put_check(self.path)
        if self.kind == "sftp":
            return SFTP_METHODS[self.method].format(p=shlex.quote(self.path), m=self.mode or "")
        return ""

    def digest(self) -> str:
        h = hashlib.sha256()
        payload = {
            "kind": self.kind,
            "command": self.command,
            "path": self.path,
            "mode": self.mode,
            "method": self.method,
            "params": self.params,
            "sudo": self.sudo,
        }
        h.update(json.dumps(payload, sort_keys=True, default=str).encode())
        h.update(self.content)
        h.update(self.stdin or b"")
        for name, value in self.env:
            h.update(f"\0{name}={hashlib.sha256(value.encode()).hexdigest()}".encode())
        return h.hexdigest()[:16]

    def to_json(self, *, with_payload: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "display": self.display(), "digest": self.digest()}
        if self.sudo is not None:
            out["sudo"] = self.sudo
        if self.kind == "cmd":
            out["command"] = self.command
        if self.kind == "api":
            out.update(method=self.method, path=self.path, params=self.params)
        if self.kind == "put":
            out.update(path=self.path, mode=self.mode, size=len(self.content))
        if self.kind == "sftp":
            out.update(method=self.method, path=self.path, mode=self.mode)
        if with_payload and self.content:
            out["content_b64"] = base64.b64encode(self.content).decode()
        return out


_SUDO_SHOWN = {None: "", True: "sudo: ", False: "no sudo: "}  # a step's own `sudo:`, as plans show it


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True)
class Change:
    """What a step would do on one host, decided from probe answers."""

    status: Status
    summary: str
    actions: tuple[Action, ...] = ()
    diff: str = ""
    reason: str = ""  # why unknown / blocked / skipped
    data: dict[str, Any] = field(default_factory=dict)  # kind-specific detail (e.g. field diffs)

    @property
    def read_only(self) -> bool:
        return bool(self.data.get("read_only"))

    @property
    def changes(self) -> bool:
        """Would change the target (a read-only run does not)."""
        return self.status in CHANGING and not self.read_only


@dataclass(frozen=True)
class StepPlan:
    """One step instance (a loop item is its own instance) on one host."""

    host: str
    step_id: str
    instance: str  # "id" or "id[2]"
    title: str
    kind: str
    change: Change
    fingerprint: dict[str, str] = field(default_factory=dict)  # probe key -> answer hash
    conditional_on: tuple[str, ...] = ()  # step ids whose results decide it
    source: str = ""  # an included step: its file:line and the include chain (Step.source)
    handler: str = ""  # a handler's run: where it runs ("end", or the id of the flush step)
    notified_by: tuple[str, ...] = ()  # a handler's run: the steps that notify it there

    def to_json(self) -> dict[str, Any]:
        c = self.change
        out = {
            "host": self.host,
            "step": self.step_id,
            "instance": self.instance,
            "title": self.title,
            "kind": self.kind,
            "status": c.status,
            "marker": MARKERS[c.status],
            "summary": c.summary,
            "reason": c.reason,
            "read_only": c.read_only,  # a `>` that only reads: apply reports it ok, never changed
            "actions": [a.to_json() for a in c.actions],
            "diff": c.diff,
            "fingerprint": self.fingerprint,
            "conditional_on": list(self.conditional_on),
        }
        if self.source:
            out["source"] = self.source
        if self.handler:
            out["handler"] = {"at": self.handler, "notified_by": list(self.notified_by)}
        return out


@dataclass
class Plan:
    playbook: Playbook
    inventory: Inventory
    cli_vars: dict[str, Any]
    hosts: list[str]
    steps: list[StepPlan] = field(default_factory=list)
    unreachable: dict[str, str] = field(default_factory=dict)  # host -> error
    offline: bool = False
    limit: str | None = None
    tags: tuple[str, ...] = ()
    skip_tags: tuple[str, ...] = ()
    warnings: list[str] = field(default_factory=list)  # e.g. two steps fighting over one path
    shard: str | None = None  # "I/N" when the hosts are one shard of the selection (--shard)

    def counts(self) -> dict[str, int]:
        out = {"change": 0, "unchanged": 0, "read_only": 0, "unknown": 0, "blocked": 0}
        for sp in self.steps:
            s = sp.change.status
            if sp.change.read_only:
                out["read_only"] += 1
            elif s in CHANGING:
                out["change"] += 1
            elif s in ("noop", "skip"):
                out["unchanged"] += 1
            elif s == "unknown":
                out["unknown"] += 1
            else:
                out["blocked"] += 1
        return out

    @property
    def has_changes(self) -> bool:
        return any(
            sp.change.changes or (sp.change.status == "unknown" and not sp.change.read_only) for sp in self.steps
        )


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class CommandResult:
    rc: int
    stdout: bytes = b""
    stderr: bytes = b""
    duration: float = 0.0
    data: dict[str, Any] | None = None  # structured answer of a local action (llm.ask)

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", "replace")


@dataclass
class StepResult:
    """The outcome of one step instance on one host at apply time."""

    host: str
    step_id: str
    instance: str
    status: ResultStatus
    rc: int | None = None
    stdout: str = ""
    stderr: str = ""
    message: str = ""
    attempts: int = 0
    duration: float = 0.0
    data: Any = None

    @property
    def changed(self) -> bool:
        return self.status == "changed"

    def as_vars(self) -> dict[str, Any]:
        return {
            "changed": self.changed,
            "failed": self.status in ("failed", "blocked", "unreachable"),
            "skipped": self.status == "skipped",
            "status": self.status,
            "rc": self.rc,
            # like Ansible: without the trailing newline(s) (`echo hello` gives "hello")
            "stdout": self.stdout.rstrip("\r\n"),
            "stderr": self.stderr.rstrip("\r\n"),
            "stdout_lines": self.stdout.splitlines(),
            "data": self.data,
            "msg": self.message,
        }
