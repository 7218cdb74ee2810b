"""Safety: the registry from a program name to its rule check, redirect targets, and the data a
pipe feeds to the next command. Pure; imports the rule-check modules, .wrappers and .parse.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from runner.safety.android import HANDLERS as _ANDROID
from runner.safety.android import recovery_file
from runner.safety.disk import (
    _r_blkdiscard,
    _r_copy,
    _r_cryptsetup,
    _r_dd,
    _r_hdparm,
    _r_mkfs,
    _r_nvme,
    _r_partition,
    _r_shred,
    _r_tee,
    _r_wipefs,
)
from runner.safety.fs import _r_chmod, _r_chown, _r_find, _r_rm
from runner.safety.lexer import _WRITE_REDIRECTS
from runner.safety.options import _base, _Handler
from runner.safety.parse import _Cmd
from runner.safety.paths import _comps, _is_block, _is_power_file, _is_sysrq_switch
from runner.safety.power import (
    _r_dbus,
    _r_init,
    _r_kexec,
    _r_loginctl,
    _r_power_tool,
    _r_rtcwake,
    _r_setprop,
    _r_shutdown,
    _r_svc,
    _r_sysctl,
    _r_systemctl,
)
from runner.safety.storage import HANDLERS as _STORAGE
from runner.safety.system import _r_interpreter, _r_kill, _r_pkill
from runner.safety.wrappers import _unwrap

_HANDLERS: dict[str, _Handler] = {
    "rm": _r_rm,
    "srm": _r_rm,
    "find": _r_find,
    "mkfs": _r_mkfs,
    "mke2fs": _r_mkfs,
    "mkswap": _r_mkfs,
    "mkdosfs": _r_mkfs,
    "mkntfs": _r_mkfs,
    "mkexfatfs": _r_mkfs,
    "cryptsetup": _r_cryptsetup,
    **dict.fromkeys(("dd", "dcfldd", "dc3dd", "ddpt", "sg_dd", "sdd"), _r_dd),
    "tee": _r_tee,
    "cp": _r_copy,
    "mv": _r_copy,
    "install": _r_copy,
    "ddrescue": _r_copy,
    "bmaptool": _r_copy,
    "shred": _r_shred,
    "wipefs": _r_wipefs,
    "blkdiscard": _r_blkdiscard,
    "hdparm": _r_hdparm,
    "nvme": _r_nvme,
    **dict.fromkeys(("fdisk", "gdisk", "cfdisk", "sfdisk", "sgdisk", "parted"), _r_partition),
    "chmod": _r_chmod,
    "chown": _r_chown,
    "chgrp": _r_chown,
    "systemctl": _r_systemctl,
    "loginctl": _r_loginctl,
    **dict.fromkeys(("busctl", "dbus-send", "gdbus", "qdbus", "qdbus6", "dbus"), _r_dbus),
    **dict.fromkeys(("shutdown", "reboot", "poweroff", "halt", "openrc-shutdown", "s6-reboot",
                     "s6-poweroff", "s6-halt"), _r_shutdown),
    **dict.fromkeys(("pm-suspend", "pm-hibernate", "pm-suspend-hybrid", "zzz", "ZZZ",
                     "systemd-shutdown"), _r_power_tool),
    "sysctl": _r_sysctl,
    "rtcwake": _r_rtcwake,
    "init": _r_init,
    "telinit": _r_init,
    "runit-init": _r_init,
    "kexec": _r_kexec,
    "svc": _r_svc,
    "setprop": _r_setprop,
    "kill": _r_kill,
    "killall5": _r_kill,
    "pkill": _r_pkill,
    "killall": _r_pkill,
    **dict.fromkeys(("perl", "ruby", "php"), _r_interpreter),
    **_STORAGE,
    **_ANDROID,
}


def _handler(name: str) -> _Handler | None:
    h = _HANDLERS.get(name)
    if h is None:
        if name.startswith(("mkfs.", "mke2fs.")):
            return _r_mkfs
        if name.startswith("python"):
            return _r_interpreter
    return h


def _redirect_rule(op: str, target: str, data: Sequence[str] = ()) -> str | None:
    """The rule a write redirection into `target` breaks; `data` is what the command's words and
    stdin say (for files whose effect depends on what is written)."""
    if op not in _WRITE_REDIRECTS:
        return None
    if _is_block(target):
        return "redirect-block-device"
    if _is_power_file(target):
        return "power"
    if _is_sysrq_switch(target) and not _writes_zero(data):
        return "power"  # arms the sysrq trigger (any value but 0)
    if recovery_file(_comps(target)) and "wipe" in " ".join(data):
        return "factory-reset"
    return None


def _writes_zero(data: Sequence[str]) -> bool:
    """Does `echo 0`, `printf '0\\n'` or `cat <<EOF 0` write just 0?"""
    words = list(data)
    if words and _base(words[0]) in ("echo", "printf", "cat"):
        words = words[1:]
    words = [w for w in words if not re.fullmatch(r"-[neE]+", w)]
    return [w.replace("\\n", "").strip() for w in words] == ["0"]


def _piped_data(prev: _Cmd) -> list[str]:
    """What `echo X |`, `printf X |` or `cat <<EOF |` feed to the next command, if literal."""
    stages, _ = _unwrap(prev.words, prev.stdin)
    if not stages:
        return list(prev.stdin)
    argv = stages[-1]
    name, args = _base(argv[0]), argv[1:]
    if name == "echo":
        while args and re.fullmatch(r"-[neE]+", args[0]):
            args = args[1:]
        return [" ".join(args).replace("\\n", "\n")]
    if name == "printf" and args:
        fmt = re.sub(r"%[-+ #0-9.]*[sbdq]", " ", args[0])
        return [" ".join([fmt, *args[1:]]).replace("\\n", "\n")]
    if name == "cat" and len(argv) == 1:
        return list(prev.stdin)
    return []
