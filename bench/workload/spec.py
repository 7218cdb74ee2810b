"""The benchmark workload, stated once: what every tool must leave on each host, and the
starting state the harness lays down before a first run.

Pure data and local checks; it never connects to a host or runs a tool.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

BASE = Path("/tmp/opsrun-bench")  # remote root: BASE/<tool>/<host>/ (the sshds run here)

DIR = "conf.d"  # ensured directory, mode 0755
DIR_MODE = 0o755
FILE = "conf.d/app.conf"  # file with exactly CONTENT, mode 0644
FILE_MODE = 0o644
CONTENT = """\
# app.conf: written by the opsrun benchmark (bench/workload/)
[server]
listen = 0.0.0.0:8080
workers = 4
keepalive_timeout = 65
max_body_size = 10m

[log]
level = info
path = /var/log/app/app.log
rotate = daily
keep = 14

[cache]
enabled = true
size_mb = 256
ttl_seconds = 300
"""
LINE_FILE = "settings.ini"  # pre-existing file; one line ensured (regexp ^max_connections)
LINE_BEFORE = "[main]\nname = bench\nmax_connections = 10\n"
LINE = "max_connections = 100"
LINE_REGEXP = "^max_connections"
LINE_AFTER = "[main]\nname = bench\nmax_connections = 100\n"
ABSENT = "stale.txt"  # pre-existing file that must be removed
ABSENT_BEFORE = "left over from an old release\n"
COMMANDS = ["uname -a", "id", "df -h /", "uptime", "echo x"]  # run every time, by every tool

N_TASKS = 9  # dir, file, line, 5 commands, absent
N_CHANGES_FIRST = 9  # the first run changes the 4 state items; the 5 commands always "run"
N_CHANGES_RERUN = 5


def root(tool: str, host: str) -> Path:
    return BASE / tool / host


def prepare(tool: str, hosts: list[str], uid: int, gid: int) -> None:
    """Fresh starting state for one tool's first run: root/ with the line file and the stale
    file, owned by the login user (everything from an earlier run is removed first)."""
    import shutil

    tool_dir = BASE / tool
    shutil.rmtree(tool_dir, ignore_errors=True)
    BASE.mkdir(mode=0o755, exist_ok=True)
    os.chmod(BASE, 0o755)
    tool_dir.mkdir(mode=0o755)
    for host in hosts:
        r = root(tool, host)
        r.mkdir(mode=0o755)
        (r / LINE_FILE).write_text(LINE_BEFORE)
        (r / ABSENT).write_text(ABSENT_BEFORE)
        for p in (r, r / LINE_FILE, r / ABSENT):
            os.chown(p, uid, gid)
            os.chmod(p, 0o755 if p.is_dir() else 0o644)


def check(tool: str, host: str, uid: int) -> list[str]:
    """What is wrong with one host's folder after a run (empty list: exactly as specified)."""
    r = root(tool, host)
    bad: list[str] = []
    d = r / DIR
    try:
        st = d.lstat()
        if not stat.S_ISDIR(st.st_mode):
            bad.append(f"{d} is not a directory")
        elif stat.S_IMODE(st.st_mode) != DIR_MODE:
            bad.append(f"{d} mode {stat.S_IMODE(st.st_mode):o}, want {DIR_MODE:o}")
        if st.st_uid != uid:
            bad.append(f"{d} owned by uid {st.st_uid}, want {uid}")
    except FileNotFoundError:
        bad.append(f"{d} missing")
    f = r / FILE
    try:
        st = f.lstat()
        if not stat.S_ISREG(st.st_mode):
            bad.append(f"{f} is not a regular file")
        elif f.read_text() != CONTENT:
            bad.append(f"{f} content differs")
        if stat.S_IMODE(st.st_mode) != FILE_MODE:
            bad.append(f"{f} mode {stat.S_IMODE(st.st_mode):o}, want {FILE_MODE:o}")
        if st.st_uid != uid:
            bad.append(f"{f} owned by uid {st.st_uid}, want {uid}")
    except FileNotFoundError:
        bad.append(f"{f} missing")
    lf = r / LINE_FILE
    try:
        text = lf.read_text()
        if text != LINE_AFTER:
            bad.append(f"{lf} is {text!r}, want {LINE_AFTER!r}")
    except FileNotFoundError:
        bad.append(f"{lf} missing")
    if (r / ABSENT).exists():
        bad.append(f"{r / ABSENT} still exists")
    leftovers = sorted(p.name for p in r.iterdir() if p.name not in (DIR, LINE_FILE, ABSENT))
    leftovers += sorted(p.name for p in d.iterdir() if p.name != "app.conf") if d.is_dir() else []
    if leftovers:
        bad.append(f"{r}: unexpected files {leftovers}")
    return bad
