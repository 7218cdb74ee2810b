"""Real OpenSSH `sshd` peers for tests: one process per fake host on 127.0.0.X, own host key.

Starts `/usr/sbin/sshd -D -e -f CONFIG` with throw-away keys in a private folder, waits
(bounded) until it speaks SSH, and stops it by PID (its per-connection children too).
It never touches the real ~/.ssh or /etc/ssh, and never listens outside 127.0.0.0/8.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SSHD = shutil.which("sshd", path="/usr/sbin:/usr/local/sbin:/sbin") or "/usr/sbin/sshd"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
TEST_USER = "opsrun-test"
START_TIMEOUT = 10.0


def user_ready(name: str = TEST_USER) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def keygen(path: Path, comment: str = "opsrun-test") -> Path:
    """Write a fresh ed25519 key pair (no passphrase) to `path` and `path`.pub."""
    for p in (path, path.with_name(path.name + ".pub")):
        p.unlink(missing_ok=True)
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True, capture_output=True, timeout=30,
    )
    return path


def pub_line(key: Path) -> str:
    """`TYPE BASE64` of a key pair's public half (comment dropped)."""
    parts = key.with_name(key.name + ".pub").read_text().split()
    return f"{parts[0]} {parts[1]}"


def fingerprint(key: Path) -> str:
    """SHA256:... fingerprint of a key pair's public half, as ssh prints it."""
    blob = base64.b64decode(pub_line(key).split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def known_hosts_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


@dataclass
class Sshd:
    """One sshd standing for one host. `stop()`/`start()` keep address, port and host key."""

    name: str
    address: str
    port: int
    user: str
    client_key: Path  # private key the tests log in with
    host_key: Path  # this sshd's private host key
    workdir: Path
    known_hosts: Path  # known_hosts file listing every fixture host (strict mode works)
    extra_config: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------ describing it
    @property
    def fingerprint(self) -> str:
        return fingerprint(self.host_key)

    def known_hosts_line(self) -> str:
        return f"{known_hosts_name(self.address, self.port)} {pub_line(self.host_key)}"

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """Inventory settings for runner.model.Host(transport='ssh')."""
        out: dict[str, Any] = {
            "address": self.address,
            "port": self.port,
            "user": self.user,
            "key": str(self.client_key),
            "known_hosts": "strict",
            "known_hosts_file": str(self.known_hosts),
            "connect_timeout": 5,
        }
        out.update(overrides)
        return out

    def host(self, name: str | None = None, **overrides: Any) -> Any:
        from runner.model import Host

        return Host(name=name or self.name, transport="ssh", settings=self.settings(**overrides))

    @property
    def log(self) -> str:
        try:
            return (self.workdir / f"{self.name}.log").read_text(errors="replace")
        except OSError:
            return ""

    # ------------------------------------------------------------ lifecycle
    def _config(self) -> Path:
        cfg = self.workdir / f"{self.name}.sshd_config"
        options: dict[str, str] = {
            "ListenAddress": f"{self.address}:{self.port}",
            "HostKey": str(self.host_key),
            "PidFile": str(self.workdir / f"{self.name}.pid"),
            "AuthorizedKeysFile": str(self.workdir / "authorized_keys"),
            "UsePAM": "no",
            "StrictModes": "no",
            "PubkeyAuthentication": "yes",
            "PasswordAuthentication": "no",
            "KbdInteractiveAuthentication": "no",
            "PermitRootLogin": "no",
            "AllowUsers": self.user,
            "AllowTcpForwarding": "yes",
            "Subsystem": "sftp internal-sftp",
            "UseDNS": "no",
            "PrintMotd": "no",
            "PrintLastLog": "no",
            "MaxStartups": "100:30:200",
            "MaxSessions": "50",
            "MaxAuthTries": "20",
            "LogLevel": "INFO",
        }
        options.update(self.extra_config)
        cfg.write_text("".join(f"{k} {v}\n" for k, v in options.items()))
        return cfg

    def start(self, host_key: Path | None = None) -> None:
        """Start sshd (optionally with another host key) and wait until it speaks SSH."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"{self.name}: sshd already running (pid {self.proc.pid})")
        if host_key is not None:
            self.host_key = host_key
        cfg = self._config()
        log = (self.workdir / f"{self.name}.log").open("ab")
        try:
            self.proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(cfg)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name}: sshd exited ({self.proc.returncode}):\n{self.log}")
            if _speaks_ssh(self.address, self.port):
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name}: sshd not ready after {START_TIMEOUT:g}s:\n{self.log}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the listener and every connection it serves (so clients see the loss)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            for pid in _descendants(proc.pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        else:
            proc.wait()
        # sshd's per-connection processes outlive the listener; end them by PID.
        deadline = time.monotonic() + 5
        while _listening(self.address, self.port) and time.monotonic() < deadline:
            time.sleep(0.02)

    def kill_connections(self) -> None:
        """Drop every open connection (SIGKILL the per-connection sshd), keep listening."""
        if self.proc is None:
            return
        for pid in _descendants(self.proc.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def restart(self, host_key: Path | None = None) -> None:
        self.stop()
        self.start(host_key)


def _descendants(pid: int) -> list[int]:
    """Every process below `pid`: sshd forks a privileged and an unprivileged process per
    connection (and the session's shell); all must die for the client to see the loss."""
    out: list[int] = []
    todo = [pid]
    while todo:
        kids = _children(todo.pop())
        out.extend(kids)
        todo.extend(kids)
    return out


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # field 4 (ppid) comes after the ")" closing the command name
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(pid):
            out.append(int(entry))
    return out


def _speaks_ssh(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1) as s:
            s.settimeout(1)
            return s.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def _listening(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


class SshdFarm:
    """A private folder with one client key, N sshds and a known_hosts file for them."""

    def __init__(self, workdir: Path, user: str) -> None:
        self.workdir = workdir
        self.user = user
        os.chmod(workdir, 0o755)  # sshd reads AuthorizedKeysFile as the login user
        self.client_key = keygen(workdir / "client_ed25519", "opsrun-test-client")
        os.chmod(self.client_key, 0o600)
        auth = workdir / "authorized_keys"
        auth.write_text(pub_line(self.client_key) + "\n")
        os.chmod(auth, 0o644)
        self.known_hosts = workdir / "known_hosts"
        self.known_hosts.write_text("")
        self.hosts: list[Sshd] = []
        self._next_addr = 2
        self._keys = 0

    def new_host_key(self) -> Path:
        self._keys += 1
        key = keygen(self.workdir / f"host{self._keys}_ed25519", "opsrun-test-host")
        os.chmod(key, 0o600)
        return key

    def add(self, name: str, *, register: bool = True, **extra_config: str) -> Sshd:
        """Start one more sshd on the next 127.0.0.X; list its key in known_hosts."""
        if self._next_addr > 254:
            raise RuntimeError("no 127.0.0.X address left for another sshd")
        address = f"127.0.0.{self._next_addr}"
        self._next_addr += 1
        peer = Sshd(
            name=name, address=address, port=free_port(address), user=self.user,
            client_key=self.client_key, host_key=self.new_host_key(), workdir=self.workdir,
            known_hosts=self.known_hosts, extra_config=dict(extra_config),
        )
        self.hosts.append(peer)
        peer.start()
        if register:
            with self.known_hosts.open("a") as fh:
                fh.write(peer.known_hosts_line() + "\n")
        return peer

    def stop_all(self) -> None:
        for peer in self.hosts:
            peer.stop()
