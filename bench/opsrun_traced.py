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
cpu: dict[str, list[float]] = {}  # the process's CPU seconds (all threads) during each call


def _timed(owner: Any, attr: str, label: str) -> None:
    orig = getattr(owner, attr)

    def wrapper(*a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        c = time.process_time()
        starts.setdefault(label, t - T0)
        try:
            return orig(*a, **kw)
        finally:
            with _lock:
                phases.setdefault(label, []).append(time.perf_counter() - t)
                cpu.setdefault(label, []).append(time.process_time() - c)

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
    import runner.apply.engine
    import runner.apply.usecase
    import runner.journal
    import runner.planner
    import runner.session
    from runner.transports import ssh

    _timed(runner.apply.usecase, "open_session", "load playbook+inventory")
    _timed(runner.apply.usecase, "make_plan", "plan (probe all hosts)")
    _timed(runner.apply.engine.Executor, "run", "apply (all steps)")
    _timed(runner.session.Session, "close", "close connections")
    _timed(runner.journal.Journal, "event", "journal.event (summed)")
    _timed(runner.journal.Journal, "commit", "journal.commit (summed)")
    _timed(ssh.SSHTransport, "open", "transport.open (summed)")
    _timed(ssh.SSHTransport, "probe", "transport.probe (summed)")
    _timed(ssh.SSHTransport, "execute", "transport.execute (summed)")
    _timed(runner.planner, "plan_host", "plan_host (summed)")


def what_if(names: set[str]) -> None:
    """Experiments patched in from outside, to size a fix before anyone writes it:
    nofsync   the journal flushes every event but never fsyncs
    nojw      the journal writes nothing (events are numbered only)
    noout     apply prints no event lines
    jwnosys   the journal does all but its write(2)
    noquickack  no TCP_QUICKACK after each read
    switchN   the GIL's switch interval is N/10 ms (Python's default: 50)
    free      the playbook runs with `strategy: free` (no barrier between steps)
    (sftpfacts, sftpactions and khcache, sized here before, are opsrun's own code since
    issue 14 and aa8900a.)
    """
    if "nofsync" in names:
        import runner.journal

        class _NoFsyncOs:
            def __getattr__(self, name: str) -> Any:
                return (lambda fd: None) if name == "fsync" else getattr(os, name)

        runner.journal.os = _NoFsyncOs()  # type: ignore[attr-defined,assignment]
    if "free" in names:
        import runner.apply.engine

        orig_run = runner.apply.engine.Executor.run

        def run(self: Any) -> Any:
            self.session.playbook.settings["strategy"] = "free"
            self._free = True
            return orig_run(self)

        runner.apply.engine.Executor.run = run  # type: ignore[method-assign]
    for name in names:
        if name.startswith("switch"):  # switchN: the GIL's switch interval N/10 ms
            sys.setswitchinterval(int(name[6:]) / 10000)
    if "noout" in names:
        import runner.cli.apply_run

        runner.cli.apply_run.out = lambda text: None  # type: ignore[assignment]
    if "noquickack" in names:
        import runner.transports.ssh_channel as sc

        sc.QuickAckSocket.recv = lambda self, size: self._sock.recv(size)  # type: ignore[method-assign]
    if "jwnosys" in names:
        import runner.journal

        runner.journal.Journal._write = lambda self, line: None  # type: ignore[method-assign]
    if "nojw" in names:
        import runner.journal

        def event(self: Any, type_: str, **fields: Any) -> dict[str, Any]:
            with self._lock:
                self._seq += 1
                return {"seq": self._seq, "type": type_, **fields}

        runner.journal.Journal.event = event  # type: ignore[method-assign]


def report() -> None:
    out = {
        "wall": time.perf_counter() - T0,
        "phases": {k: {"n": len(v), "sum": round(sum(v), 4), "max": round(max(v), 4),
                       "start": round(starts.get(k, 0.0), 4), "cpu": round(sum(cpu.get(k, [])), 4)}
                   for k, v in phases.items()},
        "cpu_total": round(time.process_time(), 4),
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
