"""Safety rule checks on the whole system: power (shutdown, systemd, kexec, Android), kill-all,
fork-bomb in interpreters. Pure; imports .options only.
"""

from __future__ import annotations

import re

from runner.safety.options import _Item, _operands, _opts

_POWER_VERBS = frozenset({"poweroff", "reboot", "halt", "kexec", "soft-reboot", "emergency",
                          "rescue", "suspend", "hibernate", "hybrid-sleep",
                          "suspend-then-hibernate", "sleep"})  # fmt: skip
_POWER_TARGETS = _POWER_VERBS | {"shutdown", "ctrl-alt-del", "runlevel0", "runlevel1", "runlevel6",
                                 "final", "exit"}  # fmt: skip
_UNIT_VERBS = frozenset({"start", "restart", "isolate", "try-restart", "reload-or-restart",
                         "try-reload-or-restart", "enqueue-marked-jobs"})  # fmt: skip


def _r_systemctl(name: str, args: list[str]) -> list[_Item]:
    _, i = _opts(args, "HMtpnosPl", ("host", "machine", "type", "property", "lines", "output",
                                        "signal", "state", "kill-whom", "message", "when", "root",
                                        "job-mode"))  # fmt: skip
    ops = [a for a in args[i:] if not a.startswith("-")]
    if not ops:
        return []
    verb = ops[0]
    if verb in _POWER_VERBS:
        return [("rule", "power")]
    if verb in _UNIT_VERBS and any(u.removesuffix(".target") in _POWER_TARGETS for u in ops[1:]):
        return [("rule", "power")]
    return []


def _r_shutdown(name: str, args: list[str]) -> list[_Item]:
    harmless = {"--help", "--version"}
    if name == "shutdown":
        harmless |= {"-c", "-k", "--show"}
    else:
        harmless |= {"-w", "--wtmp-only"}
    return [] if harmless & set(args) else [("rule", "power")]


def _r_init(name: str, args: list[str]) -> list[_Item]:
    ops = _operands(args)
    return [("rule", "power")] if ops and ops[0] in ("0", "1", "6", "s", "S", "single") else []


def _r_kexec(name: str, args: list[str]) -> list[_Item]:
    quiet = {"-l", "--load", "-p", "--load-panic", "-u", "--unload", "-h", "--help", "-v",
             "--version", "-S", "--status"}  # fmt: skip
    return [] if quiet & set(args) or not args else [("rule", "power")]


def _r_svc(name: str, args: list[str]) -> list[_Item]:
    if args[:1] == ["power"] and len(args) > 1 and args[1] in ("reboot", "shutdown"):
        return [("rule", "power")]
    return []


def _r_setprop(name: str, args: list[str]) -> list[_Item]:
    return [("rule", "power")] if args[:1] == ["sys.powerctl"] else []


def _r_kill(name: str, args: list[str]) -> list[_Item]:
    if name == "killall5":
        return [] if {"-h", "--help"} & set(args) else [("rule", "kill-all")]
    i = 0
    if args and args[0] in ("-l", "-L", "--list", "--table"):
        return []
    signal = ""
    if args and args[0] in ("-s", "-n", "--signal"):
        signal, i = (args[1] if len(args) > 1 else ""), 2
    elif args and args[0].startswith("-") and args[0] != "--":
        signal, i = args[0][1:], 1
    if i < len(args) and args[i] == "--":
        i += 1
    if signal in ("0", "SIG0"):
        return []
    return [("rule", "kill-all")] if {"1", "-1"} & set(args[i:]) else []


_FORK_LOOP = re.compile(r"\bfork\b.*\b(?:while|until|loop)\b|\b(?:while|until|for|loop)\b.*\bfork\b")


def _r_interpreter(name: str, args: list[str]) -> list[_Item]:
    code = " ".join(args)
    return [("rule", "fork-bomb")] if "fork" in code and _FORK_LOOP.search(code) else []
