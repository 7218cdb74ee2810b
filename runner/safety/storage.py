"""Safety rule checks for volumes and pools (`storage`): LVM, mdadm, ZFS, btrfs, bcachefs; and
block devices reached through relays and image tools (socat, qemu-img, mtd). Pure; imports .paths, .options.
"""

from __future__ import annotations

import itertools

from runner.safety.options import _Item, _opts, _opts_anywhere, _short_flags
from runner.safety.paths import _is_block, _unknown

_STORAGE = [("rule", "storage")]
_DEVICE_MAKERS = frozenset({"pvcreate", "pvremove", "vgcreate", "vgextend"})  # on devices
_DESTROYERS = frozenset({"vgremove", "lvremove", "lvreduce"})  # on any volume or group
_LVM_QUIET = frozenset({"-t", "--test", "-h", "--help", "--version"})


def _operands(args: list[str], short_arg: str = "", long_arg: tuple[str, ...] = ()) -> list[str]:
    return _opts_anywhere(args, short_arg, long_arg)[1]


def _device(word: str) -> bool:
    return word.startswith("/dev/") or _unknown(word)


def _r_lvm(name: str, args: list[str]) -> list[_Item]:
    """pvcreate/vgcreate/vgextend on a device; vgremove, lvremove, lvreduce, lvresize -L -SIZE."""
    if name == "lvm":
        return _r_lvm(args[0], args[1:]) if args else []
    if _LVM_QUIET & set(args):
        return []
    ops = _operands(args, "LlnsSe", ("size", "extents", "name", "select", "config", "metadatatype"))
    if name in _DEVICE_MAKERS:
        return _STORAGE if any(_device(o) for o in ops) else []
    if name in _DESTROYERS:
        return _STORAGE if ops or "--select" in args or "-S" in args else []
    if name == "lvresize":
        sizes = [b for a, b in itertools.pairwise(args) if a in ("-L", "-l", "--size", "--extents")]
        sizes += [a[2:] for a in args if a.startswith(("-L", "-l")) and len(a) > 2]
        sizes += [a.split("=", 1)[1] for a in args if a.startswith(("--size=", "--extents="))]
        return _STORAGE if any(v.startswith("-") for v in sizes) else []
    return []


_MDADM_LONG = ("create", "build", "zero-superblock", "kill-subarray")


def _r_mdadm(name: str, args: list[str]) -> list[_Item]:
    """mdadm --create/-C, --build/-B, --zero-superblock, --kill-subarray (abbreviations too)."""
    for a in args:
        if a in ("-C", "-B"):
            return _STORAGE
        if a.startswith("--"):
            key = a[2:].split("=", 1)[0]
            if len(key) >= 3 and any(w.startswith(key) for w in _MDADM_LONG):
                return _STORAGE
    return []


def _r_zpool(name: str, args: list[str]) -> list[_Item]:
    """zpool create/add (unless -n), destroy, labelclear."""
    _, i = _opts(args)
    if i >= len(args):
        return []
    verb, rest = args[i], args[i + 1 :]
    if verb in ("destroy", "labelclear"):
        return _STORAGE if rest else []
    if verb in ("create", "add"):
        return [] if "n" in _short_flags(rest) else _STORAGE
    return []


def _r_zfs(name: str, args: list[str]) -> list[_Item]:
    """zfs destroy of a file system, volume or pool (a snapshot alone is fine), or -R (clones)."""
    _, i = _opts(args)
    if i >= len(args) or args[i] != "destroy":
        return []
    rest = args[i + 1 :]
    flags = _short_flags(rest)
    if "n" in flags:
        return []
    targets = [a for a in rest if not a.startswith("-")]
    if "R" in flags or any("@" not in t and "#" not in t for t in targets):
        return _STORAGE
    return []


def _prefix(word: str, full: str, least: int = 2) -> bool:
    return len(word) >= least and full.startswith(word)


def _r_btrfs(name: str, args: list[str]) -> list[_Item]:
    """btrfs device add, replace start, check --repair/--init-*, rescue ... (prefixes too)."""
    ops = [a for a in args if not a.startswith("-")]
    if len(ops) < 2:
        return []
    group, cmd = ops[0], ops[1]
    if _prefix(group, "device", 1) and _prefix(cmd, "add", 1):
        return _STORAGE if any(_device(o) for o in ops[2:]) else []
    if _prefix(group, "replace", 3) and _prefix(cmd, "start", 2):
        return _STORAGE
    if _prefix(group, "rescue", 3) and cmd in ("zero-log", "chunk-recover", "super-recover",
                                                "fix-device-size", "clear-uuid-tree"):  # fmt: skip
        return _STORAGE
    repair = {"--repair", "--init-csum-tree", "--init-extent-tree"} & set(args)
    if (_prefix(group, "check", 2) or group == "fsck") and repair:
        return _STORAGE
    return []


def _r_bcachefs(name: str, args: list[str]) -> list[_Item]:
    if args and args[0] in ("format", "device") and any(_device(a) for a in args[1:]):
        return [("rule", "mkfs")] if args[0] == "format" else _STORAGE
    return []


_SOCAT_ARG = "btTLWrR"
_SOCAT_FILES = frozenset({"OPEN", "FILE", "GOPEN", "CREATE", "CREAT", "PIPE", "FIFO"})
_SOCAT_RUN = frozenset({"EXEC", "SYSTEM", "SHELL"})
_READ_ONLY = frozenset({"rdonly", "o-rdonly", "ro"})


def _r_socat(name: str, args: list[str]) -> list[_Item]:
    """socat: an address that is a block device written to (not rdonly, not the read side of -u/-U);
    EXEC:/SYSTEM:/SHELL: addresses run a command."""
    i, n = 0, len(args)
    flags: set[str] = set()
    while i < n and args[i].startswith("-") and args[i] != "-":
        a = args[i]
        if a in ("-lf", "-lp") or (len(a) == 2 and a[1] in _SOCAT_ARG):
            i += 1
        flags.add(a)
        i += 1
    addrs = args[i : i + 2]
    items: list[_Item] = []
    for k, addr in enumerate(addrs):
        head, sep, tail = addr.partition(":")
        kind = head.upper() if sep else ""
        if kind in _SOCAT_RUN:
            items.append(("script", tail.split(",", 1)[0] if kind == "EXEC" else tail))
            continue
        path, _, opts = (tail if kind in _SOCAT_FILES else addr).partition(",")
        if kind and kind not in _SOCAT_FILES:
            continue
        read_only = bool(_READ_ONLY & set(opts.split(","))) or ("-u" in flags and k == 0) or ("-U" in flags and k == 1)
        if not read_only and _is_block(path):
            items.insert(0, ("rule", "write-block-device"))
    return items


def _r_qemu_img(name: str, args: list[str]) -> list[_Item]:
    """qemu-img convert ... DEST or dd of=DEST onto a block device."""
    if not args:
        return []
    if args[0] == "dd":
        return [("rule", "dd-device")] if any(a.startswith("of=") and _is_block(a[3:]) for a in args) else []
    if args[0] == "convert":
        ops = _operands(args[1:], "fOotTBslmSrF", ("object", "target-image-opts", "image-opts", "bitmaps"))
        return [("rule", "write-block-device")] if len(ops) >= 2 and _is_block(ops[-1]) else []
    return []


def _r_flash(name: str, args: list[str]) -> list[_Item]:
    """flash_erase(all) /dev/mtdN; flashcp/nandwrite IMG onto a device; OpenWrt mtd erase/write."""
    if name in ("flash_erase", "flash_eraseall"):
        return [("rule", "wipe-device")] if any(a.startswith("/dev/") for a in args) else []
    if name in ("flashcp", "nandwrite"):
        return [("rule", "write-block-device")] if any(a.startswith("/dev/") for a in args) else []
    ops = [a for a in args if not a.startswith("-")]
    if ops[:1] == ["erase"] and len(ops) > 1:
        return [("rule", "wipe-device")]
    if ops[:1] == ["write"] and len(ops) > 2:
        return [("rule", "write-block-device")]
    return []


def _r_sg(name: str, args: list[str]) -> list[_Item]:
    """sg_format, sg_sanitize, sg_unmap on a device."""
    return [("rule", "wipe-device")] if any(a.startswith("/dev/") for a in args) else []


HANDLERS = {
    **dict.fromkeys(("lvm", "lvresize", *_DEVICE_MAKERS, *_DESTROYERS), _r_lvm),
    "mdadm": _r_mdadm,
    "zpool": _r_zpool,
    "zfs": _r_zfs,
    "btrfs": _r_btrfs,
    "bcachefs": _r_bcachefs,
    "socat": _r_socat,
    "qemu-img": _r_qemu_img,
    **dict.fromkeys(("flash_erase", "flash_eraseall", "flashcp", "nandwrite", "mtd"), _r_flash),
    **dict.fromkeys(("sg_format", "sg_sanitize", "sg_unmap"), _r_sg),
}
