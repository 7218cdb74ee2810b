"""SSH transport against real OpenSSH sshd processes on 127.0.0.X (tests/fixtures_ssh.py)."""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import threading
import time
from pathlib import Path
from typing import Any

import paramiko
import pytest

from runner.errors import (
    AuthError,
    Blocked,
    CommandTimeout,
    ConnectError,
    HostKeyError,
    InvalidInput,
    OpsrunError,
)
from runner.model import Host, Probe
from runner.transports import transport_for
from runner.transports.ssh import SSHTransport
from runner.transports.ssh_channel import _send_stdin
from runner.transports.ssh_config import _parse_jump
from tests.conftest import require_peer
from tests.peers.sshd import Sshd, free_port, keygen

pytestmark = pytest.mark.peer


def _open(peer: Sshd, **overrides: Any) -> SSHTransport:
    t = SSHTransport(peer.host(**overrides))
    t.open()
    return t


def _accepted(peer: Sshd) -> int:
    """How many logins this sshd has accepted so far."""
    return peer.log.count("Accepted publickey")


def _wait_gone(pid: int, limit: float = 5.0) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


# ---------------------------------------------------------------- commands


def test_registry_builds_ssh_transport(ssh_hosts: list[Sshd]) -> None:
    t = transport_for(ssh_hosts[0].host())
    assert isinstance(t, SSHTransport)
    assert t.kind == "ssh" and {"shell", "files"} <= t.capabilities


def test_run_returns_rc_stdout_stderr(ssh_hosts: list[Sshd]) -> None:
    with _open(ssh_hosts[0]) as t:
        r = t.run("echo out; echo err >&2; exit 3")
        assert (r.rc, r.stdout, r.stderr) == (3, b"out\n", b"err\n")
        # quoting survives: single quotes, $, newlines reach the remote shell intact
        r = t.run("printf '%s|' \"$0\" 'it'\"'\"'s' \"$(echo a b)\"\necho; whoami")
        assert r.rc == 0
        assert r.out == f"/bin/sh|it's|a b|\n{ssh_hosts[0].user}\n"


def test_stdin_small_and_large(ssh_hosts: list[Sshd]) -> None:
    with _open(ssh_hosts[0]) as t:
        assert t.run("cat", stdin=b"line1\nline2").stdout == b"line1\nline2"
        assert t.run("cat").stdout == b""  # no stdin: EOF, not a hang
        big = os.urandom(3 * 1024 * 1024)  # beyond the SSH window: the writer thread path
        r = t.run("cat; echo done >&2", stdin=big, timeout=60)
        assert r.rc == 0 and r.stderr == b"done\n"
        assert hashlib.sha256(r.stdout).digest() == hashlib.sha256(big).digest()


def test_timeout_raises_and_kills_remote_process(ssh_hosts: list[Sshd], remote_dir: str) -> None:
    pidfile = Path(remote_dir, "pid")
    with _open(ssh_hosts[0]) as t:
        start = time.monotonic()
        with pytest.raises(CommandTimeout) as info:
            t.run(f"sleep 30 & echo $! > {pidfile}; wait", timeout=0.7)
        assert time.monotonic() - start < 10
        assert info.value.host == "ssh1"
        assert "timed out after 0.7s" in str(info.value) and "sleep 30" in str(info.value)
        assert _wait_gone(int(pidfile.read_text())), "the timed-out command was left running"
        assert t.run("echo still").out == "still\n"  # the connection survived


def test_one_connection_for_everything(ssh_hosts: list[Sshd], remote_dir: str) -> None:
    peer = ssh_hosts[1]
    before = _accepted(peer)
    t = SSHTransport(peer.host())
    try:
        t.open()
        t.open()  # idempotent
        t.run("true")
        t.put(f"{remote_dir}/a", b"x")
        assert t.get(f"{remote_dir}/a") == b"x"
        t.probe([Probe("p", "true")])
        t.run("true", stdin=b"y")
    finally:
        t.close()
        t.close()  # safe twice
    deadline = time.monotonic() + 2
    while _accepted(peer) == before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _accepted(peer) - before == 1


def test_stdin_for_a_command_that_already_ended_is_not_a_lost_connection(ssh_hosts: list[Sshd]) -> None:
    """A command may end before it reads its stdin (`true`): its channel is closed by the time
    opsrun writes; that is its result, not a lost connection (the race made `run("true",
    stdin=...)` fail now and then under load). Made certain here: the write waits for the close."""
    t = SSHTransport(ssh_hosts[0].host())
    try:
        t.open()
        assert t._transport is not None
        chan = t._transport.open_session()
        chan.exec_command("true")
        deadline = time.monotonic() + 10
        while not chan.closed and time.monotonic() < deadline:
            chan.recv_exit_status()
            time.sleep(0.01)
        assert chan.closed
        assert _send_stdin(chan, b"y") is None
        assert t.connected and t.run("echo still").out == "still\n"
    finally:
        t.close()


# ---------------------------------------------------------------- files


def test_put_get_modes_and_atomicity(ssh_hosts: list[Sshd], remote_dir: str) -> None:
    path = f"{remote_dir}/sub/dir/app.conf"
    payload = bytes(range(256)) * 100
    with _open(ssh_hosts[0]) as t:
        t.put(path, payload, "0640")
        st = os.stat(path)
        assert stat.S_IMODE(st.st_mode) == 0o640
        assert Path(path).read_bytes() == payload
        assert t.get(path) == payload
        os.chmod(path, 0o600)
        t.put(path, b"second", None)  # no mode: the existing file's mode is kept
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert os.stat(path).st_ino != st.st_ino  # replaced by rename, not rewritten in place
        assert Path(path).read_bytes() == b"second"
        t.put(path, b"", "0755")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o755 and t.get(path) == b""
        # no temp files left behind
        assert sorted(os.listdir(os.path.dirname(path))) == ["app.conf"]


def test_put_get_errors_name_host_and_path(ssh_hosts: list[Sshd], remote_dir: str) -> None:
    with _open(ssh_hosts[0]) as t:
        with pytest.raises(OpsrunError, match=r"ssh1: cannot read .*/missing: .*(No such|not found)"):
            t.get(f"{remote_dir}/missing")
        if os.geteuid() == 0:  # the login user cannot write to root's folder
            locked = Path(remote_dir, "locked")
            locked.mkdir()
            os.chmod(locked, 0o755)
            os.chown(locked, 0, 0)
            with pytest.raises(OpsrunError, match=r"ssh1: cannot write .*/locked/f: .*ermission"):
                t.put(f"{locked}/f", b"x", None)
            assert os.listdir(locked) == []
        with pytest.raises(InvalidInput, match="octal"):
            t.put(f"{remote_dir}/g", b"x", "0o644")
        assert t.run("echo fine").rc == 0


# ---------------------------------------------------------------- probes


class CountingSSH(SSHTransport):
    """Counts the channels (command round trips) the transport opens."""

    channels = 0

    def _session(self) -> paramiko.Channel:
        type(self).channels += 1
        return super()._session()


def test_probe_batch_is_one_round_trip(ssh_hosts: list[Sshd]) -> None:
    probes = [Probe(f"k{i}", f"echo out{i}; echo err{i} >&2; exit {i % 4}") for i in range(20)]
    probes.append(Probe("binary", "printf '\\000\\377 x'"))
    t = CountingSSH(ssh_hosts[0].host())
    CountingSSH.channels = 0
    with t:
        answers = t.probe(probes)
    assert CountingSSH.channels == 1
    assert set(answers) == {p.key for p in probes}
    for i in range(20):
        a = answers[f"k{i}"]
        assert (a.rc, a.stdout, a.stderr) == (i % 4, f"out{i}\n".encode(), f"err{i}\n".encode())
    assert answers["binary"].stdout == b"\x00\xff x"


# ---------------------------------------------------------------- safety guard


def test_guard_blocks_before_anything_runs(ssh_hosts: list[Sshd], remote_dir: str) -> None:
    marker = Path(remote_dir, "marker")
    peer = ssh_hosts[0]

    def guard(command: str) -> str | None:
        return "no-touch" if "touch" in command or "cat >" in command else None

    t = SSHTransport(peer.host(), guard=guard)
    with t:
        with pytest.raises(Blocked, match="no-touch"):
            t.run(f"touch {marker}")
        with pytest.raises(Blocked):
            t.probe([Probe("ok", "true"), Probe("bad", f"touch {marker}")])
        with pytest.raises(Blocked):
            t.put(f"{remote_dir}/f", b"x")
        assert t.run(f"ls {remote_dir}").out == ""
    assert not marker.exists()
    assert os.listdir(remote_dir) == []


# ---------------------------------------------------------------- host keys


def test_unknown_host_key_refused_in_strict_mode(ssh_hosts: list[Sshd], tmp_path: Path) -> None:
    peer = ssh_hosts[0]
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    t = SSHTransport(peer.host(known_hosts_file=str(empty)))
    with pytest.raises(HostKeyError) as info:
        t.open()
    err = info.value
    text = err.render()
    assert err.host == "ssh1"
    assert "unknown host key" in text and f"[{peer.address}]:{peer.port}" in text
    assert f"ssh-ed25519 {peer.fingerprint}" in text
    assert "ssh-keyscan" in text and "accept-new" in text
    assert empty.read_text() == ""
    assert not t.connected


def test_changed_host_key_refused_even_with_accept_new(spare_sshd: Any, tmp_path: Path) -> None:
    peer: Sshd = spare_sshd("rekey")
    with _open(peer) as t:
        assert t.run("true").rc == 0
    old_fp = peer.fingerprint
    known_before = peer.known_hosts.read_text()
    peer.restart(host_key=keygen(tmp_path / "other_host_key"))
    assert peer.fingerprint != old_fp
    for policy in ("strict", "accept-new"):
        t = SSHTransport(peer.host(known_hosts=policy))
        with pytest.raises(HostKeyError) as info:
            t.open()
        text = info.value.render()
        assert "CHANGED" in text and peer.fingerprint in text and old_fp in text
        assert "ssh-keygen -R" in text
    assert peer.known_hosts.read_text() == known_before
    with _open(peer, known_hosts="off") as t:  # only when explicitly asked
        assert t.run("echo off").out == "off\n"


def test_accept_new_records_the_key(ssh_hosts: list[Sshd], tmp_path: Path) -> None:
    peer = ssh_hosts[2]
    known = tmp_path / "ssh" / "known_hosts"  # folder created on demand
    with _open(peer, known_hosts="accept-new", known_hosts_file=str(known)) as t:
        assert t.run("echo new").out == "new\n"
    assert known.read_text().splitlines() == [peer.known_hosts_line()]
    with _open(peer, known_hosts="strict", known_hosts_file=str(known)) as t:  # now known
        assert t.run("true").rc == 0
    assert len(known.read_text().splitlines()) == 1  # not appended twice


def test_off_accepts_unknown_key_without_recording(ssh_hosts: list[Sshd], tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    with _open(ssh_hosts[0], known_hosts="off", known_hosts_file=str(known)) as t:
        assert t.run("true").rc == 0
    assert not known.exists()


# ---------------------------------------------------------------- connect / auth errors


def test_unreachable_port_is_connect_error(ssh_hosts: list[Sshd]) -> None:
    peer = ssh_hosts[0]
    port = free_port(peer.address)
    t = SSHTransport(peer.host(name="db1", port=port))
    with pytest.raises(ConnectError) as info:
        t.run("true")
    assert not isinstance(info.value, HostKeyError)
    assert str(info.value) == (
        f"db1: cannot connect to {peer.user}@{peer.address}:{port}: connection refused")


def test_not_an_ssh_server_is_connect_error() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(10)
    port = server.getsockname()[1]

    def answer() -> None:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        t = SSHTransport(Host("web", "ssh", {"address": "127.0.0.1", "port": port,
                                              "user": "nobody", "connect_timeout": 3}))
        with pytest.raises(ConnectError) as info:
            t.open()
        assert str(info.value).startswith(f"web: cannot connect to nobody@127.0.0.1:{port}: SSH")
    finally:
        server.close()
        thread.join(timeout=10)


def test_bad_settings_are_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="known_hosts must be one of"):
        SSHTransport(Host("h", "ssh", {"known_hosts": "yes-please"}))
    with pytest.raises(InvalidInput, match="port"):
        SSHTransport(Host("h", "ssh", {"port": "twenty-two"}))
    with pytest.raises(InvalidInput, match="jump"):
        SSHTransport(Host("h", "ssh", {"jump": 42}))


@pytest.mark.parametrize(("text", "expected"), [
    ("bastion", {"address": "bastion"}),
    ("me@bastion", {"user": "me", "address": "bastion"}),
    ("me@10.0.0.1:2222", {"user": "me", "address": "10.0.0.1", "port": 2222}),
    ("[::1]:2200", {"address": "::1", "port": 2200}),
    ("a@one,b@two:23", {"user": "b", "address": "two", "port": 23, "jump": "a@one"}),
])
def test_parse_jump(text: str, expected: dict[str, Any]) -> None:
    assert _parse_jump(text) == expected


def test_wrong_key_is_auth_error(ssh_hosts: list[Sshd], tmp_path: Path) -> None:
    other = keygen(tmp_path / "wrong_key")
    t = SSHTransport(ssh_hosts[0].host(key=str(other)))
    with pytest.raises(AuthError) as info:
        t.open()
    text = str(info.value)
    assert text.startswith(f"ssh1: authentication failed for {ssh_hosts[0].user}@")
    assert f"key {other}" in text
    missing = SSHTransport(ssh_hosts[0].host(key=str(tmp_path / "nope")))
    with pytest.raises(AuthError, match="does not exist"):
        missing.open()


def test_wrong_password_is_auth_error(spare_sshd: Any) -> None:
    peer: Sshd = spare_sshd("pw", PasswordAuthentication="yes")
    settings = peer.settings(password="not-the-password")
    del settings["key"]
    t = SSHTransport(Host("pw", "ssh", settings))
    with pytest.raises(AuthError) as info:
        t.open()
    assert "password" in str(info.value)
    assert "not-the-password" not in info.value.render()


def test_connection_lost_mid_command_then_reconnect(spare_sshd: Any) -> None:
    peer: Sshd = spare_sshd("drop")
    t = _open(peer)
    try:
        killer = threading.Timer(0.5, peer.stop)
        killer.start()
        start = time.monotonic()
        try:
            with pytest.raises(ConnectError, match="connection lost") as info:
                t.run("sleep 20", timeout=30)
        finally:
            killer.join()
        assert time.monotonic() - start < 10
        assert not isinstance(info.value, CommandTimeout)
        assert "sleep 20" in str(info.value)
        # sshd is down: a clear refusal, no traceback
        with pytest.raises(ConnectError, match="connection refused"):
            t.run("true")
        peer.start()  # same port, same host key
        t.open()
        assert t.run("echo back").out == "back\n"
    finally:
        t.close()


def test_dropped_idle_connection_reconnects_transparently(spare_sshd: Any) -> None:
    peer: Sshd = spare_sshd("idle")
    with _open(peer) as t:
        assert t.run("true").rc == 0
        peer.kill_connections()  # sshd keeps listening; our connection is gone
        time.sleep(0.2)
        assert t.run("echo again").out == "again\n"
        before = _accepted(peer)
        peer.kill_connections()
        time.sleep(0.2)
        assert t.get("/etc/hostname") == Path("/etc/hostname").read_bytes()
        assert _accepted(peer) >= before


# ---------------------------------------------------------------- sudo


def _require_sudo(peer: Sshd) -> None:
    require_peer(os.geteuid() == 0 and peer.user == "opsrun-test",
                 "sudo tests need root and the opsrun-test user (tests/peers/setup_ssh.sh)")


def test_sudo_runs_as_root(ssh_hosts: list[Sshd]) -> None:
    peer = ssh_hosts[0]
    _require_sudo(peer)
    with _open(peer) as t:
        assert t.run("id -u").out == f"{_uid(peer.user)}\n"
        assert t.run("id -u", sudo=True).out == "0\n"
    with _open(peer, sudo=True) as t:
        r = t.run("id -u; cat; echo e >&2", stdin=b"piped")
        assert (r.rc, r.stdout, r.stderr) == (0, b"0\npiped", b"e\n")
        assert t.run("exit 5").rc == 5
        answers = t.probe([Probe("who", "id -u")])
        assert answers["who"].stdout == b"0\n"


def test_sudo_timeout_kills_root_processes(ssh_hosts: list[Sshd], remote_dir: str) -> None:
    peer = ssh_hosts[0]
    _require_sudo(peer)
    pidfile = Path(remote_dir, "pid")
    with _open(peer, sudo=True) as t:
        with pytest.raises(CommandTimeout):
            t.run(f"sleep 30 & echo $! > {pidfile}; wait", timeout=0.7)
        pid = int(pidfile.read_text())
        assert _wait_gone(pid), "root's timed-out command was left running"
        assert t.run("id -u").out == "0\n"


def test_sudo_password_not_leaked_into_stdin(ssh_hosts: list[Sshd]) -> None:
    peer = ssh_hosts[0]
    _require_sudo(peer)
    with _open(peer, sudo_password="s3cret-pw") as t:  # NOPASSWD: sudo never asks
        r = t.run("cat; id -u", sudo=True, stdin=b"only this\n")
        assert (r.rc, r.stdout) == (0, b"only this\n0\n")


def test_sudo_put_and_get_root_files(ssh_hosts: list[Sshd], remote_dir: str) -> None:
    peer = ssh_hosts[0]
    _require_sudo(peer)
    os.chmod(remote_dir, 0o755)
    os.chown(remote_dir, 0, 0)  # only root may write here now
    path = f"{remote_dir}/etc/app.conf"
    with _open(peer, sudo=True) as t:
        t.put(path, b"root data", "0600")
        st = os.stat(path)
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600)
        assert t.get(path) == b"root data"  # SFTP is refused; read through sudo
        os.chown(path, 1, 1)
        t.put(path, b"again", None)  # existing owner and mode kept
        st = os.stat(path)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1, 1, 0o600)
        assert Path(path).read_bytes() == b"again"
        assert sorted(os.listdir(os.path.dirname(path))) == ["app.conf"]
        home = t.run("echo $HOME").out.strip()
        assert not [n for n in os.listdir(home) if n.startswith(".opsrun-put-")]


def _uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid


# ---------------------------------------------------------------- ssh config and jump hosts


def test_ssh_config_alias(ssh_hosts: list[Sshd], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    peer = ssh_hosts[1]
    cfg = tmp_path / "config"
    cfg.write_text(
        f"Host webalias\n  HostName {peer.address}\n  Port {peer.port}\n  User {peer.user}\n"
        f"  IdentityFile {peer.client_key}\n"
    )
    monkeypatch.setenv("OPSRUN_SSH_CONFIG", str(cfg))
    host = Host("webalias", "ssh", {"known_hosts_file": str(peer.known_hosts)})
    with SSHTransport(host) as t:
        assert t.run("whoami").out == f"{peer.user}\n"
    # explicit inventory settings win over the config file
    port = free_port(peer.address)
    t = SSHTransport(Host("webalias", "ssh", {"known_hosts_file": str(peer.known_hosts),
                                              "port": port}))
    with pytest.raises(ConnectError, match=f"{peer.address}:{port}: connection refused"):
        t.open()


def test_jump_host(ssh_hosts: list[Sshd]) -> None:
    bastion, target = ssh_hosts[0], ssh_hosts[2]
    before = _accepted(bastion)
    host = target.host("inner", jump=bastion.settings())
    with SSHTransport(host) as t:
        assert t.run("echo via").out == "via\n"
        assert isinstance(t._transport.sock, paramiko.Channel)  # tunnelled, not a TCP socket
        assert t._jump is not None and t._jump.connected
    assert _accepted(bastion) == before + 1
    # string form, inheriting key and known_hosts file from the target
    host = target.host("inner2", jump=f"{bastion.user}@{bastion.address}:{bastion.port}")
    with SSHTransport(host) as t:
        assert t.run("true").rc == 0
    assert _accepted(bastion) == before + 2


def test_proxyjump_from_ssh_config(ssh_hosts: list[Sshd], tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    bastion, target = ssh_hosts[0], ssh_hosts[2]
    cfg = tmp_path / "config"
    cfg.write_text("".join(
        f"Host {alias}\n  HostName {peer.address}\n  Port {peer.port}\n  User {peer.user}\n"
        f"  IdentityFile {peer.client_key}\n" + extra
        for alias, peer, extra in (("bastion", bastion, ""),
                                   ("inner", target, "  ProxyJump bastion\n"))
    ))
    monkeypatch.setenv("OPSRUN_SSH_CONFIG", str(cfg))
    before = _accepted(bastion)
    with SSHTransport(Host("inner", "ssh", {"known_hosts_file": str(target.known_hosts)})) as t:
        assert t.run("echo hop").out == "hop\n"
        assert isinstance(t._transport.sock, paramiko.Channel)
    assert _accepted(bastion) == before + 1


def test_jump_errors_name_the_hop(ssh_hosts: list[Sshd]) -> None:
    bastion, target = ssh_hosts[0], ssh_hosts[2]
    dead = free_port(bastion.address)
    t = SSHTransport(target.host("inner", jump=bastion.settings(port=dead)))
    with pytest.raises(ConnectError, match=r"jump .*connection refused"):
        t.open()
    closed = free_port(target.address)
    t = SSHTransport(target.host("inner", port=closed, jump=bastion.settings()))
    with pytest.raises(ConnectError, match="through jump host") as info:
        t.open()
    assert f"{target.address}:{closed}" in str(info.value)
    t.close()



def test_every_read_acks_at_once(ssh_hosts: list[Sshd]) -> None:
    """The socket under paramiko sets TCP_QUICKACK after each read: sshd's reply to the first
    channel request no longer waits ~40 ms for a delayed ACK (ssh_channel.QuickAckSocket)."""
    from runner.transports.ssh_channel import QuickAckSocket

    server = socket.create_server(("127.0.0.1", 0))
    try:
        client = socket.create_connection(server.getsockname())
        peer, _ = server.accept()
        wrapped = QuickAckSocket(client)
        peer.sendall(b"hello")
        assert wrapped.recv(5) == b"hello"
        if hasattr(socket, "TCP_QUICKACK"):
            assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK) == 1
        assert wrapped.getsockname() == client.getsockname()  # the rest is the socket's own
        wrapped.close()
        peer.close()
    finally:
        server.close()
    with _open(ssh_hosts[0]) as t:
        assert t._transport is not None and isinstance(t._transport.sock, QuickAckSocket)
        assert t.run("echo ok").out == "ok\n"


def test_aes_gcm_is_negotiated_where_both_sides_have_it(ssh_hosts: list[Sshd]) -> None:
    """The client offers AES-GCM first (no per-packet HMAC computed in Python): OpenSSH picks
    it, for the hop and through a jump host alike; the rest of paramiko's list stays offered."""
    import paramiko

    from runner.transports.ssh_channel import FastTransport

    assert FastTransport._preferred_ciphers[0] == "aes128-gcm@openssh.com"
    assert set(paramiko.Transport._preferred_ciphers) <= set(FastTransport._preferred_ciphers)
    with _open(ssh_hosts[0]) as t:
        assert t._transport is not None
        assert (t._transport.local_cipher, t._transport.remote_cipher) == ("aes128-gcm@openssh.com",) * 2
        assert t.run("echo ok").out == "ok\n"
    bastion, target = ssh_hosts[0], ssh_hosts[2]
    inner = SSHTransport(target.host("inner", jump=bastion.settings()))
    try:
        inner.open()
        assert inner._transport is not None and inner._transport.local_cipher == "aes128-gcm@openssh.com"
        assert inner.run("echo in").out == "in\n"
    finally:
        inner.close()


def test_paramiko_starts_without_invoke_or_importlib_metadata() -> None:
    """runner.transports gives paramiko stand-ins for what it imports only to use later or
    once: invoke (for `Match exec`), imported on first use, and importlib.metadata (its own
    version, read from its dist-info), which leaves at once; afterwards both are the real
    modules, and paramiko.__version__ is the installed version."""
    import subprocess
    import sys

    code = r"""
import sys, types
import runner.transports
import paramiko
assert "importlib.metadata" not in sys.modules, "the real importlib.metadata was imported"
assert not any(type(f).__name__ == "_QuickParamiko" for f in sys.meta_path)
inv = sys.modules.get("invoke")
assert inv is None or type(inv) is not types.ModuleType, "the real invoke was imported"
import importlib.metadata
assert type(sys.modules["importlib.metadata"]) is types.ModuleType
assert importlib.metadata.version("paramiko") == paramiko.__version__, paramiko.__version__
if inv is not None:
    inv.Context  # first use: the real invoke
    assert type(sys.modules["invoke"]) is types.ModuleType
print("ok", paramiko.__version__)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok ")


def test_a_private_key_is_loaded_once_for_every_host_using_it(ssh_hosts: list[Sshd], tmp_path: Path) -> None:
    """Hosts sharing a key file get the same loaded key (paramiko given a file name reads it
    per connection, once per key type it tries); a changed file is loaded again; what cannot
    be loaded here (not a key) is left to paramiko, whose error is the one reported."""
    import shutil

    from runner.transports import ssh_config

    key = tmp_path / "id_test"
    shutil.copy(ssh_hosts[0].client_key, key)
    key.chmod(0o600)
    transports = [SSHTransport(p.host(f"k{i}", key=str(key))) for i, p in enumerate(ssh_hosts[:2])]
    try:
        for t in transports:
            t.open()
            assert t.run("echo ok").out == "ok\n"
    finally:
        for t in transports:
            t.close()
    loaded = [k for k in ssh_config._keys_cache if k[0] == str(key)]
    assert len(loaded) == 1, "the transports did not log in with the loaded key"
    first = ssh_config._keys_cache[loaded[0]]
    assert ssh_config.loaded_key(str(key), None) is first
    key.write_bytes(key.read_bytes())  # rewritten: looked at again
    os.utime(key, ns=(1, 1))
    assert ssh_config.loaded_key(str(key), None) is not first
    junk = tmp_path / "not_a_key"
    junk.write_text("hello\n")
    assert ssh_config.loaded_key(str(junk), None) is None
    t = SSHTransport(ssh_hosts[0].host("junk", key=str(junk)))
    with pytest.raises(OpsrunError):
        t.open()
    t.close()


def test_data_ready_is_set_while_either_buffer_has_data() -> None:
    """ssh_channel.DataReady stands in for select() on paramiko's Channel.fileno() pipe: set
    while stdout or stderr holds data or is closed, cleared only when both are drained."""
    from paramiko.buffered_pipe import BufferedPipe

    from runner.transports.ssh_channel import DataReady

    class Chan:
        in_buffer = BufferedPipe()
        in_stderr_buffer = BufferedPipe()

    chan = Chan()
    ready = DataReady(chan)  # type: ignore[arg-type]
    assert not ready.wait(0)
    chan.in_stderr_buffer.feed(b"warning\n")
    chan.in_buffer.feed(b"out")
    assert ready.wait(0)
    assert chan.in_buffer.read(10) == b"out"
    assert ready.wait(0), "stderr still holds data"
    assert chan.in_stderr_buffer.read(100) == b"warning\n"
    assert not ready.wait(0)
    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(ready.wait(5)))
    waiter.start()
    time.sleep(0.05)
    chan.in_buffer.close()  # EOF wakes a waiter too
    waiter.join(5)
    assert woke == [True]


def test_known_hosts_index_answers_as_paramikos_lookup(ssh_hosts: list[Sshd], tmp_path: Path) -> None:
    """ssh_config.KnownHosts: a file without hashed names is looked up through an index, with
    paramiko's answer (the first key of each type; names on one line; ports in brackets); a
    file with hashed names goes to paramiko's own lookup."""
    from runner.transports.ssh_config import KnownHosts

    pubs = [Path(str(p.client_key) + ".pub").read_text().split()[:2] for p in ssh_hosts[:2]]
    host_lines = Path(ssh_hosts[0].known_hosts).read_text().splitlines()
    plain = tmp_path / "plain"
    plain.write_text("\n".join([
        *host_lines,
        f"alpha,beta {pubs[0][0]} {pubs[0][1]}",
        f"alpha {pubs[1][0]} {pubs[1][1]}",  # a second key of the same type: the first wins
        f"[gamma]:2222 {pubs[1][0]} {pubs[1][1]}",
        "# a comment", "",
    ]) + "\n")
    ref = paramiko.HostKeys(str(plain))
    mine = KnownHosts(plain)
    names = ["alpha", "beta", "[gamma]:2222", "gamma", "nobody"]
    names += [line.split()[0].split(",")[0] for line in host_lines if line and not line.startswith("#")]
    for name in names:
        found = ref.lookup(name)
        want = {t: found[t] for t in found} if found else {}
        assert mine.lookup(name) == want, name
    assert mine._index is not None
    hashed = tmp_path / "hashed"
    h = paramiko.HostKeys()
    h.add(paramiko.HostKeys.hash_host("alpha"), pubs[0][0], paramiko.PKey.from_type_string(
        pubs[0][0], __import__("base64").b64decode(pubs[0][1])))
    h.save(str(hashed))
    ks = KnownHosts(hashed)
    assert ks._index is None and set(ks.lookup("alpha")) == {pubs[0][0]} and ks.lookup("beta") == {}
