"""An SSH host's files over its SFTP session: the read-only file access probes are answered
with (lstat, readlink, a read, the owner names asked of the server by id, else read from
/etc/passwd and /etc/group) and the SFTP requests `sftp` actions send (mkdir, chmod, remove),
and atomic uploads. No process is started on the host.

Imports no steps, planner, apply or cli; ssh.py hands in the session and its error handling.
"""

from __future__ import annotations

import contextlib
import posixpath
import secrets
import struct
from collections.abc import Callable
from typing import Any

import paramiko
from paramiko.message import Message
from paramiko.sftp import CMD_EXTENDED, CMD_EXTENDED_REPLY

from runner.errors import InvalidInput
from runner.transports.base import FileStat, passwd_names, status_identity

BY_ID = "users-groups-by-id@openssh.com"  # OpenSSH 8.9+: the server's getpwuid/getgrgid
IDENTITY_READ = 1024  # /proc/self/status is ~1.4 KiB; its Umask, Uid and Gid lines come in its first ~300 bytes


class Names:
    """uid/gid -> names, kept for the connection: asked of the SFTP server by id (one request
    for the ids not known yet: the names `stat -c %U %G` prints, from the same NSS lookups), or,
    where the server lacks that extension, read once from /etc/passwd and /etc/group (local
    accounts; others read as unknown). None: no name (the shell is asked)."""

    def __init__(self) -> None:
        self.by_id: bool | None = None  # the server answers BY_ID (None: not asked yet)
        self.user: dict[int, str | None] = {}
        self.group: dict[int, str | None] = {}
        self.users: dict[int, str] | None = None  # the tables, when read
        self.groups: dict[int, str] | None = None


def _ids(xs: list[int]) -> bytes:
    return b"".join(struct.pack(">I", x) for x in xs)


def _names(blob: bytes, count: int) -> list[str | None]:
    """BY_ID's list of names (an empty name: unknown; not UTF-8: left to the shell)."""
    m = Message(blob)
    out: list[str | None] = []
    for _ in range(count):
        raw = m.get_string()
        try:
            out.append(raw.decode("utf-8") or None)
        except UnicodeDecodeError:
            out.append(None)
    return out


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
        """Up to `limit` bytes: one read request when the file has them (or ends before), so
        a caller that knows the size from a stat asks for exactly that and skips the request
        that would only say "end of file"."""
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

    def _ask(self, uids: list[int], gids: list[int]) -> bool:
        """Ask the server the names of these ids (one BY_ID request); False: it cannot."""
        if self._names.by_id is False:
            return False

        def ask() -> tuple[list[str | None], list[str | None]] | None:
            try:
                t, msg = self._sftp._request(CMD_EXTENDED, BY_ID, _ids(uids), _ids(gids))  # type: ignore[attr-defined]
            except OSError:  # SSH_FX_OP_UNSUPPORTED and the like: not this server
                return None
            if t != CMD_EXTENDED_REPLY or msg is None:
                return None
            return _names(msg.get_string(), len(uids)), _names(msg.get_string(), len(gids))

        try:
            got = self._do(f"sftp {BY_ID}", ask)
        except (IndexError, struct.error):  # a malformed reply: not this server
            got = None
        if got is None:
            self._names.by_id = False
            return False
        self._names.by_id = True
        self._names.user.update(zip(uids, got[0], strict=True))
        self._names.group.update(zip(gids, got[1], strict=True))
        return True

    def _resolve(self, uids: list[int], gids: list[int]) -> None:
        """Know the names of these ids. A user's id is asked with the same number as a group
        (Debian, Fedora and Alpine give each user a group of its own number): the usual
        `OWNER GROUP` of a stat then costs one request."""
        uids = [u for u in dict.fromkeys(uids) if u not in self._names.user]
        gids = [g for g in dict.fromkeys(gids + uids) if g not in self._names.group]
        if (uids or gids) and not self._ask(uids, gids):
            if self._names.users is None:
                self._names.users = self._table("/etc/passwd")
            if self._names.groups is None:
                self._names.groups = self._table("/etc/group")
            for u in uids:
                self._names.user[u] = self._names.users.get(u)
            for g in gids:
                self._names.group[g] = self._names.groups.get(g)

    def user(self, uid: int) -> str | None:
        self._resolve([uid], [])
        return self._names.user[uid]

    def group(self, gid: int) -> str | None:
        self._resolve([], [gid])
        return self._names.group[gid]

    def identity(self) -> tuple[str, str, int] | None:
        """The SFTP server's own user, group and umask (/proc/self/status): what the files and
        folders it makes get, and what the login shell has (sshd starts both the same way)."""
        try:
            text = self.read("/proc/self/status", IDENTITY_READ).decode("ascii", "replace")
            ids = status_identity(text if text.endswith("\n") else text.rpartition("\n")[0])
        except OSError:
            return None
        if ids is None:
            return None
        self._resolve([ids[0]], [ids[1]])
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


def check_mode(host: str, mode: str) -> None:
    if not (isinstance(mode, str) and 3 <= len(mode) <= 4 and set(mode) <= set("01234567")):
        raise InvalidInput(f"{host}: file mode must be an octal string like '0644', not {mode!r}")


def safe_name(name: str) -> str:
    """`name` as a file-name part: letters, digits and ._- only, at most 40 characters."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:40]
