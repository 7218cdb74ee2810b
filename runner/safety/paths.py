"""Safety: what a path names (/, a system directory, a home, a block device, a power file) and
which rule forbids a file destination. Pure predicates on path text; imports only the stdlib.
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
_HOME_PREFIX = re.compile(r"(~[\w.-]*|\$HOME|\$\{HOME\})(?=/|$)")
_HOMES = ("/root", "/home/user")  # where ~ may point: a climb (~/..) is judged from both
# files whose write reboots, powers off, crashes or suspends the machine
_POWER_FILES = (("proc", "sysrq-trigger"), ("sys", "power", "state"))
_WATCHDOG = re.compile(r"watchdog\d*")
_DEV_FILE_DIRS = frozenset({"shm", "mqueue", "hugepages"})  # /dev dirs where files are normal


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


def _resolve(word: str) -> list[list[str]]:
    """The components a path may name: an absolute path's own, and for a home-relative path
    that climbs (~/.., $HOME/../..) those reached from each likely home; [] otherwise."""
    comps = _comps(word)
    if comps is not None:
        return [comps]
    m = _HOME_PREFIX.match(word)
    if not m:
        return []
    rest = word[m.end() :]
    if ".." not in rest.split("/"):
        return []
    user = m.group(1)
    if user.startswith("~") and user not in ("~", "~root"):
        homes: tuple[str, ...] = ("/home/" + user[1:],)
    else:
        homes = ("/root",) if user == "~root" else _HOMES
    return [c for h in homes if (c := _comps(h + rest)) is not None]


def _protected(word: str, *, home: bool) -> bool:
    if home and _HOME.fullmatch(word):
        return True
    return any(_system(c) for c in _resolve(word))


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


def _is_power_file(path: str) -> bool:
    """/proc/sysrq-trigger, /sys/power/state or /dev/watchdog*: a write reboots, powers off,
    crashes or suspends the machine (globs that may name one count)."""
    comps = _comps(path)
    if comps is None:
        return False
    if len(comps) == 2 and _match(comps[0], ("dev",)) and (
        _WATCHDOG.fullmatch(comps[1]) or _match(comps[1], ("watchdog", "watchdog0"))
    ):
        return True
    return any(
        len(comps) == len(f) and all(_match(c, (x,)) for c, x in zip(comps, f, strict=True)) for f in _POWER_FILES
    )


def _is_sysrq_switch(path: str) -> bool:
    """/proc/sys/kernel/sysrq: writing a non-zero value arms the sysrq trigger."""
    return _comps(path) == ["proc", "sys", "kernel", "sysrq"]


def destination_rule(path: str) -> str | None:
    """The built-in rule a file destination (file/copy/template/line) breaks beyond what its
    write command (`cat > PATH`) or removal (`rm -rf PATH`) shows: 'kernel-file' for a path
    under /proc or /sys, or a /dev entry outside /dev/shm, /dev/mqueue and /dev/hugepages
    (a file step would replace a device node with a regular file). None otherwise."""
    for comps in _resolve(path):
        if not comps:
            continue
        top = comps[0]
        if _match(top, ("proc", "sys")) and len(comps) > 1:
            return "kernel-file"
        if _match(top, ("dev",)) and len(comps) > 1 and not (
            len(comps) > 2 and _match(comps[1], _DEV_FILE_DIRS)
        ):
            return "kernel-file"
    return None


def _unknown(word: str) -> bool:
    """A word whose value is only known at run time ($VAR, $(...), `...`)."""
    return "$" in word or "`" in word
