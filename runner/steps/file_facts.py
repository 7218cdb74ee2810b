"""The path facts (stat, content, sha256, exists) and the host's identity answered from a
transport's file access (SFTP requests, os calls) instead of a shell: byte for byte the
answer the POSIX shell probe in facts.py gives, or None to leave the question to it.

Imports only model and overlay: never a transport, a step kind, the planner or apply.
"""

from __future__ import annotations

import hashlib
import stat as st_
from typing import TYPE_CHECKING

from runner.model import ProbeResult
from runner.overlay import parents

if TYPE_CHECKING:
    from runner.transports.base import FileAccess, FileStat

MAX_CONTENT = 1024 * 1024  # bigger files are compared by sha256, without a diff
READ = MAX_CONTENT + 1  # what a read of a file of unknown size asks for
NOT_A_FILE = ProbeResult(1)
# shells whose probes these answers stand in for: the login user's plain sh (a `shell:` of
# a host's own, a wrapper or a chroot, may see other files: its probes go to it)
PLAIN_SHELLS = frozenset({"", "sh", "bash", "dash", "/bin/sh", "/bin/bash", "/bin/dash", "/usr/bin/bash",
                          "/usr/bin/sh", "/usr/bin/dash"})


def answerable(path: str) -> bool:
    """A path the file access resolves as the shell does: absolute, no trailing slash."""
    return path.startswith("/") and (path == "/" or not path.endswith("/")) and "\0" not in path


def _mode(s: FileStat) -> str:
    return format(st_.S_IMODE(s.mode), "o")  # as `stat -c %a`: 644, 2755, 0


def stat_answer(fs: FileAccess, path: str, digest: bool = False) -> ProbeResult | None:
    """facts.stat's POSIX answer: `link TARGET` / `directory` / `file`, then `MODE OWNER GROUP
    SIZE` (lstat), then `sha256 HEX` for a regular file when asked; or `absent[ why]`."""
    if not answerable(path):
        return None
    try:
        s = fs.lstat(path)
    except FileNotFoundError:
        return _absent(fs, path)
    except OSError:
        return None
    try:
        if st_.S_ISLNK(s.mode):
            head = "link " + fs.readlink(path).rstrip("\n")  # as "$(readlink ...)" strips them
        elif st_.S_ISDIR(s.mode):
            head = "directory"
        else:
            head = "file"  # POSIX: anything else that exists reads as a file
        owner, group = fs.user(s.uid), fs.group(s.gid)
        if owner is None or group is None:
            return None
        text = f"{head}\n{_mode(s)} {owner} {group} {s.size}\n"
        if digest:
            target: FileStat | None = s
            if st_.S_ISLNK(s.mode):  # `[ -f "$p" ]` follows a link
                try:
                    target = fs.stat(path)
                except FileNotFoundError:
                    target = None  # dangling: no digest line
            if target is not None and st_.S_ISREG(target.mode):
                hexdigest = _sha256(fs, path, target)
                if hexdigest is None:
                    return None
                text += f"sha256 {hexdigest}\n"
    except (OSError, UnicodeError):
        return None  # refused, or gone while asked: the shell says
    return ProbeResult(0, text.encode())


def _absent(fs: FileAccess, path: str) -> ProbeResult | None:
    """Why nothing is there, as the shell loop over the folders above says it."""
    said = "absent"
    try:
        for folder in parents(path):
            try:
                if st_.S_ISDIR(fs.stat(folder).mode):  # `[ -d ]` follows links
                    break
                said = f"absent notdir {folder}"
                break
            except FileNotFoundError:
                pass
            try:
                fs.lstat(folder)  # a dangling link: `[ -L ]`
                said = f"absent notdir {folder}"
                break
            except FileNotFoundError:
                said = "absent noparent"
    except OSError:
        return None
    return ProbeResult(0, (said + "\n").encode())


def _fetch(fs: FileAccess, path: str, s: FileStat) -> bytes:
    """A regular file's bytes, asked for as many as its stat says (one SFTP read request,
    none just to hear "end of file"); a size of 0 (as /proc files say) reads to the end.
    The content and the digest of one path ask alike and share the read. A file that grew
    between the stat and the read is read as long as the stat said, as one snapshot."""
    return fs.read(path, s.size if 0 < s.size <= MAX_CONTENT else READ)


def _sha256(fs: FileAccess, path: str, s: FileStat) -> str | None:
    """The digest from the bytes read here (None: too big to fetch; sha256sum on the host)."""
    if s.size > MAX_CONTENT:
        return None
    data = _fetch(fs, path, s)
    if len(data) > MAX_CONTENT:
        return None
    return hashlib.sha256(data).hexdigest()


def _regular(fs: FileAccess, path: str) -> FileStat | None:
    """stat (following links) of a regular file; None when it is not one. OSError (other than
    FileNotFoundError) goes up: the shell is asked instead."""
    try:
        s = fs.stat(path)
    except FileNotFoundError:
        return None
    return s if st_.S_ISREG(s.mode) else None


def content_answer(fs: FileAccess, path: str) -> ProbeResult | None:
    """facts.content: a regular file's bytes, rc 1 when not a file or over MAX_CONTENT."""
    if not answerable(path):
        return None
    try:
        s = _regular(fs, path)
        if s is None or s.size > MAX_CONTENT:
            return NOT_A_FILE
        data = _fetch(fs, path, s)
    except OSError:
        return None
    return NOT_A_FILE if len(data) > MAX_CONTENT else ProbeResult(0, data)


def sha256_answer(fs: FileAccess, path: str) -> ProbeResult | None:
    """facts.sha256: `HEX` of a regular file, rc 1 when not a file."""
    if not answerable(path):
        return None
    try:
        s = _regular(fs, path)
        if s is None:
            return NOT_A_FILE
        hexdigest = _sha256(fs, path, s)
    except OSError:
        return None
    return None if hexdigest is None else ProbeResult(0, (hexdigest + "\n").encode())


def exists_answer(fs: FileAccess, path: str) -> ProbeResult | None:
    """facts.exists: `test -e` (follows links)."""
    if not answerable(path):
        return None
    try:
        fs.stat(path)
    except FileNotFoundError:
        return ProbeResult(1)
    except OSError:
        return None
    return ProbeResult(0)


def identity_answer(fs: FileAccess) -> ProbeResult | None:
    """facts.identity: `USER`, `GROUP`, `UMASK` of whoever makes the files."""
    try:
        who = fs.identity()
    except OSError:
        return None
    if who is None:
        return None
    user, group, umask = who
    return ProbeResult(0, f"{user}\n{group}\n{umask:04o}\n".encode())
