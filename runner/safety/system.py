"""Safety rule checks on every process: kill-all (kill, killall5, pkill, killall) and fork-bomb
in interpreters. Pure; imports .options only.
"""

from __future__ import annotations

import re

from runner.safety.options import _Item, _opts

_LIST_OPTS = frozenset({"-l", "-L", "--list", "--table"})
_PID = re.compile(r"([-+]?)0*(\d+)")


def _zero_signal(sig: str | None) -> bool:
    if sig is None:
        return False
    s = sig.upper().removeprefix("SIG")
    return s.isdigit() and int(s) == 0


def _r_kill(name: str, args: list[str]) -> list[_Item]:
    """kill-all: a signal to PID -1 (every process) or 1 (init), in any spelling:
    kill -9 -01, kill -s KILL -1, kill -KILL -- -1, kill --signal=9 -- -1."""
    if name == "killall5":
        return [] if {"-h", "--help"} & set(args) else [("rule", "kill-all")]
    signal: str | None = None
    i, n = 0, len(args)
    while i < n:
        a = args[i]
        if a in _LIST_OPTS or a in ("-p", "--pid"):
            return []  # lists signals or prints pids: sends nothing
        if a in ("-s", "-n", "--signal"):
            signal, i = (args[i + 1] if i + 1 < n else ""), i + 2
        elif a.startswith("--signal="):
            signal, i = a.split("=", 1)[1], i + 1
        elif a in ("-q", "--queue"):
            i += 2
        elif a == "--timeout":
            i += 3
        elif a in ("-a", "--all", "--verbose", "-r", "--require-handler"):
            i += 1
        elif a == "--":
            i += 1
            break
        elif a.startswith("-") and len(a) > 1 and signal is None:
            signal, i = a[1:], i + 1
        else:
            break
    if _zero_signal(signal):
        return []
    for p in args[i:]:
        m = _PID.fullmatch(p)
        if m and int(m.group(2)) == 1:
            return [("rule", "kill-all")]  # -1: every process; 1: init
    return []


_PROC_NAMES = ("systemd", "sshd", "bash", "kthreadd", "cron", "agetty", "rsyslogd", "dbus-daemon")
_PROC_LINES = ("/sbin/init splash", "sshd: /usr/sbin/sshd -D [listener]", "-bash", "[kthreadd]",
               "/usr/sbin/cron -f", "/sbin/agetty -o -p -- \\u --noclear tty1 linux")  # fmt: skip
_SIGNALS = ("HUP|INT|QUIT|ILL|TRAP|ABRT|IOT|BUS|FPE|KILL|USR1|SEGV|USR2|PIPE|ALRM|TERM|STKFLT|CHLD|CLD|CONT"
            "|STOP|TSTP|TTIN|TTOU|URG|XCPU|XFSZ|VTALRM|PROF|WINCH|IO|POLL|PWR|SYS|EMT|LOST|INFO|RTMIN|RTMAX")
_SIGNAL_ARG = re.compile(rf"-(?:\d+|(?:SIG)?(?:{_SIGNALS})(?:[+-]\d+)?)", re.I)


def _matches_all(pattern: str, *, full: bool, icase: bool, exact: bool) -> bool:
    """Would this process pattern (an extended regex) select every process?"""
    try:
        rx = re.compile(pattern, re.I if icase else 0)
    except re.error:
        return False
    samples = _PROC_LINES if full else _PROC_NAMES
    hit = rx.fullmatch if exact else rx.search
    return all(hit(s) for s in samples)


def _root_user(value: str | None) -> bool:
    return value is not None and any(u.strip() in ("0", "root") for u in value.split(","))


def _r_pkill(name: str, args: list[str]) -> list[_Item]:
    """kill-all: pkill/killall selecting every process (pkill -9 ., killall -r '.*', pkill -u root,
    pkill -v NAME)."""
    if args and _SIGNAL_ARG.fullmatch(args[0]):
        if _zero_signal(args[0][1:]):
            return []
        args = args[1:]
    if name == "pkill":
        opts, i = _opts(args, "gGPstuUFqr", ("signal", "pgroup", "group", "parent", "session", "terminal",
                                             "euid", "uid", "pidfile", "ns", "nslist", "queue", "runstates",
                                             "env", "cgroup"))  # fmt: skip
        regex = True
    else:
        opts, i = _opts(args, "sugoyZn", ("signal", "user", "older-than", "younger-than", "context", "ns"))
        regex = any(k in ("-r", "--regexp") for k, _ in opts)
    keys = {k for k, _ in opts}
    if keys & {"-l", "--list", "-h", "--help", "-V", "--version"}:
        return []
    if _zero_signal(next((v for k, v in opts if k in ("-s", "--signal")), None)):
        return []
    patterns = args[i:]
    selectors = keys & {"-g", "-G", "-P", "-s", "-t", "-u", "-U", "-F", "--pgroup", "--group", "--parent",
                        "--session", "--terminal", "--euid", "--uid", "--pidfile", "--user", "--ns",
                        "--cgroup", "-o", "-y", "--older-than", "--younger-than"}  # fmt: skip
    if name == "pkill":
        selectors -= {"-s"}  # -s is a session for pkill, a signal for killall
    users = [v for k, v in opts if k in ("-u", "-U", "--euid", "--uid", "--user")]
    if not patterns:
        if any(_root_user(u) for u in users) or any(v == "1" for k, v in opts if k in ("-P", "--parent")):
            return [("rule", "kill-all")]
        return []
    if not regex:
        return []
    full = bool(keys & {"-f", "--full"})
    icase = bool(keys & {"-i", "--ignore-case", "-I"})
    exact = bool(keys & {"-x", "--exact"}) if name == "pkill" else False
    if (keys & {"-v", "--inverse"}) and name == "pkill" and not selectors:
        return [("rule", "kill-all")]
    if any(_matches_all(p, full=full, icase=icase, exact=exact) for p in patterns):
        return [("rule", "kill-all")]
    return []


_FORK_LOOP = re.compile(r"\bfork\b.*\b(?:while|until|loop)\b|\b(?:while|until|for|loop)\b.*\bfork\b")


def _r_interpreter(name: str, args: list[str]) -> list[_Item]:
    code = " ".join(args)
    return [("rule", "fork-bomb")] if "fork" in code and _FORK_LOOP.search(code) else []
