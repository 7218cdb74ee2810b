"""Safety rule checks for `factory-reset`: Android intents (am broadcast FACTORY_RESET/MASTER_CLEAR),
recovery --wipe_data, fastboot wipes/erases/unlocks, TWRP wipes, test harness. Pure; imports .options, .fs.
"""

from __future__ import annotations

import re

from runner.safety.fs import _r_rm
from runner.safety.options import _Item, _opts

_RESET = [("rule", "factory-reset")]
_RESET_TEXT = re.compile(r"FACTORY_RESET|MASTER_CLEAR|MasterClear(?:Receiver|Confirm)?\b")
_AM_SENDS = frozenset({"broadcast", "start", "start-activity", "startservice", "start-service",
                       "start-foreground-service", "startforegroundservice"})  # fmt: skip


def _r_am(name: str, args: list[str]) -> list[_Item]:
    """am broadcast|start ... -a android.intent.action.FACTORY_RESET (or MASTER_CLEAR, or the
    MasterClearReceiver component)."""
    if name == "cmd":
        if args[:2] == ["testharness", "enable"]:
            return _RESET  # test harness mode wipes the device
        if args[:1] != ["activity"]:
            return []
        args = args[1:]
    if not args or args[0] not in _AM_SENDS:
        return []
    return _RESET if any(_RESET_TEXT.search(a) for a in args[1:]) else []


_WIPE_FLAGS = ("--wipe_data", "--wipe_all", "--prompt_and_wipe_data", "--wipe_ab")


def _r_recovery(name: str, args: list[str]) -> list[_Item]:
    return _RESET if any(a.startswith(_WIPE_FLAGS) for a in args) else []


_FASTBOOT_ARG = "sScibnk"
_FASTBOOT_LONG = ("slot", "set-active", "os-version", "os-patch-level", "header-version", "dtb",
                  "kernel-offset", "ramdisk-offset", "tags-offset", "dtb-offset", "page-size",
                  "base", "cmdline", "id", "fs-options", "super")  # fmt: skip
_DATA_PARTS = frozenset({"userdata", "data", "metadata", "cache", "super"})


def _r_fastboot(name: str, args: list[str]) -> list[_Item]:
    """fastboot -w, erase, format, wipe-super, flashing/oem (un)lock, flash of userdata;
    fastboot reboot is `power`, like adb reboot."""
    if "-w" in args:
        return _RESET
    ops: list[str] = []
    i, n = 0, len(args)
    while i < n:
        _, j = _opts(args[i:], _FASTBOOT_ARG, _FASTBOOT_LONG)
        if j:
            i += j
            continue
        ops.append(args[i])
        i += 1
    if not ops:
        return []
    verb, rest = ops[0], ops[1:]
    if verb in ("erase", "wipe-super", "delete-logical-partition") or verb.startswith("format"):
        return _RESET if rest or verb == "wipe-super" else []
    if verb in ("flashing", "oem") and rest and rest[0] in ("unlock", "lock", "unlock_critical", "lock_critical"):
        return _RESET  # unlocking or locking the bootloader wipes user data
    if verb == "flash" and rest and rest[0].split("_", 1)[0] in _DATA_PARTS:
        return _RESET
    if verb == "reboot":
        return [("rule", "power")]  # like adb reboot
    return []


_TWRP_WIPES = frozenset({"data", "factoryreset", "userdata", "system", "internal", "all"})


def _r_twrp(name: str, args: list[str]) -> list[_Item]:
    """twrp wipe data|factoryreset|system..., and the recovery-script form `wipe data`; any
    other `wipe` is the secure-delete tool, judged like rm (wipe -rf /)."""
    if name == "twrp":
        args = args[1:] if args[:1] == ["wipe"] else []
    ops = [a for a in args if not a.startswith("-")]
    if ops and ops[0] in _TWRP_WIPES:
        return _RESET
    return _r_rm(name, args) if name == "wipe" else []


_RECOVERY_FILES = (["cache", "recovery", "command"], ["cache", "recovery", "openrecoveryscript"])


def recovery_file(comps: list[str] | None) -> bool:
    """The files recovery reads its commands from (a write with a wipe in it resets the device)."""
    return comps is not None and comps in _RECOVERY_FILES


HANDLERS = {
    "am": _r_am,
    "cmd": _r_am,
    "recovery": _r_recovery,
    "fastboot": _r_fastboot,
    "twrp": _r_twrp,
    "wipe": _r_twrp,
}
