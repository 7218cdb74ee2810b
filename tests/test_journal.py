"""journal.py: events on disk as they happen (redacted), torn tails, and the state lock."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from runner import journal, secrets
from runner.errors import InvalidInput, LockError, OpsrunError
from runner.journal import Journal, StateLock, get_run, list_runs, read_events


@pytest.fixture(autouse=True)
def _clean_secrets() -> Iterator[None]:
    secrets.REGISTRY.clear()
    yield
    secrets.REGISTRY.clear()


# ---------------------------------------------------------------- events


def test_events_are_on_disk_while_the_journal_is_open(tmp_path: Path) -> None:
    j = Journal("r1", root=tmp_path)
    try:
        first = j.event("run_start", playbook="web.yaml", hosts=["web1"])
        # another process reads the file while the journal is still open
        reader = subprocess.run(
            [sys.executable, "-c", "import sys; print(open(sys.argv[1]).read(), end='')", str(j.path)],
            capture_output=True, text=True, timeout=30,
        )
        [line] = reader.stdout.splitlines()
        assert json.loads(line) == first
        j.event("step_end", host="web1", step="a", status="changed")
        events = read_events(tmp_path / "runs" / "r1" / "events.jsonl")
        assert [(e["seq"], e["type"]) for e in events] == [(1, "run_start"), (2, "step_end")]
        assert events[0]["hosts"] == ["web1"]
        assert events[0]["ts"].endswith("+00:00")
    finally:
        j.close()
    j.close()  # twice is fine


def test_threads_writing_at_once_leave_whole_lines_in_number_order(tmp_path: Path) -> None:
    """Events are made into JSON outside the lock and written with one write(2) under it: the
    file holds every line whole, numbered 1..N in file order, each the record returned."""
    import threading

    j = Journal("r2", root=tmp_path)
    got: list[dict[str, object]] = []

    def host(i: int) -> None:
        for k in range(200):
            got.append(j.event("attempt", host=f"h{i}", step=str(k), stdout_tail="x" * (k % 50), rc=k))

    threads = [threading.Thread(target=host, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    j.close()
    lines = j.path.read_text().split("\n")
    assert lines[-1] == "" and len(lines) == 1601
    events = [json.loads(line) for line in lines[:-1]]
    assert [e["seq"] for e in events] == list(range(1, 1601))
    assert sorted(events, key=lambda e: int(str(e["seq"]))) == sorted(got, key=lambda e: int(str(e["seq"])))
    assert list(events[0])[:3] == ["seq", "ts", "type"]
    with pytest.raises(ValueError, match="closed"):
        j.event("late")


def test_odd_fields_are_written_not_fatal(tmp_path: Path) -> None:
    """A field named like the head's keys loses to them (the numbers stay in order); text that is
    not valid UTF-8 (a lone surrogate from undecodable output) is written as a JSON escape; an event
    without fields is still one object."""
    j = Journal("r3", root=tmp_path)
    j.event("step_end", type="mine", seq=99, host="h")
    j.event("attempt", stdout_tail="bad \udcff byte")
    j.event("bare")
    j.close()
    a, b, c = read_events(j.path)
    assert (a["seq"], a["type"], a["host"]) == (1, "step_end", "h")
    assert b["stdout_tail"] == "bad \udcff byte"  # its escape is JSON's own: read back as it was
    assert "\\udcff" in j.path.read_text()
    assert c == {"seq": 3, "ts": c["ts"], "type": "bare"}


class SlowDisk(Journal):
    """A disk whose fsync takes a while; records the last seq on disk when each one starts."""

    def __init__(self, *a: object, **kw: object) -> None:
        super().__init__(*a, **kw)  # type: ignore[arg-type]
        self.covered: list[int] = []

    def _fsync(self, fd: int) -> None:
        lines = [ln for ln in self.path.read_text().split("\n") if ln.strip()]
        self.covered.append(json.loads(lines[-1])["seq"] if lines else 0)
        time.sleep(0.01)
        super()._fsync(fd)


def test_commit_waits_for_an_fsync_that_covers_the_callers_events_and_shares_it(tmp_path: Path) -> None:
    """Group commit: commit() returns only after an fsync that started with the caller's
    events in the file; 20 hosts committing 5 steps each share far fewer than 100 fsyncs."""
    import threading

    j = SlowDisk("r", root=tmp_path)
    late: list[str] = []

    def host(i: int) -> None:
        for k in range(5):
            mine = j.event("step_end", host=f"h{i}", step=str(k))["seq"]
            j.commit()
            if max(j.covered, default=0) < mine:
                late.append(f"h{i} step {k}: event {mine} not synced when commit returned")

    threads = [threading.Thread(target=host, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not late
    assert 1 <= j.fsyncs < 60, j.fsyncs
    j.event("run_end")
    j.close()  # closing commits what is left
    assert j.covered[-1] == 101 and j.fsyncs == len(j.covered)
    j.commit()  # after close: nothing to do, no error


@pytest.mark.parametrize("strategy", ["linear", "free"])
def test_a_step_is_on_disk_before_the_hosts_next_step_starts(tmp_path: Path, strategy: str) -> None:
    """When a host starts a step, its earlier steps' results (the `register` events resume
    reads) are covered by a finished fsync: linear commits once at each step's barrier, free
    at each host's step end (hosts ending a step meanwhile share the fsync)."""
    from runner import config
    from runner.apply.engine import Executor
    from runner.planner import make_plan
    from runner.session import Session

    class Checked(Journal):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, **kw)  # type: ignore[arg-type]
            self.registered: dict[str, int] = {}
            self.bad: list[str] = []

        def _add(self, type_: str, fields: dict[str, object], now: bool) -> dict[str, object]:
            host = str(fields.get("host"))
            if type_ == "step_start" and self.registered.get(host, 0) > self._synced:
                self.bad.append(f"{host} started {fields.get('step')} before its last step was on disk")
            record = super()._add(type_, fields, now)
            if type_ == "register":
                self.registered[host] = int(record["seq"])  # type: ignore[call-overload]
            return record

    inv_file = tmp_path / "inventory.yaml"
    inv_file.write_text("opsrun: 1\nhosts:\n" + "".join(f"  h{i}: {{transport: local}}\n" for i in range(4)))
    pb_file = tmp_path / "p.yaml"
    pb_file.write_text(f"opsrun: 1\nname: t\nhosts: all\nstrategy: {strategy}\nsteps:\n"
                       + "".join(f"  - id: s{k}\n    run: 'true'\n" for k in range(4)))
    inv = config.load_inventory(str(inv_file))
    with Session(inv, config.load_playbook(str(pb_file), inv), {}) as session:
        plan, host_plans = make_plan(session, [f"h{i}" for i in range(4)])
        j = Checked("r", root=tmp_path / ".opsrun")
        try:
            recap = Executor(session, plan, host_plans, j).run()
        finally:
            j.close()
    assert recap.ok
    assert not j.bad
    assert sum(1 for e in read_events(j.path) if e["type"] == "register") == 16
    if strategy == "linear":
        assert j.fsyncs <= 4 + 1  # one per step (and the close)
    assert 1 <= j.fsyncs <= 16 + 1  # at most one per step end (and the close)


def test_deferred_events_wait_for_the_next_write_in_number_order(tmp_path: Path) -> None:
    j = Journal("d", root=tmp_path)
    j.defer("step_start", host="a")
    j.defer("step_end", host="a")
    assert j.path.read_text() == ""  # in memory until the next write
    j.event("process", host="b")
    assert [e["seq"] for e in read_events(j.path)] == [1, 2, 3]
    j.defer("step_start", host="b")
    j.flush()
    j.defer("step_end", host="b")
    assert [e["type"] for e in read_events(j.path)][-1] == "step_start"
    j.commit()  # writes, then fsyncs
    assert [e["seq"] for e in read_events(j.path)] == [1, 2, 3, 4, 5]
    j.defer("last")
    j.close()
    assert read_events(j.path)[-1]["type"] == "last"


@pytest.mark.parametrize("strategy", ["linear", "free"])
def test_what_acts_is_on_the_os_first_and_what_it_did_at_once(tmp_path: Path, strategy: str) -> None:
    """Apply defers only what a kill -9 may lose without changing what resume does: before a
    step sends an action its start is written (the command finds it in the file), and the
    `register` of a step that sent something leaves nothing waiting; a step that sends nothing
    (a file already absent) is written with the next write: fewer write(2) calls than events."""
    from runner import config
    from runner.apply.engine import Executor
    from runner.planner import make_plan
    from runner.session import Session

    class Watched(Journal):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, **kw)  # type: ignore[arg-type]
            self.bad: list[str] = []
            self.writes = 0

        def _add(self, type_: str, fields: dict[str, object], now: bool) -> dict[str, object]:
            record = super()._add(type_, fields, now)
            if type_ == "register" and fields.get("step") == "cmd" and self._pending:
                self.bad.append(f"{fields.get('host')}: the register of a step that acted waits in memory")
            return record

        def _write(self, line: str) -> None:
            self.writes += 1
            super()._write(line)

    state = tmp_path / ".opsrun"
    inv_file = tmp_path / "inventory.yaml"
    inv_file.write_text("opsrun: 1\nhosts:\n" + "".join(f"  h{i}: {{transport: local}}\n" for i in range(3)))
    pb_file = tmp_path / "p.yaml"
    own_start = '"step_start", "host": "{{ inventory_hostname }}", "step": "cmd"'
    pb_file.write_text(yaml.safe_dump({
        "opsrun": 1, "name": "t", "hosts": "all", "strategy": strategy,
        "steps": [*({"id": f"gone{k}", "file": {"path": f"{tmp_path}/nothing{k}", "state": "absent"}} for k in range(3)),
                  {"id": "cmd", "run": f"grep -c '{own_start}' {state}/runs/r/events.jsonl"}]}, sort_keys=False))
    inv = config.load_inventory(str(inv_file))
    with Session(inv, config.load_playbook(str(pb_file), inv), {}) as session:
        plan, host_plans = make_plan(session, [f"h{i}" for i in range(3)])
        j = Watched("r", root=state)
        try:
            recap = Executor(session, plan, host_plans, j).run()
        finally:
            j.close()
    assert recap.ok, recap
    assert not j.bad
    events = read_events(j.path)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    seen = {e["host"]: e["stdout_tail"] for e in events if e["type"] == "attempt"}
    assert seen == {f"h{i}": "1\n" for i in range(3)}  # each found its own start on disk
    assert sum(1 for e in events if e["type"] == "register") == 12
    assert j.writes < len(events) / 2, (j.writes, len(events))


def test_torn_last_line_is_skipped_and_damage_in_the_middle_is_survived(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    good = [json.dumps({"seq": i, "type": "x"}) for i in (1, 2, 3)]
    path.write_text(f"{good[0]}\n{{\"seq\": 9, \"ty\n{good[1]}\n\n{good[2]}\n{{\"seq\": 4, \"type\": \"step_st")
    assert [e["seq"] for e in read_events(path)] == [1, 2, 3]
    assert read_events(tmp_path / "missing.jsonl") == []


def test_secrets_are_redacted_in_events(tmp_path: Path) -> None:
    secret = secrets.mark("hunter2-s3cr3t")
    j = Journal("r1", root=tmp_path)
    try:
        record = j.event(
            "attempt",
            command=f"mysql -p{secret} -e 'select 1'",
            nested={"env": ["A=1", f"PW={secret}"], "n": 3},
            error=RuntimeError(f"login failed for {secret}"),  # not plain data: stringified, then redacted
            path=Path("/run") / str(secret),
        )
    finally:
        j.close()
    text = j.path.read_text()
    assert "hunter2" not in text
    assert "hunter2" not in json.dumps(record)
    [ev] = read_events(j.path)
    assert ev["command"] == "mysql -p*** -e 'select 1'"
    assert ev["nested"] == {"env": ["A=1", "PW=***"], "n": 3}
    assert ev["error"] == "login failed for ***"
    assert ev["path"] == "/run/***"


def test_artifacts_and_reading_runs_back(tmp_path: Path) -> None:
    for run_id, outcome in (("20240101T000000Z-aaaaaa", "ok"), ("20240102T000000Z-bbbbbb", None)):
        j = Journal(run_id, root=tmp_path)
        j.event("run_start", run_id=run_id)
        if outcome:
            j.event("run_end", outcome=outcome)
        j.write_artifact("plan.json", '{"a": 1}')
        j.write_artifact("sub/shot.png", b"\x89PNG")
        j.close()
    runs = list_runs(tmp_path)
    assert [(r.run_id, r.outcome) for r in runs] == [
        ("20240101T000000Z-aaaaaa", "ok"),
        ("20240102T000000Z-bbbbbb", "incomplete"),
    ]
    assert (runs[0].dir / "sub" / "shot.png").read_bytes() == b"\x89PNG"
    assert runs[0].start["run_id"] == "20240101T000000Z-aaaaaa"
    assert get_run("20240101", tmp_path).run_id == "20240101T000000Z-aaaaaa"  # unique prefix
    assert get_run("last", tmp_path).run_id == "20240102T000000Z-bbbbbb"
    with pytest.raises(InvalidInput, match="no run '2024'") as info:
        get_run("2024", tmp_path)  # ambiguous
    assert "recent runs: 20240101T000000Z-aaaaaa, 20240102T000000Z-bbbbbb" in info.value.hint
    assert list_runs(tmp_path / "nowhere") == []


def test_state_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSRUN_STATE_DIR", str(tmp_path / "st"))
    j = Journal("r9")
    j.close()
    assert j.path == tmp_path / "st" / "runs" / "r9" / "events.jsonl"
    assert len(journal.new_run_id()) == len("20240101T000000Z-abcdef")


# ---------------------------------------------------------------- lock


def _lock_info(path: Path) -> dict[str, object]:
    return json.loads(path.read_text())


def _write_lock(root: Path, **fields: object) -> None:
    root.mkdir(parents=True, exist_ok=True)
    info = {"owner": "someone@elsewhere", "host": socket.gethostname(), "pid": os.getpid(), "run_id": "old-run",
            "started": time.time() - 60, "expires": time.time() + 3600}
    info.update(fields)
    (root / "lock").write_text(json.dumps(info))


def test_lock_is_exclusive_with_a_clear_message(tmp_path: Path) -> None:
    first = StateLock("run-a", root=tmp_path).acquire()
    info = _lock_info(tmp_path / "lock")
    assert (info["pid"], info["run_id"], info["host"]) == (os.getpid(), "run-a", socket.gethostname())
    with pytest.raises(LockError) as err:
        StateLock("run-b", root=tmp_path).acquire()
    assert "another apply holds the lock: run run-a" in err.value.message
    assert f"(pid {os.getpid()})" in err.value.message
    assert str(tmp_path / "lock") in err.value.hint
    first.release()
    assert not (tmp_path / "lock").exists()
    with StateLock("run-b", root=tmp_path) as second:
        assert second.stale_note == ""
        assert _lock_info(tmp_path / "lock")["run_id"] == "run-b"
    assert not (tmp_path / "lock").exists()


def test_lock_of_a_dead_process_is_taken_over_with_a_note(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    assert proc.wait(timeout=30) == 0  # reaped: its pid names no process now
    _write_lock(tmp_path, pid=proc.pid, run_id="crashed-run")
    lock = StateLock("run-new", root=tmp_path).acquire()
    try:
        assert lock.stale_note == f"took over a stale lock from run crashed-run (pid {proc.pid})"
        assert _lock_info(tmp_path / "lock")["run_id"] == "run-new"
    finally:
        lock.release()


def test_expired_lock_is_taken_over_even_from_a_live_process(tmp_path: Path) -> None:
    _write_lock(tmp_path, pid=os.getpid(), run_id="slow-run", expires=time.time() - 1)
    with StateLock("run-new", root=tmp_path) as lock:
        assert "took over a stale lock from run slow-run" in lock.stale_note


def test_live_lock_on_another_machine_is_respected(tmp_path: Path) -> None:
    _write_lock(tmp_path, host="other-host.invalid", pid=999_999_999, run_id="remote-run")
    with pytest.raises(LockError, match="run remote-run by someone@elsewhere"):
        StateLock("run-new", root=tmp_path).acquire()


NONSENSE_LOCKS = [
    "",  # a taker died between creating and writing it
    "{not json",
    "[1, 2]",
    '{"pid": "x", "expires": "soon"}',
    # pid 0 on this machine: kill(0, 0) would answer for our own process group
    json.dumps({"pid": 0, "host": socket.gethostname(), "expires": 4e9}),
]


@pytest.mark.parametrize("content", NONSENSE_LOCKS)
def test_unreadable_or_nonsense_lock_is_replaced(tmp_path: Path, content: str) -> None:
    (tmp_path / "lock").write_text(content)
    with StateLock("run-new", root=tmp_path) as lock:
        assert lock.stale_note in ("replaced an unreadable lock", "took over a stale lock from run None (pid x)",
                                   "took over a stale lock from run None (pid 0)")
        assert _lock_info(tmp_path / "lock")["run_id"] == "run-new"


def test_release_only_by_the_owner(tmp_path: Path) -> None:
    owner = StateLock("run-a", root=tmp_path).acquire()
    StateLock("run-b", root=tmp_path).release()  # not ours: left alone
    assert _lock_info(tmp_path / "lock")["run_id"] == "run-a"
    _write_lock(tmp_path, pid=os.getpid() + 1, run_id="run-a")  # same run id, other process
    owner.release()
    assert (tmp_path / "lock").exists()
    _write_lock(tmp_path, pid=os.getpid(), run_id="run-a")
    owner.release()
    assert not (tmp_path / "lock").exists()
    owner.release()  # nothing to release: no error


RACER = """
import os, sys, threading, time
sys.path.insert(0, sys.argv[3])
from pathlib import Path
from runner.journal import StateLock
from runner.errors import LockError
watchdog = threading.Timer(20, os._exit, args=(1,))  # never outlive a broken test
watchdog.daemon = True
watchdog.start()
go = float(sys.argv[2])
while time.time() < go:
    time.sleep(0.0005)
try:
    StateLock("r", root=Path(sys.argv[1])).acquire()
    print("WON", flush=True)
except LockError:
    print("LOST", flush=True)
sys.stdin.read()  # the winner holds the lock (alive) until the test closes stdin
"""


@pytest.mark.parametrize("start", ["free", "stale"])
def test_racing_takers_get_exactly_one_lock(tmp_path: Path, start: str) -> None:
    """Several processes start at the same instant; exactly one may win, whether the lock was
    free or held by a dead process (without a guard, two could both replace it)."""
    root = tmp_path / "state"
    if start == "stale":
        _write_lock(root, pid=999_999_999, run_id="dead")
    else:
        root.mkdir()
    script = tmp_path / "racer.py"
    script.write_text(RACER)
    go = time.time() + 0.8
    repo = str(Path(__file__).resolve().parent.parent)
    procs = [subprocess.Popen([sys.executable, str(script), str(root), str(go), repo], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(6)]
    try:
        outs = [p.stdout.readline().strip() for p in procs if p.stdout is not None]
    finally:
        for p in procs:
            if p.stdin is not None:
                p.stdin.close()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
            if p.stdout is not None:
                p.stdout.close()
    assert sorted(outs) == ["LOST"] * 5 + ["WON"], outs


# ---------------------------------------------------------------- private state


def _mode(path: Path) -> int:
    return path.lstat().st_mode & 0o777


def test_state_folders_are_0700_and_files_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o002)  # a permissive umask: what opsrun writes must not follow it
    try:
        root = tmp_path / ".opsrun"
        with StateLock("r1", root=root):
            assert _mode(root / "lock") == 0o600 and _mode(root / "lock.guard") == 0o600
            j = Journal("r1", root=root)
            try:
                j.event("run_start", playbook="p.yaml")
                j.note("process", host="local", pgid=123)
                j.write_artifact("plan.json", "{}")
                j.write_artifact("escalation.md", "# help")
                j.write_artifact("artifacts/web1/shot.png", b"\x89PNG")
            finally:
                j.close()
    finally:
        os.umask(old)
    for d in (root, root / "runs", j.dir, j.dir / "artifacts", j.dir / "artifacts" / "web1"):
        assert _mode(d) == 0o700, d
    files = [p for p in root.rglob("*") if p.is_file()]
    assert len(files) == 5  # lock.guard, events.jsonl, plan.json, escalation.md, the png (the lock is gone)
    for f in files:
        assert _mode(f) == 0o600, f
    assert [e["type"] for e in read_events(j.path)] == ["run_start", "process"]


def test_existing_loose_state_is_tightened(tmp_path: Path) -> None:
    root = tmp_path / ".opsrun"
    (root / "runs" / "r1").mkdir(parents=True)
    for d in (root, root / "runs", root / "runs" / "r1"):
        d.chmod(0o755)
    events = root / "runs" / "r1" / "events.jsonl"
    events.write_text("")
    events.chmod(0o644)
    Journal("r1", root=root).close()
    assert [_mode(d) for d in (root, root / "runs", root / "runs" / "r1")] == [0o700] * 3
    assert _mode(events) == 0o600


@pytest.mark.parametrize("link", ["runs", "runs/r1", "runs/r1/events.jsonl", "root"])
def test_a_symlink_in_the_state_is_refused_not_followed(tmp_path: Path, link: str) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    root = tmp_path / ".opsrun"
    if link == "root":
        root.symlink_to(elsewhere)
    else:
        (root / link).parent.mkdir(parents=True, exist_ok=True)
        target = elsewhere / "events.jsonl" if link.endswith(".jsonl") else elsewhere
        if link.endswith(".jsonl"):
            target.write_text("")
        (root / link).symlink_to(target)
    with pytest.raises(OpsrunError, match="is a symbolic link"):
        Journal("r1", root=root)
    assert [p.name for p in elsewhere.iterdir()] == (["events.jsonl"] if link.endswith(".jsonl") else [])
    assert (elsewhere / "events.jsonl").read_text() == "" if link.endswith(".jsonl") else True
    if link in ("runs", "root"):
        with pytest.raises(OpsrunError, match="is a symbolic link"):
            list_runs(root)
        with pytest.raises(OpsrunError, match="is a symbolic link"):
            get_run("r1", root)


def test_reading_a_symlinked_journal_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text('{"type": "run_start", "playbook": "not yours"}\n')
    run = tmp_path / ".opsrun" / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "events.jsonl").symlink_to(secret)
    with pytest.raises(OpsrunError, match="is a symbolic link"):
        get_run("r1", tmp_path / ".opsrun")


def test_a_symlink_in_place_of_the_lock_is_replaced_not_followed(tmp_path: Path) -> None:
    root = tmp_path / ".opsrun"
    root.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (root / "lock").symlink_to(victim)
    with StateLock("r1", root=root) as lock:
        assert lock.stale_note == "replaced an unreadable lock"
        assert not (root / "lock").is_symlink() and _mode(root / "lock") == 0o600
    assert victim.read_text() == "keep me"


def test_journal_lines_that_are_json_but_not_objects_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"seq": 1, "type": "run_start"}\n[1, 2]\n"text"\n42\nnull\n{"seq": 2, "type": "run_end"}\n')
    assert [e["seq"] for e in read_events(path)] == [1, 2]


def test_unfinished_processes_are_those_of_steps_that_never_ended() -> None:
    events = [
        {"type": "step_start", "host": "a", "instance": "one"},
        {"type": "process", "host": "a", "pgid": 10},
        {"type": "step_end", "host": "a", "instance": "one"},
        {"type": "step_start", "host": "a", "instance": "two"},
        {"type": "process", "host": "a", "pgid": 11},
        {"type": "step_start", "host": "b", "instance": "one"},
        {"type": "process", "host": "b", "pgid": 12},
    ]
    left = journal.unfinished_processes(events)
    assert [(p["host"], p["instance"], p["pgid"]) for p in left] == [("a", "two", 11), ("b", "one", 12)]


def test_planning_and_applying_leave_the_collector_as_they_found_it() -> None:
    """fewer_gc_passes freezes what exists and raises the young threshold only while it runs:
    afterwards the thresholds are back and nothing stays frozen (serve keeps running)."""
    import gc

    from runner.gc_passes import fewer_gc_passes

    before = gc.get_threshold()
    with fewer_gc_passes():
        assert gc.get_threshold()[0] >= 20_000
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_overlapping_plans_keep_fewer_gc_passes_until_the_last_one_ends() -> None:
    """serve plans and applies several runs at once: the first to end must not hand the
    thresholds back while another still runs, and the last one restores what was there."""
    import gc

    from runner.gc_passes import fewer_gc_passes

    before = gc.get_threshold()
    outer = fewer_gc_passes()
    outer.__enter__()
    with fewer_gc_passes():
        assert gc.get_threshold()[0] >= 20_000
    assert gc.get_threshold()[0] >= 20_000 and gc.get_freeze_count() > 0  # the outer one still runs
    outer.__exit__(None, None, None)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
