"""The local machine as a target: commands through /bin/sh, files written in place.

No connection to keep; files are written atomically (temp file in the same folder, then
rename) so a crash never leaves half a file; file probes are answered with os calls. Every
command runs in its own process group, which a watchdog process ends if opsrun dies (even by
SIGKILL) while it runs.
"""

from __future__ import annotations

import atexit
import contextlib
import grp
import os
import pwd
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, ClassVar

from runner.errors import CommandTimeout, OpsrunError
from runner.files import write_atomic
from runner.model import CommandResult
from runner.transports import CAPABILITIES
from runner.transports.base import FileAccess, FileStat, Transport, status_identity


class LocalTransport(Transport):
    kind: ClassVar[str] = "local"
    capabilities: ClassVar[frozenset[str]] = CAPABILITIES["local"]

    def _sudo(self, sudo: bool | None) -> bool:
        """Through sudo: a step's own `sudo:` when it has one, else the host's; never as root."""
        wanted = bool(self.host.settings.get("sudo")) if sudo is None else sudo
        return wanted and os.geteuid() != 0

    def _run(self, command: str, *, timeout: float | None, stdin: bytes | None, sudo: bool | None) -> CommandResult:
        shell = str(self.host.settings.get("shell") or "/bin/sh")
        if self._sudo(sudo):
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
        started = process_start(proc.pid)
        _WATCHDOG.watch(proc.pid, started)
        try:
            self._spawned(pid=proc.pid, pgid=proc.pid, start=started, boot=boot_id(), machine=socket.gethostname())
            out, err = proc.communicate(input=stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise CommandTimeout(self.host.name, f"command timed out after {timeout:g}s: {command}") from None
        except BaseException:
            _kill_group(proc)
            raise
        finally:
            _WATCHDOG.forget(proc.pid)
        return CommandResult(proc.returncode, out, err, time.monotonic() - start)

    def stop_running(self) -> None:
        _WATCHDOG.stop_all()

    def files(self, sudo: bool | None = None) -> FileAccess | None:
        """os calls as opsrun's own user; not for probes whose commands run under sudo."""
        return None if self._sudo(sudo) else _OS_FILES

    def _put(self, path: str, content: bytes, mode: str | None, *, sudo: bool | None = None) -> None:
        if self._sudo(sudo):
            self._put_sudo(path, content, mode)
            return
        dest = Path(path)
        try:
            if mode is not None:
                perms: int | None = int(mode, 8)
            else:  # keep an existing file's mode; a new one gets the umask's
                perms = dest.stat().st_mode & 0o7777 if dest.exists() else None
            write_atomic(dest, content, mode=perms, make_parents=True)
        except OSError as exc:
            raise OpsrunError(f"{self.host.name}: cannot write {path}: {exc.strerror or exc}") from exc

    def _put_sudo(self, path: str, content: bytes, mode: str | None) -> None:
        """Write as root: the bytes go to a root shell on stdin, into a temp file beside `path`
        (an existing file's owner and mode kept), renamed over it."""
        if mode is not None and not (3 <= len(mode) <= 4 and set(mode) <= set("01234567")):
            raise OpsrunError(f"{self.host.name}: file mode must be an octal string like '0644', not {mode!r}")
        script = "\n".join([
            "set -e",
            f"dest={shlex.quote(path)}",
            'd=$(dirname -- "$dest"); mkdir -p -- "$d"',
            't=$(mktemp "$d/.opsrun-put.XXXXXX"); trap \'rm -f -- "$t"\' EXIT',
            'cat > "$t"',
            'if [ -e "$dest" ]; then chown "$(stat -c %u:%g -- "$dest")" "$t"; chmod "$(stat -c %a -- "$dest")" "$t"; '
            'else chmod "$(printf %o $((0666 & ~$(umask))))" "$t"; fi',
            f'chmod {mode} "$t"' if mode is not None else ":",
            'mv -f -- "$t" "$dest"; trap - EXIT',
        ])
        result = self._run(script, timeout=None, stdin=content, sudo=True)
        if result.rc != 0:
            raise OpsrunError(f"{self.host.name}: cannot write {path} (sudo): {result.err.strip()[-300:]}")

    def _get(self, path: str) -> bytes:
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise OpsrunError(f"{self.host.name}: cannot read {path}: {exc.strerror or exc}") from exc


class _OsFiles:
    """File probes of this machine with os calls, as opsrun's own user (who runs the shell)."""

    @staticmethod
    def _stat(call: Callable[[str], os.stat_result], path: str) -> FileStat:
        try:
            s = call(path)
        except NotADirectoryError as exc:  # a file above it: nothing there, as over SFTP
            raise FileNotFoundError(exc.errno, exc.strerror, path) from exc
        return FileStat(s.st_mode, s.st_uid, s.st_gid, s.st_size)

    def lstat(self, path: str) -> FileStat:
        return self._stat(os.lstat, path)

    def stat(self, path: str) -> FileStat:
        return self._stat(os.stat, path)

    def readlink(self, path: str) -> str:
        return os.fsdecode(os.readlink(path))

    def read(self, path: str, limit: int) -> bytes:
        with open(path, "rb") as fh:
            return fh.read(limit)

    def user(self, uid: int) -> str | None:
        try:
            return pwd.getpwuid(uid).pw_name
        except KeyError:
            return None

    def group(self, gid: int) -> str | None:
        try:
            return grp.getgrgid(gid).gr_name
        except KeyError:
            return None

    def identity(self) -> tuple[str, str, int] | None:
        try:  # the umask without setting it (os.umask would race other threads' files)
            ids = status_identity(Path("/proc/self/status").read_text())
        except OSError:
            return None
        if ids is None:
            return None
        user, group = self.user(os.geteuid()), self.group(os.getegid())
        return (user, group, ids[2]) if user is not None and group is not None else None


_OS_FILES = _OsFiles()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


# ---------------------------------------------------------------- processes and the watchdog


def boot_id() -> str:
    """This boot of this machine (a pid from an earlier boot names nothing now)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_start(pid: int) -> int:
    """The process's start time in clock ticks since boot (with the pid, it names one process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
        return int(stat[stat.rindex(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return 0


def _stat(pid: int | str) -> list[bytes]:
    """/proc/PID/stat fields after the command name: [state, ppid, pgrp, ...]; [] if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return []
    return stat[stat.rindex(b")") + 2 :].split()


def group_alive(pgid: int, start: int, boot: str) -> bool:
    """Does the process group an earlier opsrun started (leader `pgid`, started at `start`
    in boot `boot`) still have a live process? A pid is not reused while its group exists,
    so a leader with another start time means the group is gone; zombies do not count."""
    if pgid <= 1 or (boot and boot != boot_id()):
        return False
    leader = _stat(pgid)
    if leader and start and len(leader) > 19 and int(leader[19]) != start:
        return False
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(entry)
            if len(fields) > 2 and fields[2] == str(pgid).encode() and fields[0] != b"Z":
                return True
    return False


# The watchdog: a tiny separate Python (own session, so a terminal's Ctrl-C does not reach it)
# that reads "+PGID START" / "-PGID" lines on stdin. When stdin ends - opsrun exited or was
# killed, however - it sends TERM, then KILL, to every group still listed and still the same.
_WATCHDOG_CODE = r"""# opsrun watchdog
import os, signal, sys, time
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
def start(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as fh:
            st = fh.read()
        return int(st[st.rindex(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None
groups = {}
for line in sys.stdin:
    op, _, rest = line.strip().partition(" ")
    try:
        if op.startswith("+"):
            groups[int(op[1:])] = int(rest or 0)
        elif op.startswith("-"):
            groups.pop(int(op[1:]), None)
    except ValueError:
        pass
for sig in (signal.SIGTERM, signal.SIGKILL):
    left = 0
    for pg, st in list(groups.items()):
        now = start(pg)
        if now is not None and st and now != st:
            continue  # the leader's pid names another process now: the group is gone
        try:
            os.killpg(pg, sig)
            left += 1
        except OSError:
            groups.pop(pg, None)
    if not left:
        break
    time.sleep(GRACE)
"""
WATCHDOG_GRACE = 1.0  # seconds between TERM and KILL when opsrun died


class _Watchdog:
    """One per opsrun process, started with the first local command."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._pipe: IO[str] | None = None
        self._pid = 0
        self._running: dict[int, int] = {}  # pgid -> start, of commands running now

    def _send(self, line: str) -> None:
        with self._lock:
            if self._proc is None or self._pid != os.getpid():  # first use, or a forked child
                self._start()
            if self._pipe is None:
                return
            try:
                self._pipe.write(line + "\n")
                self._pipe.flush()
            except (OSError, ValueError):
                self._pipe = None  # the watchdog is gone: commands still run, unguarded

    def _start(self) -> None:
        self._pid = os.getpid()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _WATCHDOG_CODE.replace("GRACE", repr(WATCHDOG_GRACE))],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                text=True,
            )
            self._pipe = self._proc.stdin
        except OSError:
            self._proc, self._pipe = None, None

    def watch(self, pgid: int, start: int) -> None:
        self._running[pgid] = start
        self._send(f"+{pgid} {start}")

    def forget(self, pgid: int) -> None:
        self._running.pop(pgid, None)
        self._send(f"-{pgid}")

    def stop_all(self) -> None:
        """TERM every command group running now (the second Ctrl-C / SIGTERM)."""
        for pgid in list(self._running):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGTERM)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None


_WATCHDOG = _Watchdog()


def _stop_watchdog() -> None:
    """At a normal exit: close its stdin (nothing left to kill) and reap it."""
    proc = _WATCHDOG._proc
    if proc is not None and _WATCHDOG._pid == os.getpid():
        with contextlib.suppress(Exception):
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(timeout=WATCHDOG_GRACE * 2 + 1)


atexit.register(_stop_watchdog)
