"""Safety: wrappers (sudo, env, nice, sh -c, ssh, adb shell, ...) peeled off a command, giving the
argv or the script text they run. Pure; imports .options, .runners, .lexer.
"""

from __future__ import annotations

import re

from runner.safety.lexer import _ASSIGN
from runner.safety.options import _base, _keys, _opts, _opts_anywhere, _value
from runner.safety.runners import _RUNNERS, _Next, _Script, _stdin_script, _w_ldso, _Wrapper


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


_SSH_ARG = "BbcDEeFIiJLlmOopQRSWw"
_SSH_COMMANDS = ("proxycommand", "localcommand", "remotecommand", "knownhostscommand")


def _w_ssh(args: list[str], stdin: list[str]) -> _Next:
    """ssh [OPTIONS] HOST [OPTIONS] [--] [COMMAND]: OpenSSH reads options after the host too,
    and `--` ends them; -o ProxyCommand/LocalCommand/RemoteCommand values are commands."""
    scripts: list[str] = []
    i, n = 0, len(args)

    def options(i: int) -> tuple[int, bool]:
        while i < n:
            a = args[i]
            if a == "--":
                return i + 1, True
            if len(a) < 2 or a[0] != "-":
                return i, False
            for pos in range(1, len(a)):
                if a[pos] in _SSH_ARG:
                    value = a[pos + 1 :]
                    if not value and i + 1 < n:
                        i += 1
                        value = args[i]
                    if a[pos] == "o":
                        key, _, val = value.replace("=", " ", 1).partition(" ")
                        if key.lower() in _SSH_COMMANDS and val.strip().lower() != "none":
                            scripts.append(val.strip())
                    break
            i += 1
        return i, False

    i, ended = options(0)
    if i >= n:
        return _Script(tuple(scripts)) if scripts else None
    i += 1  # the destination
    if not ended:
        i, _ = options(i)
    rest = args[i:]
    if rest:
        scripts.append(" ".join(rest))
        if any(_base(w) in _SHELLS for w in rest) and not any(w.startswith("-") and "c" in w for w in rest):
            scripts.extend(stdin)  # `... | ssh host [sudo] bash`: the remote shell reads our stdin
    elif not scripts and stdin:
        return _stdin_script(stdin)
    return _Script(tuple(scripts)) if scripts else None


def _w_autossh(args: list[str], stdin: list[str]) -> _Next:
    """autossh [-M PORT] [-f] SSH-ARGS."""
    _, i = _opts(args, "M")
    return _w_ssh(args[i:], stdin)


def _w_mosh(args: list[str], stdin: list[str]) -> _Next:
    """mosh [OPTIONS] [--] HOST [--] [COMMAND]."""
    _, i = _opts(args, "p", ("client", "server", "ssh", "port", "bind-server", "family", "predict",
                            "experimental-remote-ip"))  # fmt: skip
    rest = args[i + 1 :]
    if rest[:1] == ["--"]:
        rest = rest[1:]
    return _Script((" ".join(rest),)) if rest else None


def _w_nc(args: list[str], stdin: list[str]) -> _Next:
    """ncat/nc -e PROG, -c CMD, --sh-exec CMD, --lua-exec: run a program for the connection."""
    opts, _ = _opts_anywhere(args, "ecpswiIoOqxXTCgGmdSW", ("exec", "sh-exec", "source-port", "source", "wait",
                                                   "idle-timeout", "output", "hex-dump", "proxy",
                                                   "proxy-type", "proxy-auth", "max-conns", "allow",
                                                   "deny", "allowfile", "denyfile"))  # fmt: skip
    texts = [v for k, v in opts if k in ("-e", "-c", "--exec", "--sh-exec") and v]
    return _Script(tuple(texts)) if texts else None


def _w_capsh(args: list[str], stdin: list[str]) -> _Next:
    """capsh [OPTIONS] -- ARGS: ARGS go to /bin/bash (capsh -- -c 'CMD')."""
    if "--" in args:
        return _w_shell(args[args.index("--") + 1 :], stdin)
    if "==" in args:
        return _w_capsh(args[args.index("==") + 1 :], stdin)
    return None


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


_LDSO = re.compile(r"ld(?:-linux[\w.-]*|-musl[\w.-]*)?\.so(?:\.\d+)*")
_SHELLS = ("sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "rbash", "fish", "lksh", "yash")
_WRAPPERS: dict[str, _Wrapper] = {
    **_RUNNERS,
    **dict.fromkeys(_SHELLS, _w_shell),
    "sudo": _w_sudo,
    "doas": _w_doas,
    "env": _w_env,
    "command": _w_command,
    "xargs": _w_xargs,
    "watch": _w_watch,
    "flock": _w_flock,
    "su": _w_su,
    "runuser": _w_runuser,
    "ssh": _w_ssh,
    "autossh": _w_autossh,
    "mosh": _w_mosh,
    **dict.fromkeys(("nc", "ncat", "netcat"), _w_nc),
    "capsh": _w_capsh,
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
        name = _base(argv[0])
        wrap = _WRAPPERS.get(name) or (_w_ldso if _LDSO.fullmatch(name) else None)
        if wrap is None:
            break
        nxt = wrap(argv[1:], stdin)
        if nxt is None:
            break
        if isinstance(nxt, _Script):
            return stages, nxt
        argv = nxt
    return stages, None
