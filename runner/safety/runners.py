"""Safety: programs that run their arguments as a command (tracers, namespace, privilege,
scheduling, session and container tools), as wrappers to peel. Pure; imports .options only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from runner.safety.options import _keys, _opts, _value

# A wrapper turns its arguments into the command it runs: a new argv, a _Script (text run
# by a shell), or None (it runs nothing we can see).


@dataclass(frozen=True)
class _Script:
    texts: tuple[str, ...]


_Next = list[str] | _Script | None
_Wrapper = Callable[[list[str], list[str]], _Next]


def _stdin_script(stdin: Sequence[str]) -> _Script | None:
    return _Script(tuple(stdin)) if stdin else None


def _w_generic(short_arg: str = "", long_arg: Iterable[str] = (), *, skip: int = 0,
               none_if: Iterable[str] = ()) -> _Wrapper:  # fmt: skip
    """A wrapper: options (some with a value), `skip` operands, then the command."""
    stop = set(none_if)
    long_set = tuple(long_arg)

    def unwrap(args: list[str], stdin: list[str]) -> _Next:
        opts, i = _opts(args, short_arg, long_set)
        if _keys(opts) & stop:
            return None
        return args[i + skip :] or None

    return unwrap


def _w_dashdash(fallback: _Wrapper | None = None) -> _Wrapper:
    """A tool that runs what follows `--` (kubectl exec POD -- CMD, pct exec ID -- CMD)."""

    def unwrap(args: list[str], stdin: list[str]) -> _Next:
        if "--" in args:
            return args[args.index("--") + 1 :] or None
        return fallback(args, stdin) if fallback else None

    return unwrap


def _w_sub(subs: dict[str, _Wrapper], default: _Wrapper | None = None) -> _Wrapper:
    """A tool whose subcommand (after leading options) decides: `perf stat CMD`, `ip netns exec`."""

    def unwrap(args: list[str], stdin: list[str]) -> _Next:
        _, i = _opts(args)
        for k in range(i, min(len(args), i + 3)):
            w = subs.get(args[k])
            if w is not None:
                return w(args[k + 1 :], stdin)
        return default(args, stdin) if default else None

    return unwrap


def _w_script(args: list[str], stdin: list[str]) -> _Next:
    """script -c CMD [FILE]: CMD is run by a shell."""
    opts, _ = _opts(args, "cEIOBTm", ("command", "echo", "log-in", "log-out", "log-io", "log-timing",
                                       "logging-format", "output-limit"))  # fmt: skip
    cmd = _value(opts, "-c", "--command")
    return _Script((cmd,)) if cmd else None


def _w_sg(args: list[str], stdin: list[str]) -> _Next:
    """sg [-] GROUP [-c] CMD: CMD is a string for /bin/sh -c."""
    rest = [a for a in args if a != "-"]
    rest = rest[1:]
    if rest[:1] == ["-c"]:
        rest = rest[1:]
    return _Script((" ".join(rest),)) if rest else _stdin_script(stdin)


def _w_newgrp(args: list[str], stdin: list[str]) -> _Next:
    return _stdin_script(stdin)  # starts a shell that reads its standard input


def _w_at(args: list[str], stdin: list[str]) -> _Next:
    """at/batch read the job from standard input (echo reboot | at now)."""
    opts, _ = _opts(args, "qft")
    if _keys(opts) & {"-f", "-l", "-d", "-r", "-c", "-V"}:
        return None
    return _stdin_script(stdin)


def _w_trap(args: list[str], stdin: list[str]) -> _Next:
    """trap 'CMD' SIGNAL...: CMD runs later, in this shell."""
    rest = args[1:] if args[:1] == ["--"] else args
    if not rest or rest[0] in ("-l", "-p", "-") or len(rest) < 2:
        return None
    return _Script((rest[0],))


def _w_bwrap(args: list[str], stdin: list[str]) -> _Next:
    """bwrap OPTIONS CMD: options take 0 to 3 values."""
    two = {"--bind", "--ro-bind", "--dev-bind", "--bind-try", "--ro-bind-try", "--dev-bind-try", "--symlink",
           "--setenv", "--file", "--bind-data", "--ro-bind-data", "--chmod", "--bind-fd", "--ro-bind-fd"}
    three = {"--overlay"}
    one = {"--dir", "--tmpfs", "--proc", "--dev", "--mqueue", "--chdir", "--unsetenv", "--uid", "--gid",
           "--hostname", "--lock-file", "--sync-fd", "--info-fd", "--json-status-fd", "--block-fd",
           "--userns-block-fd", "--seccomp", "--add-seccomp-fd", "--remount-ro", "--exec-label",
           "--file-label", "--cap-add", "--cap-drop", "--perms", "--size", "--args", "--userns", "--userns2",
           "--pidns", "--overlay-src", "--tmp-overlay", "--ro-overlay", "--argv0", "--level-prefix"}  # fmt: skip
    i, n = 0, len(args)
    while i < n:
        a = args[i]
        if a == "--":
            i += 1
            break
        if not a.startswith("--"):
            break
        i += 1 + (3 if a in three else 2 if a in two else 1 if a in one else 0)
    return args[i:] or None


def _w_ldso(args: list[str], stdin: list[str]) -> _Next:
    """/lib64/ld-linux-x86-64.so.2 [OPTIONS] PROGRAM ARGS: the dynamic loader runs PROGRAM."""
    opts, i = _opts(args, "", ("library-path", "preload", "argv0", "audit", "inhibit-rpath"))
    if _keys(opts) & {"--list", "--verify", "--help", "--version", "--list-tunables", "--list-diagnostics"}:
        return None
    return args[i:] or None


def _w_setarch(args: list[str], stdin: list[str]) -> _Next:
    """setarch ARCH [OPTIONS] CMD."""
    if args and not args[0].startswith("-"):
        args = args[1:]
    return _w_personality(args, stdin)


def _w_personality(args: list[str], stdin: list[str]) -> _Next:
    """linux32/linux64/i386/x86_64/uname26 [OPTIONS] CMD."""
    _, i = _opts(args)
    return args[i:] or None


def _w_runcon(args: list[str], stdin: list[str]) -> _Next:
    """runcon CONTEXT CMD, or runcon [-u USER] [-r ROLE] [-t TYPE] [-l RANGE] CMD."""
    if args and not args[0].startswith("-"):
        return args[1:] or None
    return _w_generic("utrl", ("user", "role", "type", "range"))(args, stdin)


def _w_run_as(args: list[str], stdin: list[str]) -> _Next:
    """Android run-as PACKAGE [--user UID] CMD."""
    rest = args[1:]
    if rest[:1] == ["--user"]:
        rest = rest[2:]
    return rest or None


def _w_start_stop(args: list[str], stdin: list[str]) -> _Next:
    """start-stop-daemon --start --exec PROG [-- ARGS]: starts PROG."""
    opts, _ = _opts(args, "xanpuNcgrdPIkKsiRCo", ("exec", "startas", "name", "pidfile", "user", "nicelevel",
                                                   "chuid", "group", "chroot", "chdir", "procsched", "iosched",
                                                   "umask", "signal", "retry", "output", "make-pidfile"))  # fmt: skip
    if not _keys(opts) & {"-S", "--start"}:
        return None
    prog = _value(opts, "-a", "--startas") or _value(opts, "-x", "--exec")
    if not prog:
        return None
    tail = args[args.index("--") + 1 :] if "--" in args else []
    return [prog, *tail]


def _w_gdb(args: list[str], stdin: list[str]) -> _Next:
    return args[args.index("--args") + 1 :] or None if "--args" in args else None


_PERF_RUN = _w_generic("eoptCrGxIFcmuDLj", ("event", "output", "pid", "tid", "cpu", "repeat", "cgroup",
                                            "field-separator", "interval-print", "freq", "count", "mmap-pages",
                                            "uid", "delay", "call-graph"))  # fmt: skip

_RUNNERS: dict[str, _Wrapper] = {
    # process attributes and scheduling
    "nohup": _w_generic(),
    "builtin": _w_generic(),
    "exec": _w_generic("a"),
    "nice": _w_generic("n", ("adjustment",)),
    "ionice": _w_generic("cnpPu", ("class", "classdata", "pid", "pgid", "uid"),
                         none_if=("-p", "-P", "-u", "--pid", "--pgid", "--uid")),
    "chrt": _w_generic("TPD", ("sched-runtime", "sched-period", "sched-deadline"), skip=1,
                       none_if=("-p", "--pid", "-m", "--max")),
    "taskset": _w_generic("", (), skip=1, none_if=("-p", "--pid")),
    "numactl": _w_generic("NmCpiPbw", ("cpunodebind", "membind", "physcpubind", "preferred", "interleave",
                                       "weighted-interleave", "preferred-many"),
                          none_if=("-s", "-H", "--show", "--hardware")),
    "prlimit": _w_generic("", (), none_if=("-p", "--pid")),
    "timeout": _w_generic("sk", ("signal", "kill-after"), skip=1),
    "timelimit": _w_generic("tTsS"),
    "cpulimit": _w_generic("lpez", ("limit", "pid", "exe", "path"), none_if=("-p", "--pid", "-e", "--exe")),
    "stdbuf": _w_generic("ioe", ("input", "output", "error")),
    "unbuffer": _w_generic(),
    "setsid": _w_generic(),
    "time": _w_generic("of", ("output", "format")),
    "cgexec": _w_generic("g"),
    "faketime": _w_generic("", ("date-prog",), skip=1),
    "eatmydata": _w_generic(),
    "nocache": _w_generic(),
    "chronic": _w_generic(),
    "catchsegv": _w_generic(),
    "setarch": _w_setarch,
    **dict.fromkeys(("linux32", "linux64", "i386", "x86_64", "uname26"), _w_personality),
    # tracers and debuggers
    "strace": _w_generic("abeEIoOpPsSuUX", ("trace", "signal", "status", "abbrev", "verbose", "raw", "read",
                                            "write", "fault", "inject", "kvm", "output", "attach", "user",
                                            "env", "string-limit", "summary-sort-by", "columns", "trace-path",
                                            "const-print-style", "decode-fds", "argv0")),
    "ltrace": _w_generic("aADeFlnopsuwxX", ("output", "indent", "align", "library", "config")),
    "valgrind": _w_generic(),
    "perf": _w_sub({"stat": _PERF_RUN, "record": _PERF_RUN, "trace": _PERF_RUN}),
    "gdb": _w_gdb,
    # namespaces, sandboxes and roots
    "chroot": _w_generic("", ("userspec", "groups"), skip=1),
    "arch-chroot": _w_generic("Nur", (), skip=1),
    "unshare": _w_generic("RwSGl", ("root", "wd", "setuid", "setgid", "map-user", "map-group", "map-users",
                                    "map-groups", "propagation", "setgroups", "monotonic", "boottime",
                                    "load-interp")),
    "nsenter": _w_generic("tSGN", ("target", "setuid", "setgid", "env")),
    "firejail": _w_generic(),
    "bwrap": _w_bwrap,
    "proot": _w_generic("rbmwkqRSi"),
    "fakeroot": _w_generic("lsi", ("lib", "faked")),
    "fakechroot": _w_generic("ecsdl", ("environment", "config-dir", "use-system-libs")),
    "systemd-nspawn": _w_generic("DMuEpbSZLaiC", ("directory", "machine", "user", "setenv", "port", "bind",
                                                   "bind-ro", "slice", "property", "image", "network-interface",
                                                   "network-bridge", "tmpfs", "overlay", "capability",
                                                   "drop-capability", "chdir", "template", "register",
                                                   "private-users", "link-journal", "resolv-conf", "timezone"),
                                 none_if=("-b", "--boot")),
    # privilege and identity
    "pkexec": _w_generic("", ("user",), none_if=("--version", "--help")),
    "run0": _w_generic("ugDM", ("user", "group", "chdir", "nice", "property", "description", "slice",
                                "setenv", "unit", "machine", "area", "background", "shell-prompt-prefix")),
    "setpriv": _w_generic("", ("reuid", "regid", "ruid", "rgid", "euid", "egid", "groups", "inh-caps",
                               "ambient-caps", "bounding-set", "securebits", "pdeathsig", "selinux-label",
                               "apparmor-profile", "landlock-access", "landlock-rule", "ptracer"),
                          none_if=("-d", "--dump")),
    "sg": _w_sg,
    "newgrp": _w_newgrp,
    "su-exec": _w_generic("", (), skip=1),
    "gosu": _w_generic("", (), skip=1),
    "setuidgid": _w_generic("", (), skip=1),
    "s6-setuidgid": _w_generic("", (), skip=1),
    "chpst": _w_generic("uUbe/nlLmdopfcrt"),
    "runcon": _w_runcon,
    "run-as": _w_run_as,
    # sessions, services and later runs
    "systemd-run": _w_generic("upEMHC", ("unit", "property", "description", "slice", "setenv", "uid", "gid",
                                         "nice", "working-directory", "machine", "host", "on-active",
                                         "on-boot", "on-startup", "on-unit-active", "on-unit-inactive",
                                         "on-calendar", "timer-property", "path-property",
                                         "socket-property", "service-type", "capsule", "slice-inherit"
                                         ),
                              none_if=("--help", "--version")),
    "systemd-inhibit": _w_generic("", ("what", "who", "why", "mode"), none_if=("--list",)),
    "systemd-cat": _w_generic("tp", ("identifier", "priority", "stderr-priority", "level-prefix", "namespace")),
    "dbus-run-session": _w_generic(),
    "dbus-launch": _w_generic(),
    "ssh-agent": _w_generic("aEPt"),
    "xvfb-run": _w_generic("efnpsw", ("error-file", "auth-file", "server-num", "xauth-protocol",
                                      "server-args", "wait")),
    "flatpak-spawn": _w_generic("", ("env", "directory", "forward-fd")),
    "openvt": _w_generic("c", ("console",)),
    "daemonize": _w_generic("ceopluE"),
    "start-stop-daemon": _w_start_stop,
    "tini": _w_generic("pe"),
    "dumb-init": _w_generic("r", ("rewrite",)),
    "lckdo": _w_generic("", (), skip=1),
    "script": _w_script,
    "at": _w_at,
    "batch": _w_at,
    "trap": _w_trap,
    # network wrappers
    "torsocks": _w_generic("uapP", ("user", "pass", "address", "port")),
    "proxychains": _w_generic("f"),
    "proxychains4": _w_generic("f"),
    "tsocks": _w_generic(),
    "trickle": _w_generic("dunwtl"),
    "sshpass": _w_generic("pfdP"),
    # containers and guests: the command runs on another machine or container
    "docker": _w_sub({"exec": _w_generic("euw", ("env", "env-file", "user", "workdir", "detach-keys"), skip=1)}),
    "podman": _w_sub({"exec": _w_generic("euw", ("env", "env-file", "user", "workdir", "detach-keys",
                                                 "preserve-fds"), skip=1)}),
    "nerdctl": _w_sub({"exec": _w_generic("euw", ("env", "env-file", "user", "workdir"), skip=1)}),
    "kubectl": _w_sub({"exec": _w_dashdash()}),
    "oc": _w_sub({"exec": _w_dashdash()}),
    "pct": _w_sub({"exec": _w_dashdash()}),
    "qm": _w_sub({"exec": _w_dashdash()}),
    "lxc": _w_sub({"exec": _w_dashdash()}),
    "incus": _w_sub({"exec": _w_dashdash()}),
    "lxc-attach": _w_dashdash(_w_generic("nPsvLefu", ("name", "lxcpath", "namespaces", "set-var",
                                                     "elevated-privileges", "uid", "gid", "context"))),
    "ip": _w_sub({"netns": _w_sub({"exec": _w_generic("", (), skip=1)}),
                  "vrf": _w_sub({"exec": _w_generic("", (), skip=1)})}),
}  # fmt: skip
