"""Safety: wrappers (sudo, env, nice, sh -c, ssh, adb shell, ...) peeled off a command, giving the
argv or the script text they run. Pure; imports .options and .lexer only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from runner.safety.lexer import _ASSIGN
from runner.safety.options import _base, _keys, _opts, _value

# A wrapper turns its arguments into the command it runs: a new argv, a _Script (text run
# by a shell), or None (it runs nothing we can see).


@dataclass(frozen=True)
class _Script:
    texts: tuple[str, ...]


_Next = list[str] | _Script | None


def _stdin_script(stdin: Sequence[str]) -> _Script | None:
    return _Script(tuple(stdin)) if stdin else None


def _w_shell(args: list[str], stdin: list[str]) -> _Next:
    i, n = 0, len(args)
    has_c = has_s = False
    while i < n:
        a = args[i]
        if a in ("--", "-"):
            i += 1
            break
        if a in ("-o", "+o", "-O", "+O", "--rcfile", "--init-file"):
            i += 2
            continue
        if a.startswith("--"):
            i += 1
            continue
        if len(a) > 1 and a[0] in "-+":
            if a[0] == "-":
                has_c = has_c or "c" in a[1:]
                has_s = has_s or "s" in a[1:]
            i += 1
            continue
        break
    rest = args[i:]
    if has_c:
        return _Script((rest[0],)) if rest else None
    if rest and not has_s:
        return None  # runs a script file: not visible from here
    return _stdin_script(stdin)


def _w_sudo(args: list[str], stdin: list[str]) -> _Next:
    opts, i = _opts(args, "ugCDprtTUR", ("user", "group", "close-from", "chdir", "host",
                                         "prompt", "role", "type", "command-timeout",
                                         "other-user", "chroot"))  # fmt: skip
    keys = _keys(opts)
    if keys & {"-l", "--list", "-V", "--version", "-K", "--remove-timestamp", "-e", "--edit",
               "-v", "--validate"}:  # fmt: skip
        return None
    rest = args[i:]
    while rest and _ASSIGN.match(rest[0]):
        rest = rest[1:]
    if keys & {"-s", "--shell", "-i", "--login"}:
        return _Script((" ".join(rest),)) if rest else _stdin_script(stdin)
    return rest or None


def _w_doas(args: list[str], stdin: list[str]) -> _Next:
    opts, i = _opts(args, "uC")
    keys = _keys(opts)
    if "-C" in keys:
        return None
    if "-s" in keys:
        return _stdin_script(stdin)
    return args[i:] or None


def _w_env(args: list[str], stdin: list[str]) -> _Next:
    opts, i = _opts(args, "uCSP", ("unset", "chdir", "split-string"))
    split = _value(opts, "-S", "--split-string")
    if split is not None:
        return _Script((" ".join([split, *args[i:]]),))
    rest = args[i:]
    while rest and _ASSIGN.match(rest[0]):
        rest = rest[1:]
    return rest or None


def _w_generic(short_arg: str = "", long_arg: Iterable[str] = (), *, skip: int = 0,
               none_if: Iterable[str] = ()) -> Callable[[list[str], list[str]], _Next]:  # fmt: skip
    """A wrapper: options (some with a value), `skip` operands, then the command."""
    stop = set(none_if)

    def unwrap(args: list[str], stdin: list[str]) -> _Next:
        opts, i = _opts(args, short_arg, long_arg)
        if _keys(opts) & stop:
            return None
        return args[i + skip :] or None

    return unwrap


def _w_command(args: list[str], stdin: list[str]) -> _Next:
    opts, i = _opts(args)
    if _keys(opts) & {"-v", "-V"}:
        return None  # command -v NAME only looks the name up
    return args[i:] or None


def _w_xargs(args: list[str], stdin: list[str]) -> _Next:
    opts, i = _opts(args, "adEILnPs", ("arg-file", "delimiter", "eof", "replace", "max-lines",
                                       "max-args", "max-procs", "max-chars", "process-slot-var"))  # fmt: skip
    rest = args[i:]
    if not rest:
        return None
    data = " ".join(stdin).split()
    repl = _value(opts, "-I", "--replace")
    if repl and data:
        return [w.replace(repl, data[0]) for w in rest]
    return rest + data


def _w_watch(args: list[str], stdin: list[str]) -> _Next:
    opts, i = _opts(args, "n", ("interval",))
    rest = args[i:]
    if not rest:
        return None
    if _keys(opts) & {"-x", "--exec"}:
        return rest
    return _Script((" ".join(rest),))


def _w_flock(args: list[str], stdin: list[str]) -> _Next:
    opts, i = _opts(args, "wEc", ("timeout", "conflict-exit-code", "command"))
    script = _value(opts, "-c", "--command")
    if script is not None:
        return _Script((script,))
    return args[i + 1 :] or None


def _w_su(args: list[str], stdin: list[str]) -> _Next:
    script: str | None = None
    positional: list[str] = []
    i, n = 0, len(args)
    while i < n:  # su permutes its options: `su - root -c CMD`
        a = args[i]
        if a in ("-c", "--command", "--session-command") or (
            len(a) > 2 and a[0] == "-" and a[1] != "-" and a.endswith("c")
        ):
            script = args[i + 1] if i + 1 < n else ""
            i += 2
            continue
        if a.startswith(("--command=", "--session-command=")):
            script = a.split("=", 1)[1]
        elif a in ("-s", "--shell", "-g", "--group", "-G", "--supp-group", "-w",
                   "--whitelist-environment"):  # fmt: skip
            i += 1
        elif not a.startswith("-"):
            positional.append(a)
        i += 1
    if script is not None:
        return _Script((script,))
    if len(positional) > 1:  # Android-style `su 0 reboot`; GNU su hands them to the shell
        return _Script((" ".join(positional[1:]),))
    return _stdin_script(stdin)


def _w_runuser(args: list[str], stdin: list[str]) -> _Next:
    opts, i = _opts(args, "ugGcsw", ("user", "group", "supp-group", "command", "shell",
                                     "whitelist-environment"))  # fmt: skip
    script = _value(opts, "-c", "--command")
    if script is not None:
        return _Script((script,))
    if _keys(opts) & {"-u", "--user"}:
        return args[i:] or None
    return _w_su(args, stdin)


def _w_ssh(args: list[str], stdin: list[str]) -> _Next:
    _, i = _opts(args, "BbcDEeFIiJLlmOopQRSWw")
    rest = args[i:]
    if not rest:
        return None
    if rest[1:]:
        return _Script((" ".join(rest[1:]),))
    return _stdin_script(stdin)


def _w_adb(args: list[str], stdin: list[str]) -> _Next:
    _, i = _opts(args, "stHPL")
    rest = args[i:]
    if not rest:
        return None
    sub = rest[0]
    if sub in ("shell", "exec-out"):
        _, j = _opts(rest[1:], "e")
        cmd = rest[1 + j :]
        return _Script((" ".join(cmd),)) if cmd else _stdin_script(stdin)
    if sub in ("reboot", "reboot-bootloader"):
        return ["reboot", *rest[1:]]
    return None


def _w_busybox(args: list[str], stdin: list[str]) -> _Next:
    return args if args and not args[0].startswith("-") else None


def _w_eval(args: list[str], stdin: list[str]) -> _Next:
    return _Script((" ".join(args),)) if args else None


_SHELLS = ("sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "rbash", "fish", "lksh", "yash")
_WRAPPERS: dict[str, Callable[[list[str], list[str]], _Next]] = {
    **dict.fromkeys(_SHELLS, _w_shell),
    "sudo": _w_sudo,
    "doas": _w_doas,
    "env": _w_env,
    "nohup": _w_generic(),
    "builtin": _w_generic(),
    "exec": _w_generic("a"),
    "command": _w_command,
    "nice": _w_generic("n", ("adjustment",)),
    "ionice": _w_generic("cnpPu", ("class", "classdata", "pid", "pgid", "uid"),
                         none_if=("-p", "-P", "-u", "--pid", "--pgid", "--uid")),
    "timeout": _w_generic("sk", ("signal", "kill-after"), skip=1),
    "stdbuf": _w_generic("ioe", ("input", "output", "error")),
    "setsid": _w_generic(),
    "time": _w_generic("of", ("output", "format")),
    "chroot": _w_generic("", ("userspec", "groups"), skip=1),
    "taskset": _w_generic("", (), skip=1, none_if=("-p", "--pid")),
    "unbuffer": _w_generic(),
    "xargs": _w_xargs,
    "watch": _w_watch,
    "flock": _w_flock,
    "su": _w_su,
    "runuser": _w_runuser,
    "ssh": _w_ssh,
    "adb": _w_adb,
    "busybox": _w_busybox,
    "toybox": _w_busybox,
    "eval": _w_eval,
}  # fmt: skip


def _unwrap(argv: list[str], stdin: list[str]) -> tuple[list[list[str]], _Script | None]:
    """Peel wrappers: every level's argv (outermost first) and the script the last one runs."""
    stages: list[list[str]] = []
    for _ in range(16):
        if not argv:
            break
        stages.append(argv)
        wrap = _WRAPPERS.get(_base(argv[0]))
        if wrap is None:
            break
        nxt = wrap(argv[1:], stdin)
        if nxt is None:
            break
        if isinstance(nxt, _Script):
            return stages, nxt
        argv = nxt
    return stages, None
