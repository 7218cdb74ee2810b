"""Atomic local file writes: a temp file in the same folder, flushed, then renamed over the
destination, so a reader or a crash never sees half a file. Local files only; no targets.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


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
