"""Safety rule checks on block devices: mkfs, dd-device, write-block-device, wipe-device,
partition-table. Pure; imports .paths and .options only.
"""

from __future__ import annotations

from runner.safety.options import _Item, _operands, _short_flags
from runner.safety.paths import _is_block, _is_power_file, _unknown


def _r_mkfs(name: str, args: list[str]) -> list[_Item]:
    if any(a.startswith("/dev/") or _unknown(a) for a in _operands(args)):
        return [("rule", "mkfs")]
    return []


def _r_cryptsetup(name: str, args: list[str]) -> list[_Item]:
    ops = _operands(args)
    if ops and ops[0] in ("luksFormat", "luksErase", "erase") and (
        any(a.startswith("/dev/") or _unknown(a) for a in ops[1:])
    ):
        return [("rule", "mkfs")]
    return []


def _r_dd(name: str, args: list[str]) -> list[_Item]:
    for a in args:
        key, eq, value = a.partition("=")
        if eq and key in ("of", "hof", "ofs", "phod"):
            if _is_block(value):
                return [("rule", "dd-device")]
            if _is_power_file(value):
                return [("rule", "power")]
    return []


def _r_tee(name: str, args: list[str]) -> list[_Item]:
    ops = _operands(args)
    if any(_is_block(o) for o in ops):
        return [("rule", "write-block-device")]
    if any(_is_power_file(o) for o in ops):
        return [("rule", "power")]
    return []


def _r_copy(name: str, args: list[str]) -> list[_Item]:
    target: str | None = None
    ops: list[str] = []
    it = iter(args)
    done = False
    for a in it:
        if not done and a == "--":
            done = True
        elif not done and a in ("-t", "--target-directory", "-S", "--suffix"):
            value = next(it, "")
            target = value if a in ("-t", "--target-directory") else target
        elif not done and a.startswith("--target-directory="):
            target = a.split("=", 1)[1]
        elif not done and a.startswith("-t") and len(a) > 2:
            target = a[2:]
        elif done or not a.startswith("-") or a == "-":
            ops.append(a)
    if name == "ddrescue":
        dest = ops[1] if len(ops) > 1 else None
    elif name == "bmaptool":
        dest = ops[-1] if len(ops) > 2 and ops[0] == "copy" else None
    else:
        dest = target or (ops[-1] if len(ops) >= 2 else None)
    if dest and _is_power_file(dest):
        return [("rule", "power")]
    return [("rule", "write-block-device")] if dest and _is_block(dest) else []


def _r_shred(name: str, args: list[str]) -> list[_Item]:
    return [("rule", "wipe-device")] if any(_is_block(o) for o in _operands(args)) else []


def _r_wipefs(name: str, args: list[str]) -> list[_Item]:
    flags = _short_flags(args)
    longs = {a.split("=", 1)[0] for a in args if a.startswith("--")}
    erase = "a" in flags or "o" in flags or bool(longs & {"--all", "--offset"})
    if not erase or "n" in flags or "--no-act" in longs:
        return []
    if any(o.startswith("/dev/") or _unknown(o) for o in _operands(args)):
        return [("rule", "wipe-device")]
    return []


def _r_blkdiscard(name: str, args: list[str]) -> list[_Item]:
    return [("rule", "wipe-device")] if _operands(args) else []


_HDPARM_WIPE = ("--security-erase", "--trim-sector-ranges", "--write-sector", "--make-bad-sector",
                "--fwdownload", "--dco-restore")  # fmt: skip


def _r_hdparm(name: str, args: list[str]) -> list[_Item]:
    return [("rule", "wipe-device")] if any(a.startswith(_HDPARM_WIPE) for a in args) else []


def _r_nvme(name: str, args: list[str]) -> list[_Item]:
    if args and args[0] in ("format", "sanitize", "delete-ns", "write-zeroes", "write-uncor"):
        return [("rule", "wipe-device")]
    if args and args[0] == "dsm" and {"-d", "--ad"} & set(args):
        return [("rule", "wipe-device")]  # deallocate (TRIM) ranges
    return []


_FDISK_READ = frozenset({"-l", "--list", "-x", "--list-details", "-s", "--getsz", "-h", "--help",
                         "-V", "--version", "-v"})  # fmt: skip
_SFDISK_READ = frozenset({"-l", "--list", "-d", "--dump", "-s", "--show-size", "-g",
                          "--show-geometry", "-J", "--json", "-V", "--verify", "-F",
                          "--list-free", "-T", "--list-types", "-h", "--help", "-v", "--version",
                          "-n", "--no-act"})  # fmt: skip
_SGDISK_WRITE_SHORT = frozenset("ZzondtcgGRlNemrsUuAhC")
_SGDISK_WRITE_LONG = frozenset({"--zap-all", "--zap", "--clear", "--new", "--delete", "--typecode",
                                "--change-name", "--mbrtogpt", "--randomize-guids", "--replicate",
                                "--load-backup", "--largest-new", "--move-second-header",
                                "--gpttombr", "--transpose", "--sort", "--disk-guid",
                                "--partition-guid", "--attributes", "--hybrid",
                                "--recompute-chs"})  # fmt: skip
_PARTED_WRITE = frozenset({"mklabel", "mktable", "mkpart", "mkpartfs", "rm", "resize", "resizepart",
                           "rescue", "name", "set", "toggle", "disk_set", "disk_toggle", "move",
                           "cp", "mkfs", "type"})  # fmt: skip


def _r_partition(name: str, args: list[str]) -> list[_Item]:
    ops = _operands(args)
    if not any(_is_block(o) for o in ops):
        return []
    if name in ("fdisk", "gdisk", "cfdisk"):
        write = not any(a in _FDISK_READ for a in args)
    elif name == "sfdisk":
        write = not any(a in _SFDISK_READ for a in args)
    elif name == "sgdisk":
        longs = {a.split("=", 1)[0] for a in args if a.startswith("--")}
        if "-P" in args or "--pretend" in longs:
            return []
        write = bool(_short_flags(args) & _SGDISK_WRITE_SHORT) or bool(longs & _SGDISK_WRITE_LONG)
    else:  # parted
        if {"-l", "--list"} & set(args):
            return []
        dev = next(k for k, o in enumerate(ops) if _is_block(o))
        cmds = ops[dev + 1 :]
        write = not cmds or any(c in _PARTED_WRITE for c in cmds)
    return [("rule", "partition-table")] if write else []
