"""Path facts from file access (runner/steps/file_facts.py): over SFTP on real sshds and with
os calls on the local machine, every answer is byte for byte the shell probe's answer, or
left to the shell (refused, unknown owner, too big); SSH hosts then start no process to plan
a path step, and their mkdir/chmod/rm of one path are SFTP requests, shown as such."""

from __future__ import annotations

import dataclasses
import os
import pwd
import stat
from pathlib import Path
from typing import Any

import pytest

from runner.errors import Blocked, OpsrunError
from runner.model import Action, Host, Probe, ProbeResult
from runner.steps import base
from runner.steps import facts as F
from runner.steps.base import StepContext
from runner.transports.base import Transport, passwd_names, status_identity
from runner.transports.local import LocalTransport
from runner.transports.ssh import SSHTransport
from tests.peers.sshd import Sshd

ASKED = [("stat", {}), ("stat", {"digest": True}), ("content", {}), ("sha256", {}), ("exists", {})]


def _tree(root: Path, owner: tuple[int, int] | None) -> dict[str, str]:
    """Paths of every kind under `root`; -> name: what the file access must do with it
    ("same": answer as the shell does; "shell": leave some facts to the shell)."""
    (root / "f").write_bytes(b"abc\n")
    (root / "f").chmod(0o640)
    (root / "dir").mkdir()
    (root / "dir").chmod(0o2755)
    os.symlink(root / "f", root / "ln")
    os.symlink(root / "dir", root / "dirln")
    os.symlink(root / "nowhere", root / "dangling")
    os.symlink("with\nnewline\n", root / "oddln")
    os.mkfifo(root / "fifo")
    (root / "big").write_bytes(b"x" * (F.MAX_CONTENT + 1))
    (root / "exact").write_bytes(b"y" * F.MAX_CONTENT)
    (root / "empty").write_bytes(b"")
    (root / "crlf").write_bytes(b"a\r\nb\r\n\x00\xff")
    (root / "secret").write_bytes(b"s")
    (root / "secret").chmod(0o200)  # the owner cannot read it
    (root / "shut").mkdir()
    (root / "shut" / "in").write_text("x")
    made = {n: "same" for n in ("f", "dir", "ln", "dirln", "dangling", "oddln", "fifo", "exact", "empty", "crlf",
                                "nope", "nope/deeper", "f/below", "dangling/x", "dir/nope/x", "ln/x")}
    made.update(big="shell", secret="shell", shut="same", **{"shut/in": "shell", "shut/nope": "shell"})
    if owner is not None:
        for p in [root, *root.rglob("*")]:
            os.lchown(p, *owner)
    (root / "shut").chmod(0o000)
    if os.geteuid() == 0:
        (root / "stranger").write_text("z")
        os.chown(root / "stranger", 54321, 54321)  # no account has these ids
        made["stranger"] = "shell"
    return made


def _compare(t: Transport, root: Path, made: dict[str, str], host: Host) -> None:
    fs = t.files()
    assert fs is not None
    for name, expect in made.items():
        path = str(root / name)
        for fact, options in ASKED:
            probe = F.ask(host, fact, path, **options)
            assert probe.files is not None
            by_shell = t.probe([dataclasses.replace(probe, files=None)])[probe.key]
            by_files = probe.files(fs)
            where = f"{fact}{options} of {name}"
            if by_files is None:
                assert expect == "shell", f"{where}: left to the shell, but the file access can answer it"
                continue
            assert (by_files.rc, by_files.stdout) == (by_shell.rc, by_shell.stdout), where
            assert by_files.fingerprint() == by_shell.fingerprint()
        if expect == "shell":
            answers = [F.ask(host, fact, path, **o).files(fs) for fact, o in ASKED]  # type: ignore[misc]
            assert None in answers, f"{name}: expected some fact left to the shell"
    ident = F.ask(host, "identity")
    assert ident.files is not None
    assert ident.files(fs) == t.probe([dataclasses.replace(ident, files=None)])[ident.key]


@pytest.mark.peer
@pytest.mark.parametrize("names", ["by id", "tables"])
def test_sftp_answers_as_the_shell_does(ssh_hosts: list[Sshd], spare_sshd: Any, remote_dir: str,
                                        names: str) -> None:
    """Owner names asked of the server by id (OpenSSH's users-groups-by-id), or read from
    /etc/passwd and /etc/group where the server refuses that request: the same answers."""
    peer = ssh_hosts[0] if names == "by id" else spare_sshd(
        "noids", Subsystem="sftp internal-sftp -P users-groups-by-id")
    pw = pwd.getpwnam(peer.user)
    root = Path(remote_dir)
    made = _tree(root, (pw.pw_uid, pw.pw_gid) if os.geteuid() == 0 else None)
    host = peer.host()
    try:
        with SSHTransport(host) as t:
            _compare(t, root, made, host)
            assert t._names.by_id is (names == "by id")
            assert (t._names.users is None) is (names == "by id")  # the tables only when needed
    finally:
        (root / "shut").chmod(0o700)


@pytest.mark.peer
def test_a_planned_file_costs_few_sftp_requests(ssh_hosts: list[Sshd], remote_dir: str) -> None:
    """What a no-change re-run asks per file, counted on the wire (paramiko numbers each SFTP
    request): lstat, one read of exactly the stat's size (no request only to hear "end of
    file"), the owner names in one request for user and group, and the identity from one read
    of /proc/self/status (open, read, close)."""
    Path(remote_dir, "app.conf").write_text("x = 1\n" * 50)
    pw = pwd.getpwnam(ssh_hosts[0].user)
    if os.geteuid() == 0:
        os.chown(Path(remote_dir, "app.conf"), pw.pw_uid, pw.pw_gid)  # the login user's, as a deploy's are
    host = ssh_hosts[0].host()
    with SSHTransport(host) as t:
        fs = t.files()
        assert fs is not None and t._sftp is not None
        before = t._sftp.request_number
        digest = F.ask(host, "stat", f"{remote_dir}/app.conf", digest=True)
        content = F.ask(host, "content", f"{remote_dir}/app.conf")
        got = t.probe([digest, content, F.ask_host(host, "identity")])
        asked = t._sftp.request_number - before
        assert got[content.key].stdout == b"x = 1\n" * 50
        assert b"sha256 " in got[digest.key].stdout
        # lstat 1 + open/read/close 3 + names 1 + status open/read/close 3
        assert asked == 8, f"{asked} SFTP requests"
        before = t._sftp.request_number
        t.probe([F.ask(host, "stat", f"{remote_dir}/app.conf")])  # the names are known now
        assert t._sftp.request_number - before == 1


def test_os_calls_answer_as_the_shell_does(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    made = _tree(root, None)
    if os.geteuid() == 0:  # root reads what the owner may not
        made.update(secret="same", **{"shut/in": "same", "shut/nope": "same"})
    host = Host("here", "local")
    try:
        _compare(LocalTransport(host), root, made, host)
    finally:
        (root / "shut").chmod(0o700)


def test_a_shell_of_the_hosts_own_answers_every_probe() -> None:
    """A `shell:` wrapper (a chroot, fakeroot...) may see other files: nothing bypasses it."""
    for host in (Host("a", "local", settings={"shell": "/opt/chroot-sh"}),
                 Host("b", "ssh", settings={"shell": "/usr/local/bin/wrapped"}),
                 Host("c", "adb")):
        assert F.ask(host, "stat", "/etc/motd").files is None
        assert F.ask(host, "identity").files is None
    assert F.ask(Host("d", "local", settings={"shell": "/bin/bash"}), "stat", "/x").files is not None
    assert F.ask(Host("e", "ssh"), "check", "test -e /x").files is None  # a playbook's own command


def test_account_tables_and_status_parse_like_the_system() -> None:
    assert passwd_names("root:x:0:0::/root:/bin/sh\n+nis\n#c:x:9:9\nbad\nsecond:x:0:0\nweb:x:33:33\n") == {
        0: "root", 33: "web"}
    assert status_identity("Name:\tx\nUmask:\t0027\nUid:\t1000\t1001\t1001\t1001\nGid:\t50\t51\t51\t51\n") == (
        1001, 51, 0o027)
    assert status_identity("Uid:\t1\t1\t1\t1\nGid:\t1\t1\t1\t1\n") is None  # an old kernel: no Umask line


# ---------------------------------------------------------------- no process to plan


class CountingSSH(SSHTransport):
    runs = 0

    def _run(self, command: str, **kw: Any) -> Any:
        type(self).runs += 1
        return super()._run(command, **kw)


@pytest.mark.peer
def test_planning_path_steps_starts_no_process_on_an_ssh_host(ssh_hosts: list[Sshd], remote_dir: str) -> None:
    Path(remote_dir, "settings.ini").write_text("a = 1\n")
    host = ssh_hosts[0].host()
    ctx = StepContext(host=host)
    probes: list[Probe] = []
    for i, (kind, params) in enumerate((("file", {"path": f"{remote_dir}/conf.d", "state": "directory", "mode": "0755"}),
                         ("file", {"path": f"{remote_dir}/conf.d/app.conf", "content": "x\n"}),
                         ("line", {"path": f"{remote_dir}/settings.ini", "line": "b = 2"}),
                         ("file", {"path": f"{remote_dir}/stale.txt", "state": "absent"}))):
        k = base.get(kind)
        probes += [dataclasses.replace(p, key=f"{i}/{p.key}") for p in k.probes(k.normalize(params), ctx)]
    probes.append(F.ask_host(host, "identity"))
    CountingSSH.runs = 0
    with CountingSSH(host) as t:
        answers = t.probe(probes)
        assert CountingSSH.runs == 0, "a path fact started a shell on the host"
        assert len(answers) == len(probes)
        assert answers["2/content"] == ProbeResult(0, b"a = 1\n")
        t.probe([*probes, Probe("own", "true")])  # a command of the playbook's own: one batch
        assert CountingSSH.runs == 1
    CountingSSH.runs = 0
    with CountingSSH(ssh_hosts[0].host(sudo=True)) as t:  # root sees other files: the shell answers
        if t._conn_user() != "root":
            t.probe(probes)
            assert CountingSSH.runs == 1


# ---------------------------------------------------------------- SFTP requests as actions


def _plan(host: Host, params: dict[str, Any], transport: Transport) -> Any:
    kind = base.get("file")
    ctx = StepContext(host=host)
    p = kind.prepare(kind.normalize(params), ctx)
    return kind.plan(p, transport.probe(kind.probes(p, ctx)), ctx)


@pytest.mark.peer
def test_mkdir_chmod_rm_are_sftp_requests_shown_as_sent(ssh_hosts: list[Sshd], remote_dir: str) -> None:
    host = ssh_hosts[0].host()
    folder = f"{remote_dir}/conf d"
    with CountingSSH(host) as t:
        CountingSSH.runs = 0
        change = _plan(host, {"path": folder, "state": "directory", "mode": "0777"}, t)
        assert [a.display() for a in change.actions] == [f"sftp mkdir {folder} (mode 0777)", f"sftp chmod {folder} 0777"]
        for a in change.actions:
            assert t.execute(a).rc == 0
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o777  # past the umask, as chmod does
        Path(folder, "old").write_text("x")
        change = _plan(host, {"path": f"{folder}/old", "state": "absent"}, t)
        assert [a.display() for a in change.actions] == [f"sftp remove {folder}/old"]
        assert t.execute(change.actions[0]).rc == 0 and not Path(folder, "old").exists()
        assert t.execute(change.actions[0]).rc == 0  # already gone: done, as `rm -f`
        change = _plan(host, {"path": folder, "state": "directory", "mode": "0750"}, t)
        assert [a.display() for a in change.actions] == [f"sftp chmod {folder} 0750"]
        assert CountingSSH.runs == 0
        # what cannot be one request stays a command: a folder whose folder is missing, a tree
        deep = f"{remote_dir}/a/b"
        change = _plan(host, {"path": deep, "state": "directory"}, t)
        assert [a.display() for a in change.actions] == [f"mkdir -p -- {deep}"]
        change = _plan(host, {"path": folder, "state": "absent"}, t)
        assert [a.display() for a in change.actions] == [f"rm -rf -- '{folder}'"]
        # a refusal is a failed action with the server's reason, the connection kept
        failed = t.execute(Action("sftp", method="mkdir", path="/proc/opsrun-no"))
        assert failed.rc == 1 and "sftp mkdir /proc/opsrun-no" in failed.err
        assert t.run("echo still").out == "still\n"
    sudo = ssh_hosts[0].host(sudo=True)  # SFTP acts as the login user: under sudo, commands
    change = base.get("file").plan({"path": folder, "state": "absent"}, {"stat": ProbeResult(0, b"file\n644 a a 1\n")},
                                   StepContext(host=sudo))
    assert [a.display() for a in change.actions] == [f"rm -f -- '{folder}'"]


@pytest.mark.peer
def test_sftp_requests_pass_the_safety_rules(ssh_hosts: list[Sshd], remote_dir: str) -> None:
    keep = Path(remote_dir, "keep")
    keep.write_text("x")
    if os.geteuid() == 0:
        pw = pwd.getpwnam(ssh_hosts[0].user)
        os.chown(keep, pw.pw_uid, pw.pw_gid)

    def guard(command: str) -> str | None:
        return "no-rm" if command.startswith("rm ") else None

    with SSHTransport(ssh_hosts[0].host(), guard=guard) as t:
        with pytest.raises(Blocked, match="no-rm"):
            t.execute(Action("sftp", method="remove", path=str(keep)))
        assert t.execute(Action("sftp", method="chmod", path=str(keep), mode="0600")).rc == 0
    assert keep.exists()


def test_sftp_actions_are_checked_digested_and_shown_as_sent() -> None:
    mk = Action("sftp", method="mkdir", path="/srv/a b", mode="0755")
    assert mk.display() == "sftp mkdir /srv/a b (mode 0755)"
    assert mk.checked_as() == "mkdir -- '/srv/a b'"
    assert Action("sftp", method="remove", path="/x").checked_as() == "rm -f -- /x"
    assert Action("sftp", method="chmod", path="/x", mode="0600").checked_as() == "chmod 0600 -- /x"
    assert mk.digest() != Action("sftp", method="mkdir", path="/srv/a b", mode="0700").digest()
    assert mk.digest() != Action("cmd", command="mkdir -p -- '/srv/a b'").digest()
    assert mk.to_json()["method"] == "mkdir"
    with pytest.raises(Exception, match="cannot send SFTP requests"):
        LocalTransport(Host("here", "local")).execute(mk)


@pytest.mark.peer
def test_a_steps_own_sudo_decides_over_the_hosts_for_file_access(ssh_hosts: list[Sshd], remote_dir: str) -> None:
    """Probes asked with a step's `sudo: true` go to the shell under sudo (SFTP would answer as
    the login user), the other probes of the batch still over SFTP; its mkdir/chmod/rm are
    commands, and an SFTP request under sudo is refused at the transport. `sudo: false` on a
    sudo host is the other way round."""
    if os.geteuid() != 0:
        pytest.skip("needs the sudoers drop-in tests/peers/setup_ssh.sh installs as root")
    host = ssh_hosts[0].host()
    probes = [F.ask_host(host, "identity"), dataclasses.replace(F.ask_host(host, "identity"), key="root", sudo=True),
              dataclasses.replace(F.ask(host, "stat", remote_dir), key="plain")]
    CountingSSH.runs = 0
    with CountingSSH(host) as t:
        answers = t.probe(probes)
        assert CountingSSH.runs == 1  # only the sudo group started a shell
        assert answers["root"].stdout.split(b"\n")[0] == b"root"
        assert answers[F.IDENTITY_KEY].stdout.split(b"\n")[0] == ssh_hosts[0].user.encode()
        with pytest.raises(OpsrunError, match="through sudo"):
            t.execute(Action("sftp", method="mkdir", path=f"{remote_dir}/x", sudo=True))
        assert not Path(remote_dir, "x").exists()
    kind = base.get("file")
    folder = {"path": f"{remote_dir}/made", "state": "directory", "mode": "0750"}
    absent = {"stat": ProbeResult(0, b"absent\n")}
    as_root = kind.plan(kind.normalize(folder), absent, StepContext(host=host, sudo=True))
    assert [a.kind for a in as_root.actions] == ["cmd", "cmd"]
    plain = kind.plan(kind.normalize(folder), absent, StepContext(host=ssh_hosts[0].host(sudo=True), sudo=False))
    assert [a.kind for a in plain.actions] == ["sftp", "sftp"]
