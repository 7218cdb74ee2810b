"""Safety rule checks for the `power` rule: shutdown/reboot commands, systemd units and targets,
logind over D-Bus, kexec, suspend tools, Android power. Pure; imports .options only.
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase

from runner.safety.options import _Item, _operands, _opts

_POWER = [("rule", "power")]
_POWER_VERBS = frozenset({"poweroff", "reboot", "halt", "kexec", "soft-reboot", "emergency",
                          "rescue", "suspend", "hibernate", "hybrid-sleep",
                          "suspend-then-hibernate", "sleep"})  # fmt: skip
_POWER_TARGETS = _POWER_VERBS | {"shutdown", "ctrl-alt-del", "runlevel0", "runlevel1", "runlevel6",
                                 "final", "exit"}  # fmt: skip
_UNIT_VERBS = frozenset({"start", "restart", "isolate", "try-restart", "reload-or-restart",
                         "try-reload-or-restart", "enqueue-marked-jobs", "set-default",
                         "condrestart", "force-reload"})  # fmt: skip
_NOW_VERBS = frozenset({"enable", "reenable", "unmask"})  # with --now they start the unit


def _power_unit(unit: str) -> bool:
    """reboot.target, poweroff, systemd-reboot.service, runlevel6.target, 'reboot*'..."""
    if "*" in unit or "?" in unit or "[" in unit:
        return any(fnmatchcase(f"{t}.target", unit) or fnmatchcase(t, unit) for t in _POWER_TARGETS)
    base = unit.removesuffix(".target")
    if not unit.endswith(".target"):
        base = unit.removesuffix(".service").removeprefix("systemd-")
    return base in _POWER_TARGETS


def _r_systemctl(name: str, args: list[str]) -> list[_Item]:
    _, i = _opts(args, "HMtpnosP", ("host", "machine", "type", "property", "lines", "output",
                                       "signal", "state", "kill-whom", "message", "when", "root",
                                       "job-mode", "kill-value", "image", "what", "boot-loader-entry",
                                       "boot-loader-menu", "reboot-argument", "timestamp", "drop-in",
                                       "marked", "check-inhibitors"))  # fmt: skip
    ops = [a for a in args[i:] if not a.startswith("-")]
    if not ops:
        return []
    verb = ops[0]
    if verb in _POWER_VERBS:
        return _POWER
    if verb in _NOW_VERBS and "--now" not in args:
        return []
    if (verb in _UNIT_VERBS or verb in _NOW_VERBS) and any(_power_unit(u) for u in ops[1:]):
        return _POWER
    return []


def _r_loginctl(name: str, args: list[str]) -> list[_Item]:
    _, i = _opts(args, "HMpnos", ("host", "machine", "property", "lines", "output", "signal", "kill-whom"))
    ops = [a for a in args[i:] if not a.startswith("-")]
    return _POWER if ops and ops[0] in _POWER_VERBS else []


# logind / systemd / ConsoleKit methods that power the machine off, reboot or suspend it
_DBUS_METHOD = re.compile(
    r"(?:^|\.)(?:(?:PowerOff|Reboot|Halt|KExec|SoftReboot|Suspend|Hibernate|HybridSleep|SuspendThenHibernate"
    r"|Sleep)(?:WithFlags)?|Stop|Restart)$"
)
_DBUS_UNIT_METHOD = re.compile(r"(?:^|\.)(?:Start|Restart|TryRestart|ReloadOrRestart|Enqueue)Unit\w*$")
_DBUS_SERVICE = re.compile(r"login1|systemd1|ConsoleKit", re.I)


def _r_dbus(name: str, args: list[str]) -> list[_Item]:
    """busctl call, dbus-send, gdbus call, qdbus to logind/systemd PowerOff, Reboot, ..."""
    if name == "busctl" and "call" not in args:
        return []
    if name == "gdbus" and "call" not in args:
        return []
    text = " ".join(args)
    if not _DBUS_SERVICE.search(text):
        return []
    words = [w.split("=", 1)[-1] for w in args]
    if any(_DBUS_METHOD.search(w) for w in words):
        return _POWER
    if any(_DBUS_UNIT_METHOD.search(w) for w in words) and any(
        _power_unit(w.split(":", 1)[-1]) for w in words
    ):
        return _POWER
    return []


def _r_shutdown(name: str, args: list[str]) -> list[_Item]:
    harmless = {"--help", "--version"}
    if name == "shutdown":
        harmless |= {"-c", "-k", "--show"}
    else:
        harmless |= {"-w", "--wtmp-only"}
    return [] if harmless & set(args) else _POWER


def _r_init(name: str, args: list[str]) -> list[_Item]:
    ops = _operands(args)
    return _POWER if ops and ops[0] in ("0", "1", "6", "s", "S", "single") else []


def _r_kexec(name: str, args: list[str]) -> list[_Item]:
    quiet = {"-l", "--load", "-p", "--load-panic", "-u", "--unload", "-h", "--help", "-v",
             "--version", "-S", "--status"}  # fmt: skip
    return [] if quiet & set(args) or not args else _POWER


def _r_svc(name: str, args: list[str]) -> list[_Item]:
    if args[:1] == ["power"] and len(args) > 1 and args[1] in ("reboot", "shutdown"):
        return _POWER
    return []


def _r_setprop(name: str, args: list[str]) -> list[_Item]:
    return _POWER if args[:1] == ["sys.powerctl"] else []


_SYSRQ_KEY = re.compile(r"kernel[./]sysrq=\s*(\S*)")


def _r_sysctl(name: str, args: list[str]) -> list[_Item]:
    """sysctl [-w] kernel.sysrq=N with N != 0 arms the sysrq trigger."""
    for a in args:
        m = _SYSRQ_KEY.fullmatch(a)
        if m and m.group(1).strip("'\"") not in ("0", ""):
            return _POWER
    return []


def _r_rtcwake(name: str, args: list[str]) -> list[_Item]:
    opts, _ = _opts(args, "dmstA", ("device", "mode", "seconds", "time", "date", "adjfile"))
    keys = {k for k, _ in opts}
    if keys & {"-n", "--dry-run", "-h", "--help", "-V", "--version", "-l", "--list-modes"}:
        return []
    mode = next((v for k, v in opts if k in ("-m", "--mode")), "standby")
    return [] if mode in ("no", "on", "show", "disable") else _POWER


def _r_power_tool(name: str, args: list[str]) -> list[_Item]:
    """pm-suspend, pm-hibernate, zzz, openrc-shutdown, ...: they act when run."""
    return [] if {"-h", "--help", "-V", "--version"} & set(args) else _POWER
