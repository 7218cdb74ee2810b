"""Safety: what a path names (/, a system directory, a home, a block device, the sysrq trigger).

Pure predicates on path text; imports only the standard library.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from fnmatch import fnmatchcase

_ROOT_DIRS = frozenset({
    "bin", "boot", "dev", "etc", "home", "lib", "lib32", "lib64", "libx32", "media", "mnt",
    "opt", "proc", "root", "run", "sbin", "snap", "srv", "sys", "usr", "var",
    "data", "system", "vendor", "sdcard", "storage",  # Android
})  # fmt: skip
_SECOND_DIRS = frozenset({
    ("usr", d) for d in ("bin", "sbin", "lib", "lib32", "lib64", "libx32", "libexec", "local",
                         "share", "include", "src")
} | {("var", "lib")})  # fmt: skip
_MERGED_USR = frozenset({"bin", "sbin", "lib", "lib32", "lib64", "libx32"})
_HOME = re.compile(r"(?:~[\w.-]*|\$HOME|\$\{HOME\})(?:/+\.?)*(?:/\*)?/*")
_GLOB_CHARS = frozenset("*?[")
_BLOCK = re.compile(
    r"(?:s|h|v|xv)d[a-z]+\d*|nvme\d+n\d+(?:p\d+)?|mmcblk\d+(?:p\d+|boot\d+)?|md\d+(?:p\d+)?"
    r"|dm-\d+|loop\d+|nbd\d+(?:p\d+)?|rbd\d+|zd\d+|zram\d+|ram\d+|pmem\d+|bcache\d+|drbd\d+"
    r"|sr\d+|sg\d+|mtd\d+|mtdblock\d+|ubi\d+(?:_\d+)?|ubiblock\d+(?:_\d+)?|mem|kmem|port|root"
    r"|(?:disk|mapper|block|zvol|md|bcache|drbd|rbd)/.+"
)
_BLOCK_SAMPLES = ("sda", "sda1", "hda", "vda", "xvda", "nvme0n1", "mmcblk0", "md0", "dm-0", "loop0")
_DEV_SAFE_DIRS = frozenset({
    "pts", "fd", "shm", "mqueue", "hugepages", "snd", "input", "net", "bus", "char", "cpu",
    "dri", "serial", "v4l", "usb", "vfio", "tcp", "udp", "dma_heap", "cpu_dma_latency",
})  # fmt: skip
_SYSRQ = ["proc", "sysrq-trigger"]


def _comps(path: str) -> list[str] | None:
    """An absolute path's components, '.' and '..' resolved lexically; None if relative."""
    if not path.startswith("/"):
        return None
    out: list[str] = []
    for c in path.split("/"):
        if c in ("", "."):
            continue
        if c == "..":
            if out:
                out.pop()
            continue
        out.append(c)
    return out


def _match(comp: str, names: Iterable[str]) -> bool:
    if _GLOB_CHARS.isdisjoint(comp):
        return comp in names
    return any(fnmatchcase(nm, comp) for nm in names)


def _whole(comp: str) -> bool:
    """A glob that matches every entry of a directory (*, **, *?)."""
    return "*" in comp and set(comp) <= {"*", "?"}


def _system(comps: list[str]) -> bool:
    """/, a top-level system directory, a whole /usr/<x> or /var/lib, or all of their content."""
    n = len(comps)
    if n == 0:
        return True
    if n == 1:
        return _match(comps[0], _ROOT_DIRS)
    second = any(_match(comps[0], (a,)) and _match(comps[1], (b,)) for a, b in _SECOND_DIRS)
    if n == 2:
        return second or (_whole(comps[1]) and _match(comps[0], _ROOT_DIRS))
    return n == 3 and _whole(comps[2]) and second


def _protected(word: str, *, home: bool) -> bool:
    if home and _HOME.fullmatch(word):
        return True
    comps = _comps(word)
    return comps is not None and _system(comps)


def _is_block(path: str) -> bool:
    comps = _comps(path)
    if not comps or comps[0] != "dev" or len(comps) < 2:
        return False
    rest = comps[1:]
    if len(rest) == 1 and not _GLOB_CHARS.isdisjoint(rest[0]):
        return any(fnmatchcase(d, rest[0]) for d in _BLOCK_SAMPLES)
    if _BLOCK.fullmatch("/".join(rest)):
        return True
    return len(rest) == 2 and rest[0] not in _DEV_SAFE_DIRS  # LVM: /dev/<vg>/<lv>


def _is_sysrq(path: str) -> bool:
    return _comps(path) == _SYSRQ


def _unknown(word: str) -> bool:
    """A word whose value is only known at run time ($VAR, $(...), `...`)."""
    return "$" in word or "`" in word
