"""The transport contract: the only way any code reaches a target.

A transport runs commands, moves files or calls an API for one host, over one connection
kept for the whole run. Every command passes the safety rules here, before it is sent,
so nothing (step, guard, verify, undo, LLM fix) gets around them. Library exceptions are
translated into runner.errors at this boundary.
"""

from __future__ import annotations

import re
import secrets
import shlex
import stat as stat_
import threading
import time
from abc import ABC
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Protocol

from runner.errors import Blocked, OpsrunError
from runner.model import Action, CommandGuard, CommandResult, Host, Probe, ProbeResult, command_env, put_check

# Told about every process an action starts (host, transport, pid/pgid, ...): the journal
# records it so `apply --resume` can tell whether an interrupted step's process still runs.
SpawnHook = Callable[[dict[str, Any]], None]
_acting = threading.local()  # set while execute() carries out a planned action

__all__ = ["CommandGuard", "FileAccess", "FileStat", "Transport", "parse_probe_output", "probe_script"]


@dataclass(frozen=True)
class FileStat:
    """What lstat/stat says of a path: st_mode (type bits included), owner ids, size."""

    mode: int
    uid: int
    gid: int
    size: int


class FileAccess(Protocol):
    """Read-only questions about a host's files, answered without starting a process there
    (SFTP requests, os calls), as the login user. A missing path raises FileNotFoundError,
    another refusal an OSError; a lost connection a TransportError."""

    def lstat(self, path: str) -> FileStat: ...

    def stat(self, path: str) -> FileStat: ...

    def readlink(self, path: str) -> str: ...

    def read(self, path: str, limit: int) -> bytes:
        """The first `limit` bytes of a file (all of it when shorter)."""
        ...

    def user(self, uid: int) -> str | None:
        """The name `stat -c %U` would print for `uid`; None when it cannot be known here."""
        ...

    def group(self, gid: int) -> str | None: ...

    def identity(self) -> tuple[str, str, int] | None:
        """(user, group, umask) that new files get, as `id -un; id -gn; umask`; None: unknown."""
        ...


def passwd_names(text: str) -> dict[int, str]:
    """uid (or gid) -> name from /etc/passwd (or /etc/group) text, the first line winning
    as getpwuid's does; NIS `+` lines and broken lines are left out."""
    out: dict[int, str] = {}
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) < 3 or not parts[0] or parts[0][0] in "+-#":
            continue
        try:
            out.setdefault(int(parts[2]), parts[0])
        except ValueError:
            continue
    return out


def status_identity(text: str) -> tuple[int, int, int] | None:
    """(effective uid, effective gid, umask) from /proc/PID/status text (Linux 4.7+)."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in ("Uid", "Gid", "Umask"):
            found[name] = value.split()
    try:
        return int(found["Uid"][1]), int(found["Gid"][1]), int(found["Umask"][0], 8)
    except (KeyError, IndexError, ValueError):
        return None


class _Remembered:
    """One probe batch's file answers, each path's asked once (stat, content and sha256
    of one path share an lstat and a read)."""

    def __init__(self, fs: FileAccess) -> None:
        self._fs = fs
        self._seen: dict[tuple[Any, ...], Any] = {}

    def _once(self, key: tuple[Any, ...], ask: Callable[[], Any]) -> Any:
        if key not in self._seen:
            try:
                self._seen[key] = ask()
            except OSError as exc:
                self._seen[key] = exc
        found = self._seen[key]
        if isinstance(found, OSError):
            raise found
        return found

    def lstat(self, path: str) -> FileStat:
        out: FileStat = self._once(("lstat", path), lambda: self._fs.lstat(path))
        return out

    def stat(self, path: str) -> FileStat:
        known = self._seen.get(("lstat", path))  # what lstat said settles stat unless it is a link
        if isinstance(known, FileNotFoundError):
            raise known
        if isinstance(known, FileStat) and not stat_.S_ISLNK(known.mode):
            return known
        out: FileStat = self._once(("stat", path), lambda: self._fs.stat(path))
        return out

    def readlink(self, path: str) -> str:
        out: str = self._once(("readlink", path), lambda: self._fs.readlink(path))
        return out

    def read(self, path: str, limit: int) -> bytes:
        out: bytes = self._once(("read", path, limit), lambda: self._fs.read(path, limit))
        return out

    def user(self, uid: int) -> str | None:
        out: str | None = self._once(("user", uid), lambda: self._fs.user(uid))
        return out

    def group(self, gid: int) -> str | None:
        out: str | None = self._once(("group", gid), lambda: self._fs.group(gid))
        return out

    def identity(self) -> tuple[str, str, int] | None:
        out: tuple[str, str, int] | None = self._once(("identity",), self._fs.identity)
        return out


class Transport(ABC):
    """One host's connection. Subclasses implement the underscore methods they support."""

    kind: ClassVar[str] = ""
    capabilities: ClassVar[frozenset[str]] = frozenset()  # from transports.CAPABILITIES

    def __init__(self, host: Host, guard: CommandGuard | None = None) -> None:
        self.host = host
        self.guard = guard
        self.on_spawn: SpawnHook | None = None

    # ------------------------------------------------------------ lifecycle
    def open(self) -> None:  # noqa: B027 - optional hook
        """Connect (idempotent). Raise ConnectError/AuthError/HostKeyError naming the host."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the connection; safe to call twice."""

    def __enter__(self) -> Transport:
        self.open()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------ safety
    def check(self, command: str) -> None:
        """Raise Blocked when a safety rule forbids `command` on this host."""
        if self.guard is not None:
            rule = self.guard(command)
            if rule:
                raise Blocked(command, rule, host=self.host.name)

    # ------------------------------------------------------------ public API
    def run(
        self,
        command: str,
        *,
        timeout: float | None = None,
        stdin: bytes | None = None,
        sudo: bool | None = None,
    ) -> CommandResult:
        """Run a shell command after the safety check; return its rc and output. Secrets the
        command references (a ShellCommand's env) go to it on stdin, ahead of `stdin`.
        `sudo`: through sudo (True) or not (False), whatever the host says; None: as it says."""
        self.check(command)
        env = command_env(command)
        if env:
            command, stdin = with_secrets(str(command), env, stdin)
        return self._run(str(command), timeout=timeout, stdin=stdin, sudo=sudo)

    def put(self, path: str, content: bytes, mode: str | None = None, *, sudo: bool | None = None) -> None:
        """Write `content` to `path` atomically (temp file + rename), then set `mode`; `sudo`
        as for run() (only transports offering "sudo" take one)."""
        self.check(put_check(path))
        if sudo is None:
            self._put(path, content, mode)
        else:
            self._put(path, content, mode, sudo=sudo)

    def get(self, path: str) -> bytes:
        return self._get(path)

    def call(self, method: str, path: str, params: dict[str, Any] | None = None) -> Any:
        """Call the host's API (API transports only)."""
        return self._call(method, path, dict(params or {}))

    def files(self, sudo: bool | None = None) -> FileAccess | None:
        """This host's file access for probes asked with `sudo` (as for run()); None: it has
        none, or it would not answer as the shell does (commands under sudo see other files)."""
        return None

    def probe(self, probes: Sequence[Probe]) -> dict[str, ProbeResult]:
        """Answer read-only probes: from the host's file access where a probe can be (no
        process started on the host), the rest batched into one shell round trip."""
        if not probes:
            return {}
        shell = [p for p in probes if p.command is not None]
        api = [p for p in probes if p.api is not None]
        out: dict[str, ProbeResult] = {}
        if shell:
            for p in shell:
                self.check(p.command or "")
            groups: dict[bool | None, list[Probe]] = {}  # a step's own sudo: one more round trip
            for p in shell:
                groups.setdefault(p.sudo, []).append(p)
            for sudo, group in groups.items():
                rest = group
                fs = self.files(sudo) if any(p.files is not None for p in group) else None
                if fs is not None:  # only where the file access sees what this group's shell sees
                    remembered, rest = _Remembered(fs), []
                    for p in group:
                        answer = p.files(remembered) if p.files is not None else None
                        if answer is None:
                            rest.append(p)
                        else:
                            out[p.key] = answer
                if rest:
                    out.update(self._probe_shell(rest) if sudo is None else self._probe_shell(rest, sudo=sudo))
        for p in api:
            assert p.api is not None
            method, path, params = p.api
            out[p.key] = self._probe_api(method, path, dict(params))
        return out

    def execute(self, action: Action, *, timeout: float | None = None) -> CommandResult:
        """Carry out one planned action."""
        start = time.monotonic()
        if action.kind == "cmd":
            _acting.on = True
            try:
                return self.run(action.command, timeout=timeout, stdin=action.stdin, sudo=action.sudo)
            finally:
                _acting.on = False
        if action.kind == "put":
            self.put(action.path, action.content, action.mode, sudo=action.sudo)
            return CommandResult(0, duration=time.monotonic() - start)
        if action.kind == "sftp":
            self.check(action.checked_as())
            failed = self._sftp_request(action.method, action.path, action.mode, sudo=action.sudo)
            if failed:
                return CommandResult(1, stderr=f"{action.display()}: {failed}\n".encode(),
                                     duration=time.monotonic() - start)
            return CommandResult(0, duration=time.monotonic() - start)
        if action.kind == "api":
            data = self._call(action.method, action.path, dict(action.params))
            return CommandResult(0, stdout=_json_bytes(data), duration=time.monotonic() - start)
        raise OpsrunError(f"{self.host.name}: transport '{self.kind}' cannot do '{action.kind}' actions")

    def stop_running(self) -> None:  # noqa: B027 - optional hook
        """End the commands running now (opsrun was told to stop at once); other threads
        waiting on them get their (failed) results. Safe to call from a signal handler."""

    def _spawned(self, **info: Any) -> None:
        """A transport calls this once an action's process runs (probes are not reported)."""
        if self.on_spawn is not None and getattr(_acting, "on", False):
            self.on_spawn({"host": self.host.name, "transport": self.kind, **info})

    # ------------------------------------------------------------ to implement
    def _run(self, command: str, *, timeout: float | None, stdin: bytes | None, sudo: bool | None) -> CommandResult:
        raise OpsrunError(
            f"{self.host.name}: transport '{self.kind}' cannot run shell commands",
            hint="use a step kind made for this host's transport",
        )

    def _put(self, path: str, content: bytes, mode: str | None, *, sudo: bool | None = None) -> None:
        raise OpsrunError(f"{self.host.name}: transport '{self.kind}' cannot write files")

    def _sftp_request(self, method: str, path: str, mode: str | None, *, sudo: bool | None = None) -> str:
        """Send one SFTP request (model.SFTP_METHODS); "" when done, else why it failed."""
        raise OpsrunError(f"{self.host.name}: transport '{self.kind}' cannot send SFTP requests")

    def _get(self, path: str) -> bytes:
        raise OpsrunError(f"{self.host.name}: transport '{self.kind}' cannot read files")

    def _call(self, method: str, path: str, params: dict[str, Any]) -> Any:
        raise OpsrunError(f"{self.host.name}: transport '{self.kind}' has no API")

    def _probe_api(self, method: str, path: str, params: dict[str, Any]) -> ProbeResult:
        return ProbeResult(0, data=self._call(method, path, params))

    def _probe_shell(self, probes: Sequence[Probe], *, sudo: bool | None = None) -> dict[str, ProbeResult]:
        """Default batching: one script, one round trip, answers parsed back per key."""
        nonce = secrets.token_hex(8)
        script, stdin = probe_script(probes, nonce), None
        env = command_env(*(p.command for p in probes))
        if env:
            script, stdin = with_secrets(script, env, None)
        result = self._run(script, timeout=None, stdin=stdin, sudo=sudo)
        answers = parse_probe_output(result.stdout, nonce)
        missing = [p.key for p in probes if p.key not in answers]
        if missing:
            err = result.err.strip()[-500:]
            raise OpsrunError(
                f"{self.host.name}: probe script failed (rc {result.rc}) before answering "
                f"{', '.join(missing[:3])}" + (f": {err}" if err else ""),
                hint="the host needs a POSIX sh (with mktemp or a writable /tmp)",
            )
        return answers


# Reads "<number of lines>\n<lines>" per secret from stdin into exported variables. sh's
# `read` takes a pipe byte by byte, so the command's own stdin after them is left intact.
# Builtins only (read, [, export): no value ever reaches a process's argv.
_ENV_READER_SH = (
    "__opsrun_read() { IFS= read -r __opsrun_n || return 1; __opsrun_v=; "
    'while [ "$__opsrun_n" -gt 0 ]; do IFS= read -r __opsrun_l || return 1; '
    '__opsrun_v="$__opsrun_v$__opsrun_l"; __opsrun_n=$((__opsrun_n - 1)); '
    '[ "$__opsrun_n" -gt 0 ] && __opsrun_v="$__opsrun_v\n"; done; return 0; }\n'
)


def with_secrets(command: str, env: Sequence[tuple[str, str]], stdin: bytes | None) -> tuple[str, bytes]:
    """`command` preceded by a preamble that reads the secrets from stdin, and the stdin
    that carries them (then the command's own)."""
    reads = " && ".join(f'__opsrun_read && {name}="$__opsrun_v" && export {name}' for name, _ in env)
    preamble = (
        _ENV_READER_SH
        + f"{{ {reads}; }} || {{ echo 'opsrun: could not read the secrets from stdin' >&2; exit 125; }}\n"
        + "unset __opsrun_n __opsrun_v __opsrun_l; unset -f __opsrun_read\n"
    )
    data = b"".join(
        f"{value.count(chr(10)) + 1}\n{value}\n".encode() for _, value in env
    )
    return preamble + command, data + (stdin or b"")


def _json_bytes(data: Any) -> bytes:
    import json

    return json.dumps(data, default=str).encode()


def probe_script(probes: Sequence[Probe], nonce: str = "") -> str:
    """A POSIX sh script that runs each probe in a subshell and prints its stdout raw,
    framed by lines carrying a per-batch random nonce, then its rc and stderr:

        @@NONCE KEY\n<stdout>\n@@NONCE KEY RC\n<stderr>\n@@NONCE .\n

    Only a command's own processes fork (plus `cat` when a probe wrote to stderr): no
    base64, no temp file per probe. Keys must not contain spaces."""
    n = nonce or "0"
    lines = ['t=$(mktemp 2>/dev/null || echo /tmp/.opsrun-probe.$$)']
    for p in probes:
        k = shlex.quote(p.key)
        lines.append(f"printf '@@%s %s\\n' {n} {k}")
        lines.append(f'( {p.command}\n) </dev/null 2>"$t"; rc=$?')
        lines.append(f"printf '\\n@@%s %s %s\\n' {n} {k} \"$rc\"; [ -s \"$t\" ] && cat \"$t\"; "
                     f"printf '\\n@@%s .\\n' {n}")
    lines.append('rm -f "$t"')
    return "\n".join(lines) + "\n"


def parse_probe_output(stdout: bytes, nonce: str = "") -> dict[str, ProbeResult]:
    n = re.escape((nonce or "0").encode())
    pattern = re.compile(
        rb"@@" + n + rb" (\S+)\n(.*?)\n@@" + n + rb" \1 (-?\d+)\n(.*?)\n@@" + n + rb" \.\n", re.S
    )
    out: dict[str, ProbeResult] = {}
    for m in pattern.finditer(stdout):
        out[m.group(1).decode("utf-8", "replace")] = ProbeResult(int(m.group(3)), m.group(2), m.group(4))
    return out
