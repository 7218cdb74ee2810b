"""The local machine as a target: commands through /bin/sh, files written in place.

No connection to keep; files are written atomically (temp file in the same folder, then
rename) so a crash never leaves half a file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import ClassVar

from runner.errors import CommandTimeout, OpsrunError
from runner.files import write_atomic
from runner.model import CommandResult
from runner.transports.base import Transport


class LocalTransport(Transport):
    kind: ClassVar[str] = "local"
    capabilities: ClassVar[frozenset[str]] = frozenset({"shell", "files"})

    def _run(self, command: str, *, timeout: float | None, stdin: bytes | None, sudo: bool) -> CommandResult:
        shell = str(self.host.settings.get("shell") or "/bin/sh")
        if sudo and os.geteuid() != 0:
            argv = ["sudo", "-n", "--", shell, "-c", command]
        else:
            argv = [shell, "-c", command]
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # so a timeout can kill the whole process group
            )
        except OSError as exc:
            raise OpsrunError(f"{self.host.name}: cannot start {shell}: {exc}") from exc
        try:
            out, err = proc.communicate(input=stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise CommandTimeout(self.host.name, f"command timed out after {timeout:g}s: {command}") from None
        except BaseException:
            _kill_group(proc)
            raise
        return CommandResult(proc.returncode, out, err, time.monotonic() - start)

    def _put(self, path: str, content: bytes, mode: str | None) -> None:
        dest = Path(path)
        try:
            if mode is not None:
                perms: int | None = int(mode, 8)
            else:  # keep an existing file's mode; a new one gets the umask's
                perms = dest.stat().st_mode & 0o7777 if dest.exists() else None
            write_atomic(dest, content, mode=perms, make_parents=True)
        except OSError as exc:
            raise OpsrunError(f"{self.host.name}: cannot write {path}: {exc.strerror or exc}") from exc

    def _get(self, path: str) -> bytes:
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise OpsrunError(f"{self.host.name}: cannot read {path}: {exc.strerror or exc}") from exc


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
