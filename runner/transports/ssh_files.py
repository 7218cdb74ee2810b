"""An SSH host's files over its SFTP session: the read-only file access probes are answered
with (lstat, readlink, a read, the owner names from /etc/passwd and /etc/group) and the SFTP
requests `sftp` actions send (mkdir, chmod, remove), and atomic uploads. No process is started
on the host.

Imports no steps, planner, apply or cli; ssh.py hands in the session and its error handling.
"""

from __future__ import annotations

import contextlib
import posixpath
import secrets
from collections.abc import Callable
from typing import Any

import paramiko

from runner.transports.base import FileStat, passwd_names, status_identity


class Names:
    """uid/gid -> names read once per connection from the host's /etc/passwd and /etc/group
    (as `stat -c %U %G` prints them for local accounts; others read as unknown)."""

    def __init__(self) -> None:
        self.users: dict[int, str] | None = None
        self.groups: dict[int, str] | None = None


class SftpFiles:
    """transports.base.FileAccess over one SFTP session, as the login user. `lost` turns a
    dead connection (paramiko's SSHException, EOFError) into the transport's ConnectError."""

    def __init__(self, sftp: paramiko.SFTPClient, names: Names, lost: Callable[[str, BaseException], Exception],
                 alive: Callable[[], bool]) -> None:
        self._sftp = sftp
        self._names = names
        self._lost = lost
        self._alive = alive

    def _do(self, what: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except (FileNotFoundError, PermissionError):
            raise
        except OSError as exc:
            if not self._alive():
                raise self._lost(what, exc) from exc
            raise
        except (paramiko.SSHException, EOFError) as exc:
            raise self._lost(what, exc) from exc

    @staticmethod
    def _stat(a: paramiko.SFTPAttributes) -> FileStat:
        if a.st_mode is None or a.st_uid is None or a.st_gid is None or a.st_size is None:
            raise OSError("the SFTP server left out attributes")
        return FileStat(a.st_mode, a.st_uid, a.st_gid, a.st_size)

    def lstat(self, path: str) -> FileStat:
        return self._stat(self._do(f"sftp lstat {path}", lambda: self._sftp.lstat(path)))

    def stat(self, path: str) -> FileStat:
        return self._stat(self._do(f"sftp stat {path}", lambda: self._sftp.stat(path)))

    def readlink(self, path: str) -> str:
        target = self._do(f"sftp readlink {path}", lambda: self._sftp.readlink(path))
        if target is None:
            raise OSError(f"{path} is not a link")
        return str(target)

    def read(self, path: str, limit: int) -> bytes:
        def read() -> bytes:
            with self._sftp.open(path, "rb") as fh:
                return bytes(fh.read(limit))

        data: bytes = self._do(f"sftp read {path}", read)
        return data

    def _table(self, path: str) -> dict[int, str]:
        try:
            return passwd_names(self.read(path, 16 * 1024 * 1024).decode("utf-8", "replace"))
        except OSError:
            return {}

    def user(self, uid: int) -> str | None:
        if self._names.users is None:
            self._names.users = self._table("/etc/passwd")
        return self._names.users.get(uid)

    def group(self, gid: int) -> str | None:
        if self._names.groups is None:
            self._names.groups = self._table("/etc/group")
        return self._names.groups.get(gid)

    def identity(self) -> tuple[str, str, int] | None:
        """The SFTP server's own user, group and umask (/proc/self/status): what the files and
        folders it makes get, and what the login shell has (sshd starts both the same way)."""
        try:
            ids = status_identity(self.read("/proc/self/status", 64 * 1024).decode("ascii", "replace"))
        except OSError:
            return None
        if ids is None:
            return None
        user, group = self.user(ids[0]), self.group(ids[1])
        return (user, group, ids[2]) if user is not None and group is not None else None


def request(sftp: paramiko.SFTPClient, method: str, path: str, mode: str | None) -> None:
    """Send one `sftp` action's request (runner.model.SFTP_METHODS). The server's refusals
    raise OSError; `remove` of a path already gone is done, as `rm -f` of it is."""
    if method == "mkdir":
        sftp.mkdir(path, int(mode, 8) if mode else 0o777)  # the server's umask applies, as for mkdir(1)
    elif method == "chmod" and mode:
        sftp.chmod(path, int(mode, 8))
    elif method == "remove":
        try:
            sftp.remove(path)
        except FileNotFoundError:
            pass
    else:
        raise OSError(f"no SFTP request {method!r}" + (" without a mode" if method == "chmod" else ""))


def put_atomic(sftp: paramiko.SFTPClient, path: str, content: bytes, mode: str | None) -> None:
    """Write `path` as the login user: a temp file beside it, its mode (`mode`, else the old
    file's), then posix-rename over it, so readers see the old or the new file, never half."""
    folder, name = posixpath.split(path)
    folder = folder or "."
    tmp = posixpath.join(folder, f".{name}.opsrun-{secrets.token_hex(4)}")
    try:
        try:
            fh = sftp.open(tmp, "wxb")
        except FileNotFoundError:  # its folder is missing: made first (one request less when not)
            makedirs(sftp, folder)
            fh = sftp.open(tmp, "wxb")
        with fh:
            fh.set_pipelined(True)
            fh.write(content)
        if mode is not None:
            sftp.chmod(tmp, int(mode, 8))
        else:
            try:
                sftp.chmod(tmp, (sftp.stat(path).st_mode or 0) & 0o7777)
            except FileNotFoundError:
                pass
        sftp.posix_rename(tmp, path)
    except BaseException:
        with contextlib.suppress(Exception):
            sftp.remove(tmp)
        raise


def makedirs(sftp: paramiko.SFTPClient, folder: str) -> None:
    try:
        sftp.stat(folder)
        return
    except FileNotFoundError:
        pass
    parent = posixpath.dirname(folder.rstrip("/"))
    if parent and parent != folder:
        makedirs(sftp, parent)
    with contextlib.suppress(OSError):
        sftp.mkdir(folder)
    sftp.stat(folder)  # raises the real reason when it still is not there
