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
import threading
import time
from abc import ABC
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, ClassVar

from runner.errors import Blocked, OpsrunError
from runner.model import Action, CommandResult, Host, Probe, ProbeResult

# A guard returns the name of the rule that forbids the command, or None when allowed.
CommandGuard = Callable[[str], str | None]
# Told about every process an action starts (host, transport, pid/pgid, ...): the journal
# records it so `apply --resume` can tell whether an interrupted step's process still runs.
SpawnHook = Callable[[dict[str, Any]], None]
_acting = threading.local()  # set while execute() carries out a planned action



class Transport(ABC):
    """One host's connection. Subclasses implement the underscore methods they support."""

    kind: ClassVar[str] = ""
    capabilities: ClassVar[frozenset[str]] = frozenset()  # "shell", "files", "api"

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
        sudo: bool = False,
    ) -> CommandResult:
        """Run a shell command after the safety check; return its rc and output."""
        self.check(command)
        return self._run(command, timeout=timeout, stdin=stdin, sudo=sudo)

    def put(self, path: str, content: bytes, mode: str | None = None) -> None:
        """Write `content` to `path` atomically (temp file + rename), then set `mode`."""
        self.check(f"cat > {shlex.quote(path)}")
        self._put(path, content, mode)

    def get(self, path: str) -> bytes:
        return self._get(path)

    def call(self, method: str, path: str, params: dict[str, Any] | None = None) -> Any:
        """Call the host's API (API transports only)."""
        return self._call(method, path, dict(params or {}))

    def probe(self, probes: Sequence[Probe]) -> dict[str, ProbeResult]:
        """Answer read-only probes; shell transports batch them into one round trip."""
        if not probes:
            return {}
        shell = [p for p in probes if p.command is not None]
        api = [p for p in probes if p.api is not None]
        out: dict[str, ProbeResult] = {}
        if shell:
            for p in shell:
                self.check(p.command or "")
            out.update(self._probe_shell(shell))
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
            self.put(action.path, action.content, action.mode)
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
    def _run(self, command: str, *, timeout: float | None, stdin: bytes | None, sudo: bool) -> CommandResult:
        raise OpsrunError(
            f"{self.host.name}: transport '{self.kind}' cannot run shell commands",
            hint="use a step kind made for this host's transport",
        )

    def _put(self, path: str, content: bytes, mode: str | None) -> None:
        raise OpsrunError(f"{self.host.name}: transport '{self.kind}' cannot write files")

    def _get(self, path: str) -> bytes:
        raise OpsrunError(f"{self.host.name}: transport '{self.kind}' cannot read files")

    def _call(self, method: str, path: str, params: dict[str, Any]) -> Any:
        raise OpsrunError(f"{self.host.name}: transport '{self.kind}' has no API")

    def _probe_api(self, method: str, path: str, params: dict[str, Any]) -> ProbeResult:
        return ProbeResult(0, data=self._call(method, path, params))

    def _probe_shell(self, probes: Sequence[Probe]) -> dict[str, ProbeResult]:
        """Default batching: one script, one round trip, answers parsed back per key."""
        nonce = secrets.token_hex(8)
        result = self._run(probe_script(probes, nonce), timeout=None, stdin=None, sudo=False)
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
