"""Atomic local file writes (a temp file in the same folder, flushed, then renamed over the
destination) and private state folders (0700, files 0600, symlinks refused). Local files only;
no targets; imports only runner.errors.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from runner.errors import OpsrunError

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def default_mode() -> int:
    """The mode a new file gets under this process's umask."""
    current = os.umask(0)
    os.umask(current)
    return 0o666 & ~current


def write_atomic(
    dest: Path,
    data: bytes,
    *,
    mode: int | None = None,
    mtime: float | None = None,
    fsync: bool = True,
    make_parents: bool = False,
) -> None:
    """Replace `dest` with `data` in one rename. `mode` None: what a new file would get."""
    if make_parents:
        dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.chmod(tmp, default_mode() if mode is None else mode)
        if mtime is not None:
            os.utime(tmp, (mtime, mtime))
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _refuse_link(path: Path) -> None:
    raise OpsrunError(
        f"{path} is a symbolic link: opsrun keeps its state only in real folders",
        hint=f"remove the link ({path}) or point OPSRUN_STATE_DIR at a real folder",
    )


def private_dir(path: Path, root: Path | None = None) -> Path:
    """Make `path` a folder only its owner can enter (0700), with every folder from `root`
    (default: `path` itself) down to it; a symlink anywhere there is refused, never followed."""
    path = Path(path)
    root = Path(root) if root is not None else path
    parts = [root, *(root / rel for rel in _steps(path, root))]
    for folder in parts:
        try:
            os.mkdir(folder, PRIVATE_DIR)
        except FileExistsError:
            pass
        except FileNotFoundError:  # the root's own parents: made the ordinary way
            folder.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(folder, PRIVATE_DIR)
        st = os.lstat(folder)
        if stat.S_ISLNK(st.st_mode):
            _refuse_link(folder)
        if not stat.S_ISDIR(st.st_mode):
            raise OpsrunError(f"{folder} is not a folder", hint="move it away: opsrun keeps its state there")
        if st.st_mode & 0o077 and st.st_uid == os.geteuid():
            os.chmod(folder, PRIVATE_DIR)
    return path


def _steps(path: Path, root: Path) -> list[Path]:
    try:
        rel = path.relative_to(root)
    except ValueError:
        return []
    out: list[Path] = []
    acc = Path()
    for part in rel.parts:
        acc = acc / part
        out.append(acc)
    return out


def open_private(path: Path, flags: int) -> int:
    """os.open for a state file: created 0600, an existing one tightened to 0600, and a
    symlink in its place refused (O_NOFOLLOW) rather than written through."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE)
    except OSError as exc:
        if os.path.islink(path):
            _refuse_link(Path(path))
        raise exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OpsrunError(f"{path} is not a regular file", hint="move it away: opsrun keeps its state there")
        if st.st_mode & 0o077 and st.st_uid == os.geteuid():
            os.fchmod(fd, PRIVATE_FILE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_private(dest: Path, data: bytes) -> None:
    """write_atomic with mode 0600; a symlink at `dest` is replaced, never followed."""
    write_atomic(Path(dest), data, mode=PRIVATE_FILE)
