"""Safety: the registry from a program name to its rule check, redirect targets, and the data a
pipe feeds to the next command. Pure; imports the rule-check modules, .wrappers and .parse.
"""

from __future__ import annotations

import re

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
from runner.safety.paths import _is_block, _is_sysrq
from runner.safety.system import (
    _r_init,
    _r_interpreter,
    _r_kexec,
    _r_kill,
    _r_setprop,
    _r_shutdown,
    _r_svc,
    _r_systemctl,
)
from runner.safety.wrappers import _unwrap

_HANDLERS: dict[str, _Handler] = {
    "rm": _r_rm,
    "find": _r_find,
    "mkfs": _r_mkfs,
    "mke2fs": _r_mkfs,
    "mkswap": _r_mkfs,
    "mkdosfs": _r_mkfs,
    "mkntfs": _r_mkfs,
    "mkexfatfs": _r_mkfs,
    "cryptsetup": _r_cryptsetup,
    "dd": _r_dd,
    "dcfldd": _r_dd,
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
    **dict.fromkeys(("shutdown", "reboot", "poweroff", "halt"), _r_shutdown),
    "init": _r_init,
    "telinit": _r_init,
    "kexec": _r_kexec,
    "svc": _r_svc,
    "setprop": _r_setprop,
    "kill": _r_kill,
    "killall5": _r_kill,
    **dict.fromkeys(("perl", "ruby", "php"), _r_interpreter),
}


def _handler(name: str) -> _Handler | None:
    h = _HANDLERS.get(name)
    if h is None:
        if name.startswith(("mkfs.", "mke2fs.")):
            return _r_mkfs
        if name.startswith("python"):
            return _r_interpreter
    return h


def _redirect_rule(op: str, target: str) -> str | None:
    if op not in _WRITE_REDIRECTS:
        return None
    if _is_block(target):
        return "redirect-block-device"
    if _is_sysrq(target):
        return "power"
    return None


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
