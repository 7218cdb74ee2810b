"""Local source files of steps (copy, template, adb.push, adb.install): contained, regular, bounded.

A copy/template source resolves, symlinks included, inside the playbook's folder or a root
the operator names in OPSRUN_FILES_ROOT; every source is a regular file no bigger than the
size limit. Imports nothing from runner; reads only files on this machine.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass

ROOT_ENV = "OPSRUN_FILES_ROOT"  # extra roots, separated by ":" (os.pathsep)
SIZE_ENV = "OPSRUN_MAX_SOURCE_SIZE"  # bytes, or with a K, M or G suffix (KiB, MiB, GiB)
DEFAULT_MAX_SIZE = 16 * 1024 * 1024
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


class SourceError(Exception):
    """A source file outside the allowed roots, not a regular file, too big or unreadable."""


@dataclass(frozen=True)
class Source:
    path: str  # the resolved path that was read
    data: bytes
    private: bool  # not world-readable here: its content is kept out of diffs


def max_size(environ: Mapping[str, str] = os.environ, default: int = DEFAULT_MAX_SIZE) -> int:
    raw = environ.get(SIZE_ENV, "").strip()
    if not raw:
        return default
    number, unit = (raw[:-1], raw[-1].upper()) if raw[-1].upper() in "KMG" else (raw, "")
    if not number.isdigit():
        raise SourceError(f"{SIZE_ENV}={raw!r} is not a size (bytes, or a number with K, M or G)")
    return int(number) * _UNITS[unit]


def roots(playbook_dir: str, environ: Mapping[str, str] = os.environ) -> list[str]:
    """The playbook's folder, then every absolute folder named in OPSRUN_FILES_ROOT (resolved)."""
    out = [os.path.realpath(playbook_dir)]
    for part in environ.get(ROOT_ENV, "").split(os.pathsep):
        if part.strip():
            if not os.path.isabs(part):
                raise SourceError(f"{ROOT_ENV}: {part!r} is not an absolute path")
            out.append(os.path.realpath(part))
    return out


def _shown(text: str) -> str:
    return repr(text if len(text) <= 200 else text[:197] + "...")


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _size_text(n: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} bytes"


def contained(playbook_dir: str, path: str, what: str) -> str:
    """`path` (relative to the playbook's folder) resolved, symlinks included; SourceError
    when that lies outside the playbook's folder and the OPSRUN_FILES_ROOT folders."""
    given = str(path)
    if "\x00" in given:
        raise SourceError(f"{what} {_shown(given)} contains a NUL byte")
    resolved = os.path.realpath(os.path.join(playbook_dir, given))
    allowed = roots(playbook_dir)
    if not any(_inside(resolved, root) for root in allowed):
        shown = _shown(given) + (f" (resolves to {_shown(resolved)[1:-1]})" if resolved != given else "")
        raise SourceError(
            f"{what} {shown} is outside the playbook's folder {allowed[0]}: local files must be inside it"
            + (f" or inside {', '.join(allowed[1:])}" if allowed[1:] else f" (or inside a folder named in {ROOT_ENV})")
        )
    return resolved


def read_source(
    playbook_dir: str, src: str, what: str, default_limit: int = DEFAULT_MAX_SIZE, contain: bool = True
) -> Source:
    """Read `src` (relative to the playbook's folder) for a step; raises SourceError.
    contain=False (adb kinds: the bytes go to a device, never into a diff) skips containment."""
    given = str(src)
    if "\x00" in given:
        raise SourceError(f"{what} {_shown(given)} contains a NUL byte")
    resolved = (
        contained(playbook_dir, given, what) if contain else os.path.realpath(os.path.join(playbook_dir, given))
    )
    limit = max_size(default=default_limit)
    try:
        before = os.lstat(resolved)  # refused before any open: opening a device can act
        if not stat.S_ISREG(before.st_mode):
            raise SourceError(f"{what} {_shown(given)} is {_kind(before.st_mode)}: only regular files are read")
        if before.st_size > limit:
            raise SourceError(
                f"{what} {_shown(given)} is {before.st_size} bytes, more than the limit of {_size_text(limit)} "
                f"(raise it with {SIZE_ENV})"
            )
        fd = os.open(resolved, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise SourceError(f"{what} {given if len(given) <= 200 else _shown(given)}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
            raise SourceError(f"{what} {_shown(given)} changed while it was read: only regular files are read")
        chunks: list[bytes] = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1024 * 1024))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise SourceError(f"{what} {given if len(given) <= 200 else _shown(given)}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        raise SourceError(f"{what} {_shown(given)} grew past the limit of {_size_text(limit)} while it was read")
    return Source(resolved, data, private=not (st.st_mode & stat.S_IROTH))
