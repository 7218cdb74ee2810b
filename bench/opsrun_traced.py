"""Runs the opsrun CLI in this process with timers and counters around it (for profiling):
phases (imports, load, plan, apply, close), SSH channels opened, commands exec'd, SFTP
requests. Prints them as one JSON line on stderr at exit, prefixed `@@trace `.

Wraps functions from the outside only; it changes no behaviour and is never used by tests.
Usage: python bench/opsrun_traced.py apply PLAYBOOK -i INVENTORY --yes
"""

from __future__ import annotations

import atexit
import collections
import json
import os
import sys
import threading
import time
from typing import Any

T0 = time.perf_counter()
# Interpreter start-up before this line (site, .pth files) is not in T0; the harness's
# wall-clock includes it.
_lock = threading.Lock()
phases: dict[str, list[float]] = {}
counters: collections.Counter[str] = collections.Counter()
starts: dict[str, float] = {}  # first start of each timed label, seconds after T0


def _timed(owner: Any, attr: str, label: str) -> None:
    orig = getattr(owner, attr)

    def wrapper(*a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        starts.setdefault(label, t - T0)
        try:
            return orig(*a, **kw)
        finally:
            with _lock:
                phases.setdefault(label, []).append(time.perf_counter() - t)

    setattr(owner, attr, wrapper)


def _counted(owner: Any, attr: str, key: Any) -> None:
    orig = getattr(owner, attr)

    def wrapper(*a: Any, **kw: Any) -> Any:
        with _lock:
            counters[key(*a, **kw) if callable(key) else key] += 1
        return orig(*a, **kw)

    setattr(owner, attr, wrapper)


def _exec_key(self: Any, cmd: str) -> str:
    if "mktemp" not in cmd or "@@" not in cmd:  # the probe script's shape (base.probe_script)
        return "exec:" + cmd[:40]
    dump = os.environ.get("BENCH_PROBE_DUMP")  # keep one probe script to study it
    if dump and not os.path.exists(dump):
        with open(dump, "w") as fh:
            fh.write(cmd)
    return "exec:probe-batch"


def install() -> None:
    import paramiko

    phases["import paramiko"] = [time.perf_counter() - T0]
    starts["import paramiko"] = 0.0
    _counted(paramiko.Transport, "open_channel", lambda self, kind, *a, **k: f"channel:{kind}")
    _counted(paramiko.Channel, "exec_command", _exec_key)
    _counted(paramiko.SFTPClient, "_request", lambda self, t, *a: f"sftp:{t}")
    _timed(paramiko.SSHClient, "connect", "ssh_connect (per host, summed)")
    _timed(paramiko.Transport, "open_session", "open_session (summed)")

    import runner.cli
    phases["import runner.cli"] = [time.perf_counter() - T0]
    starts["import runner.cli"] = 0.0
    import runner.apply
    import runner.journal
    import runner.planner
    import runner.session
    from runner.transports import ssh

    _timed(runner.cli, "_prepare", "load playbook+inventory")
    _timed(runner.planner, "make_plan", "plan (probe all hosts)")
    _timed(runner.apply.Executor, "run", "apply (all steps)")
    _timed(runner.session.Session, "close", "close connections")
    _timed(runner.journal.Journal, "event", "journal.event (summed)")
    _timed(ssh.SSHTransport, "open", "transport.open (summed)")
    _timed(ssh.SSHTransport, "probe", "transport.probe (summed)")
    _timed(ssh.SSHTransport, "execute", "transport.execute (summed)")
    _timed(runner.planner, "plan_host", "plan_host (summed)")


def what_if(names: set[str]) -> None:
    """Experiments patched in from outside, to size a fix before anyone writes it:
    nofsync   the journal flushes every event but never fsyncs
    khcache   each known_hosts file is parsed once per run and shared by all hosts (through
              load_system_host_keys, which opsrun no longer calls since aa8900a: no-op now)
    sftpfacts file stat/content/sha256 probes answered over the host's SFTP session (no
              remote process); other probes still go in the shell batch. Owner/group names
              come from this machine's passwd/group: valid here only because the sshds run
              on this machine (a real fix would send uid/gid or ask once per host)
    sftpactions `mkdir -p`, `chmod`, `rm -f` actions on one path done as SFTP requests
              (after the same safety check), not as a shell command each
    free      the playbook runs with `strategy: free` (no barrier between steps)
    """
    import paramiko

    if "nofsync" in names:
        import runner.journal

        class _NoFsyncOs:
            def __getattr__(self, name: str) -> Any:
                return (lambda fd: None) if name == "fsync" else getattr(os, name)

        runner.journal.os = _NoFsyncOs()  # type: ignore[attr-defined,assignment]
    if "khcache" in names:
        cache: dict[str, paramiko.HostKeys] = {}
        orig = paramiko.SSHClient.load_system_host_keys

        def load_system_host_keys(self: paramiko.SSHClient, filename: str | None = None) -> None:
            if filename is None:
                return orig(self, filename)
            with _lock:
                if filename not in cache:
                    cache[filename] = paramiko.HostKeys(filename)
            self._system_host_keys = cache[filename]
            return None

        paramiko.SSHClient.load_system_host_keys = load_system_host_keys
    if "free" in names:
        import runner.apply

        orig_run = runner.apply.Executor.run

        def run(self: Any) -> Any:
            self.session.playbook.settings["strategy"] = "free"
            return orig_run(self)

        runner.apply.Executor.run = run  # type: ignore[method-assign]
    if "sftpfacts" in names:
        _sftp_facts()
    if "sftpactions" in names:
        _sftp_actions()


def _sftp_facts() -> None:
    import grp
    import hashlib
    import pwd
    import shlex
    import stat

    from runner.model import ProbeResult
    from runner.transports import ssh

    orig = ssh.SSHTransport._probe_shell

    def path_of(command: str) -> str | None:
        if command.startswith("p="):
            return shlex.split(command[2:].split("; if ", 1)[0])[0]
        if command.startswith("[ -f "):
            return shlex.split(command)[2]
        return None

    def answer(sftp: Any, kind: str, path: str) -> ProbeResult:
        try:
            st = sftp.lstat(path)
        except FileNotFoundError:
            return ProbeResult(0, b"absent\n", b"") if kind == "stat" else ProbeResult(1, b"", b"")
        mode = st.st_mode or 0
        if kind == "stat":
            if stat.S_ISLNK(mode):
                head = f"link {sftp.readlink(path)}"
            else:
                head = "directory" if stat.S_ISDIR(mode) else "file"
            user = pwd.getpwuid(st.st_uid).pw_name
            group = grp.getgrgid(st.st_gid).gr_name
            return ProbeResult(0, f"{head}\n{stat.S_IMODE(mode):o} {user} {group} {st.st_size}\n"
                               .encode(), b"")
        if not stat.S_ISREG(mode):
            return ProbeResult(1, b"", b"")
        with sftp.open(path, "rb") as fh:
            data = fh.read()
        if kind == "content":
            return ProbeResult(0, data, b"")
        return ProbeResult(0, (hashlib.sha256(data).hexdigest() + "\n").encode(), b"")

    def _probe_shell(self: Any, probes: Any) -> Any:
        out = {}
        rest = []
        for p in probes:
            kind = p.key.rsplit("/", 1)[-1]
            path = path_of(p.command or "") if kind in ("stat", "content", "sha256") else None
            if path is None:
                rest.append(p)
                continue
            out[p.key] = answer(self._sftp_client(), kind, path)
        with _lock:
            counters["sftpfacts:answered"] += len(out)
        if rest:
            out.update(orig(self, rest))
        return out

    ssh.SSHTransport._probe_shell = _probe_shell  # type: ignore[method-assign]


def _sftp_actions() -> None:
    import shlex
    from collections.abc import Callable

    from runner.model import CommandResult
    from runner.transports import ssh

    orig = ssh.SSHTransport._run

    def _run(self: Any, command: str, *, timeout: Any, stdin: Any, sudo: bool) -> Any:
        words = shlex.split(command) if not sudo and stdin is None else []
        path = words[-1] if len(words) == 4 else ""

        def mkdir(c: Any) -> None:  # parents exist in this workload; a fix would walk up
            try:
                c.mkdir(path)
            except OSError:
                c.stat(path)  # already there is fine; anything else raises

        def chmod(c: Any) -> None:
            c.chmod(path, int(words[1], 8))

        def remove(c: Any) -> None:
            try:
                c.remove(path)
            except FileNotFoundError:
                pass

        sftp_op: Callable[[Any], None] | None = None
        if words[:3] == ["mkdir", "-p", "--"] and path:
            sftp_op = mkdir
        elif path and words[0] == "chmod" and words[2] == "--":
            sftp_op = chmod
        elif words[:3] == ["rm", "-f", "--"] and path:
            sftp_op = remove
        if sftp_op is None:
            return orig(self, command, timeout=timeout, stdin=stdin, sudo=sudo)
        sftp_op(self._sftp_client())
        with _lock:
            counters["sftpactions:done"] += 1
        return CommandResult(0)

    ssh.SSHTransport._run = _run  # type: ignore[method-assign]


def report() -> None:
    out = {
        "wall": time.perf_counter() - T0,
        "phases": {k: {"n": len(v), "sum": round(sum(v), 4), "max": round(max(v), 4),
                       "start": round(starts.get(k, 0.0), 4)} for k, v in phases.items()},
        "counters": dict(sorted(counters.items())),
    }
    sys.stderr.write("@@trace " + json.dumps(out) + "\n")


if __name__ == "__main__":
    install()
    what_if({x for x in os.environ.get("BENCH_WHAT_IF", "").split(",") if x})
    atexit.register(report)
    from runner.cli import main

    sys.argv[0] = "opsrun"
    main(sys.argv[1:])
