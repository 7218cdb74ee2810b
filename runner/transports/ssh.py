"""SSH hosts: one paramiko connection per host for the whole run, reused by everything.

Host keys are checked against known_hosts (strict | accept-new | off) before any credential
is sent; commands go straight to paramiko channels, files over SFTP with an atomic rename, and
file probes and `sftp` actions as SFTP requests (ssh_files.py). No paramiko or socket exception
escapes this module untranslated. Settings (inventory merged with ~/.ssh/config, as Fabric
resolved them before) and the host-key policy are in ssh_config.py, channel helpers in ssh_channel.py.
"""

from __future__ import annotations

import contextlib
import errno
import getpass
import os
import posixpath
import secrets
import shlex
import socket
import threading
import time
from typing import Any, ClassVar

import paramiko

from runner.errors import (
    AuthError,
    CommandTimeout,
    ConnectError,
    HostKeyError,
    OpsrunError,
    TransportError,
)
from runner.model import CommandResult, Host
from runner.transports import CAPABILITIES
from runner.transports.base import CommandGuard, FileAccess, Transport
from runner.transports.ssh_channel import (
    CHUNK,
    SUDO_HELLO,
    SUDO_PROMPT,
    DataReady,
    FastTransport,
    QuickAckSocket,
    _hello_pgid,
    _send_stdin,
    _signal,
    describe,
    quiet_close,
)
from runner.transports.ssh_config import (
    _HostKeyPolicy,
    _jump_from_string,
    _known_hosts_lock,
    _parsed_known_hosts,
    _resolve_settings,
    changed_key,
    known_name,
    loaded_key,
    shorthand,
    unknown_key,
)
from runner.transports.ssh_files import Names, SftpFiles, check_mode, put_atomic, request, safe_name

KEEPALIVE = 30  # seconds; notices a dead peer during long quiet steps
KILL_GRACE = 0.5  # seconds between TERM and KILL after a timeout


class SSHTransport(Transport):
    kind: ClassVar[str] = "ssh"
    capabilities: ClassVar[frozenset[str]] = CAPABILITIES["ssh"]
    tcp_nodelay: ClassVar[bool] = True  # paramiko leaves Nagle on: +40 ms per channel open

    def __init__(self, host: Host, guard: CommandGuard | None = None) -> None:
        super().__init__(host, guard)
        self._target = _resolve_settings(host)
        self._client: paramiko.SSHClient | None = None
        self._user = ""  # the login user of the connection made
        self._transport: paramiko.Transport | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._no_sftp = False  # the host refused an SFTP session: probes go to the shell
        self._names = Names()  # owner names for file probes, read once
        self._jump: SSHTransport | None = None
        self.label = f"{self._target.user or '?'}@{self._target.alias}:{self._target.port or 22}"
        self._running: dict[int, list[Any]] = {}  # id(channel) -> [channel, pgid or None]

    # ------------------------------------------------------------ lifecycle
    @property
    def connected(self) -> bool:
        return self._transport is not None and self._transport.is_active()

    def open(self) -> None:
        """Connect once; a lost connection is dropped and made again."""
        if self.connected:
            return
        self._drop()
        self._connect()

    def close(self) -> None:
        self._drop()
        if self._jump is not None:
            self._jump.close()
            self._jump = None

    def _drop(self) -> None:
        sftp, self._sftp = self._sftp, None
        client, self._client = self._client, None
        self._transport = None
        if sftp is not None:
            with contextlib.suppress(Exception):
                sftp.close()
        if client is not None:
            quiet_close(client)

    def _connect(self) -> None:
        t = self._target
        kwargs: dict[str, Any] = {
            "banner_timeout": t.connect_timeout,
            "auth_timeout": t.connect_timeout,
            "channel_timeout": t.connect_timeout,
        }
        # the alias may be `user@host:port`; ~/.ssh/config is looked up for the host part
        short = shorthand(t.alias)
        looked = t.ssh_config.lookup(short["host"] or t.alias)
        hostname = str(looked.get("hostname", short["host"] or t.alias))
        user = t.user or short["user"] or looked.get("user") or getpass.getuser()
        port = t.port or 22
        self.label = f"{user}@{hostname}:{port}"
        keys = [os.path.expanduser(k) for k in t.keys] if t.explicit_key else [
            os.path.expanduser(k) for k in looked.get("identityfile", [])
        ]
        if t.explicit_key and keys and not os.path.isfile(keys[0]):
            raise AuthError(self.host.name, f"private key {keys[0]} does not exist",
                            hint="fix `key:` for this host in the inventory")
        keys = [k for k in keys if os.path.isfile(k)]
        tried_keys = list(keys)
        kwargs["look_for_keys"] = not keys
        first = loaded_key(keys[0], t.passphrase) if keys else None
        if first is not None:  # loaded once for every host using it; paramiko tries it first
            kwargs["pkey"] = first
            keys = keys[1:]
        kwargs["key_filename"] = keys
        kwargs["allow_agent"] = bool(os.environ.get("SSH_AUTH_SOCK"))
        if t.password:
            kwargs["password"] = t.password
        if t.passphrase:
            kwargs["passphrase"] = t.passphrase
        if not kwargs["key_filename"]:
            del kwargs["key_filename"]

        client = paramiko.SSHClient()
        if t.policy != "off":
            try:
                if t.known_hosts_file.is_file():
                    name = known_name(hostname, port)
                    mine = _parsed_known_hosts(t.known_hosts_file).lookup(name) or {}
                    for key_type, key in mine.items():  # only this host's keys: no full copy
                        client.get_host_keys().add(name, key_type, key)
            except (OSError, paramiko.SSHException) as exc:
                raise ConnectError(
                    self.host.name, f"cannot read known_hosts file {t.known_hosts_file}: {exc}"
                ) from exc
        client.set_missing_host_key_policy(_HostKeyPolicy(self, hostname, port))

        kwargs["sock"] = self._dial(hostname, port, looked)
        try:
            client.connect(hostname, port, username=user, timeout=max(1, round(t.connect_timeout)),
                           transport_factory=FastTransport, **kwargs)  # type: ignore[arg-type]
        except OpsrunError:
            quiet_close(client)
            raise
        except paramiko.BadHostKeyException as exc:
            quiet_close(client)
            raise changed_key(self.host.name, self._target, hostname, port, exc) from exc
        except paramiko.PasswordRequiredException as exc:
            quiet_close(client)
            raise AuthError(self.host.name, f"private key for {self.label} is encrypted",
                            hint="set `key_passphrase: env:NAME` for this host") from exc
        except paramiko.AuthenticationException as exc:
            quiet_close(client)
            raise AuthError(
                self.host.name,
                f"authentication failed for {self.label} (tried: {self._methods(kwargs, tried_keys)})",
                hint="check `user:` and `key:` (is the public key in the host's "
                     "~/.ssh/authorized_keys?) or `password:`",
            ) from exc
        except (paramiko.SSHException, EOFError, OSError) as exc:
            quiet_close(client)
            raise ConnectError(
                self.host.name, f"cannot connect to {self.label}: SSH handshake failed: "
                f"{describe(exc)}", hint="is an SSH server listening on that port?",
            ) from exc
        transport = client.get_transport()
        assert transport is not None
        transport.set_keepalive(KEEPALIVE)
        self._client = client
        self._user = user
        self._transport = transport

    def _dial(self, hostname: str, port: int, ssh_config: Any) -> Any:
        """A connected socket-like object: TCP (TCP_NODELAY), a jump channel or ProxyCommand."""
        t = self._target
        jump = t.jump
        if jump is None and ssh_config.get("proxyjump", "none").lower() != "none":
            jump = _jump_from_string(ssh_config["proxyjump"], t)
        if jump is not None:
            return self._via_jump(jump, hostname, port)
        proxy = ssh_config.get("proxycommand")
        if proxy and proxy.lower() != "none":
            try:
                return paramiko.ProxyCommand(proxy)
            except (paramiko.SSHException, OSError) as exc:
                raise ConnectError(self.host.name, f"ProxyCommand failed: {exc}") from exc
        where = f"cannot connect to {self.label}"
        try:
            sock = socket.create_connection((hostname, port), timeout=t.connect_timeout)
        except socket.gaierror as exc:
            raise ConnectError(self.host.name, f"{where}: cannot resolve host name {hostname!r}",
                               hint="check `address:` in the inventory (or HostName in ssh config)"
                               ) from exc
        except ConnectionRefusedError as exc:
            raise ConnectError(self.host.name, f"{where}: connection refused",
                               hint=f"is sshd running and listening on port {port}?") from exc
        except TimeoutError as exc:
            raise ConnectError(self.host.name, f"{where}: timed out after {t.connect_timeout:g}s",
                               hint="check the address and firewalls, or raise `connect_timeout`",
                               ) from exc
        except OSError as exc:
            reason = {errno.EHOSTUNREACH: "no route to host",
                      errno.ENETUNREACH: "network unreachable"}.get(exc.errno or 0,
                                                                    exc.strerror or str(exc))
            raise ConnectError(self.host.name, f"{where}: {reason}") from exc
        if self.tcp_nodelay:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return QuickAckSocket(sock)  # and no delayed ACK stalling sshd's replies (ssh_channel.py)
        return sock

    def _via_jump(self, jump: dict[str, Any], hostname: str, port: int) -> paramiko.Channel:
        if self._jump is None:
            name = f"{self.host.name} (jump {jump.get('address', '?')})"
            self._jump = type(self)(Host(name=name, transport="ssh", settings=jump))
        self._jump.open()
        jt = self._jump._transport
        assert jt is not None
        try:
            return jt.open_channel("direct-tcpip", (hostname, port), ("127.0.0.1", 0),
                                   timeout=self._target.connect_timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise ConnectError(
                self.host.name, f"cannot connect to {self.label} through jump host "
                f"{self._jump.label}: {describe(exc)}",
                hint="can the jump host reach that address and port (AllowTcpForwarding)?",
            ) from exc

    def _methods(self, kwargs: dict[str, Any], keys: list[str]) -> str:
        tried = [f"key {k}" for k in keys]
        if kwargs.get("look_for_keys"):
            tried.append("default keys ~/.ssh/id_*")
        if kwargs.get("allow_agent"):
            tried.append("ssh-agent")
        if kwargs.get("password"):
            tried.append("password")
        return ", ".join(tried) or "nothing (no key, agent or password)"

    # ------------------------------------------------------------ host keys
    def _unknown_key(self, hostname: str, port: int, key: paramiko.PKey) -> HostKeyError:
        return unknown_key(self.host.name, self._target, hostname, port, key)

    def _accept_new(self, hostname: str, port: int, key: paramiko.PKey) -> None:
        file = self._target.known_hosts_file
        line = f"{known_name(hostname, port)} {key.get_name()} {key.get_base64()}\n"
        try:
            with _known_hosts_lock:
                file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                with file.open("a", encoding="ascii") as fh:
                    fh.write(line)
        except OSError as exc:
            raise HostKeyError(self.host.name,
                               f"cannot record the new host key in {file}: {exc.strerror or exc}"
                               ) from exc

    # ------------------------------------------------------------ commands
    def _command_line(self, command: str, sudo: bool) -> str:
        shell = self._target.shell
        if not sudo:
            return f"{shell} -c {shlex.quote(command)}"
        script = f"{SUDO_HELLO}\n{command}"
        head = f"sudo -S -p {SUDO_PROMPT} --" if self._target.sudo_password else "sudo -n --"
        return f"{head} {shell} -c {shlex.quote(script)}"

    def _session(self) -> paramiko.Channel:
        """A fresh channel; a connection found dead before sending anything is remade once."""
        for attempt in (1, 2):
            self.open()
            assert self._transport is not None
            try:
                return self._transport.open_session(timeout=self._target.connect_timeout)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                if self.connected and isinstance(exc, paramiko.ChannelException):
                    raise ConnectError(self.host.name, f"{self.label} refused a session: "
                                       f"{describe(exc)}") from exc
                self._drop()
                if attempt == 2:
                    raise ConnectError(self.host.name, f"connection lost to {self.label}: "
                                       f"{describe(exc)}") from exc
        raise AssertionError("unreachable")

    def _run(
        self, command: str, *, timeout: float | None, stdin: bytes | None, sudo: bool | None
    ) -> CommandResult:
        start = time.monotonic()
        chan = self._session()
        use_sudo = (self._target.sudo if sudo is None else sudo) and self._conn_user() != "root"
        self._running[id(chan)] = [chan, None]
        try:
            return self._exchange(chan, command, use_sudo=use_sudo, stdin=stdin, start=start,
                                  timeout=timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise self._lost(command, exc) from exc
        finally:
            self._running.pop(id(chan), None)
            with contextlib.suppress(Exception):
                chan.close()

    def stop_running(self) -> None:
        """TERM then KILL the remote process group of every command running now."""
        for chan, pgid in list(self._running.values()):
            with contextlib.suppress(Exception):
                self._kill(chan, pgid)

    def _exchange(self, chan: paramiko.Channel, command: str, *, use_sudo: bool,
                  stdin: bytes | None, start: float, timeout: float | None) -> CommandResult:
        deadline = start + timeout if timeout else None
        chan.exec_command(self._command_line(command, use_sudo))
        if not use_sudo:  # its process group is not known here: resume can only warn
            self._spawned(remote=self.label)
        out = bytearray()
        err = bytearray()
        password = self._target.sudo_password if use_sudo else None
        gated = password is not None  # hold stdin back until sudo has let us in
        prompts_answered = 0
        pgid: str | None = None  # the sudo'd shell's process group, once it said hello
        writer: threading.Thread | None = None
        if not gated:
            writer = _send_stdin(chan, stdin)
        ready = DataReady(chan)
        while True:
            while chan.recv_ready():
                out += chan.recv(CHUNK)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(CHUNK)
            if use_sudo and pgid is None and b"\n" in out:
                pgid = _hello_pgid(out)
                if pgid is not None:  # journaled, so a resume can check it on the host
                    with contextlib.suppress(KeyError):
                        self._running[id(chan)][1] = pgid
                    self._spawned(remote=self.label, sudo=True,
                                  pgid=int(pgid) if pgid.isdigit() else None)
            if gated:
                if pgid is not None:
                    gated = False
                    writer = _send_stdin(chan, stdin)
                elif err.count(SUDO_PROMPT.encode()) > prompts_answered:
                    if prompts_answered:
                        raise AuthError(self.host.name, f"sudo on {self.label} refused "
                                        "`sudo_password`", hint="check `sudo_password`")
                    assert password is not None
                    chan.sendall(password.encode() + b"\n")
                    prompts_answered += 1
            if (chan.closed or (chan.eof_received and chan.exit_status_ready())) and not (
                chan.recv_ready() or chan.recv_stderr_ready()
            ):
                break
            wait = 1.0
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._kill(chan, pgid)
                    raise CommandTimeout(
                        self.host.name, f"command timed out after {timeout:g}s: {command}")
                wait = min(wait, remaining)
            if chan.eof_received:
                chan.status_event.wait(wait)  # data is over; wait for exit status or close
            else:
                ready.wait(wait)
        if writer is not None:
            writer.join(timeout=5)
        rc = chan.exit_status
        if rc == -1 and self._dead(chan):
            raise self._lost(command, None)
        stdout, stderr = bytes(out), bytes(err)
        if use_sudo:
            stdout, stderr = self._sudo_result(stdout, stderr, rc)
        return CommandResult(rc, stdout, stderr, time.monotonic() - start)

    def _dead(self, chan: paramiko.Channel) -> bool:
        """After a channel closed without exit status: did the whole connection go?"""
        if chan.eof_received:
            return False  # sshd said goodbye properly: the command died by a signal
        transport = self._transport
        limit = time.monotonic() + 1.0
        while transport is not None and transport.is_active() and time.monotonic() < limit:
            time.sleep(0.01)
        return transport is None or not transport.is_active()

    def _sudo_result(self, stdout: bytes, stderr: bytes, rc: int) -> tuple[bytes, bytes]:
        stderr = stderr.replace(SUDO_PROMPT.encode(), b"")
        if _hello_pgid(stdout) is not None:
            return stdout.split(b"\n", 1)[1], stderr
        text = stderr.decode("utf-8", "replace").strip()[-300:]
        if "password" in text.lower():
            raise AuthError(self.host.name, f"sudo on {self.label} wants a password: {text}",
                            hint=f"allow NOPASSWD sudo for {self._conn_user()} or set "
                                 "`sudo_password: env:NAME`")
        raise TransportError(self.host.name, f"sudo could not start the command (rc {rc}): {text}",
                             hint="is sudo installed and is the login user allowed to use it?")

    def _kill(self, chan: paramiko.Channel, pgid: str | None) -> None:
        """End a timed-out command: TERM, then KILL, to its whole process group.

        sshd delivers a channel 'signal' to the session's process group as the login user;
        commands under sudo run as root, so those also get `sudo kill -SIG -PGID`."""
        for sig in ("TERM", "KILL"):
            _signal(chan, sig)
            if pgid and pgid.isdigit() and int(pgid) > 1 and self.connected:
                with contextlib.suppress(OpsrunError):
                    self._run(f"kill -{sig} -{pgid} 2>/dev/null",
                              timeout=self._target.connect_timeout, stdin=None, sudo=True)
            if chan.status_event.wait(KILL_GRACE):
                break
        with contextlib.suppress(Exception):
            chan.close()

    def _lost(self, command: str, exc: BaseException | None) -> ConnectError:
        why = f": {describe(exc)}" if exc is not None else ""
        self._drop()
        return ConnectError(
            self.host.name,
            f"connection lost to {self.label} while running: {command[:200]}{why}",
            hint="the host or its sshd went away; the command may or may not have finished "
                 "(opsrun reconnects on the next attempt)",
        )

    def _conn_user(self) -> str:
        if self._client is not None:
            return self._user
        return self._target.user or ""

    # ------------------------------------------------------------ files
    def _sftp_client(self) -> paramiko.SFTPClient:
        self.open()
        if self._sftp is None:
            assert self._transport is not None
            try:
                self._sftp = paramiko.SFTPClient.from_transport(self._transport)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                self._drop()
                raise ConnectError(self.host.name, f"{self.label}: cannot start SFTP: "
                                   f"{describe(exc)}",
                                   hint="enable the sftp Subsystem in sshd_config") from exc
            if self._sftp is None:
                raise ConnectError(self.host.name, f"{self.label}: cannot start SFTP")
        return self._sftp

    def files(self, sudo: bool | None = None) -> FileAccess | None:
        """Probes over SFTP as the login user; not for probes whose commands run under sudo
        (root sees other files), nor hosts without an SFTP server (their shell answers)."""
        if self._no_sftp:
            return None
        self.open()
        if (self._target.sudo if sudo is None else sudo) and self._conn_user() != "root":
            return None
        if self._sftp is None:
            assert self._transport is not None
            try:
                self._sftp = paramiko.SFTPClient.from_transport(self._transport)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                if not self.connected:
                    raise self._lost("sftp", exc) from exc
                self._no_sftp = True
                return None
            if self._sftp is None:
                self._no_sftp = True
                return None
        return SftpFiles(self._sftp, self._names, self._lost, lambda: self.connected)

    def _sftp_request(self, method: str, path: str, mode: str | None, *, sudo: bool | None = None) -> str:
        if (self._target.sudo if sudo is None else sudo) and self._conn_user() != "root":
            raise OpsrunError(f"{self.host.name}: sftp {method} {path} would act as the login user, "
                              "not through sudo; plan again")
        if mode is not None:
            check_mode(self.host.name, mode)
        sftp = self._sftp_client()
        try:
            request(sftp, method, path, mode)
        except OSError as exc:
            if not self.connected:
                raise self._lost(f"sftp {method} {path}", exc) from exc
            return exc.strerror or str(exc) or type(exc).__name__
        except (paramiko.SSHException, EOFError) as exc:
            raise self._lost(f"sftp {method} {path}", exc) from exc
        return ""

    def _put(self, path: str, content: bytes, mode: str | None, *, sudo: bool | None = None) -> None:
        if mode is not None:
            check_mode(self.host.name, mode)
        self.open()  # so the login user is known before choosing the sudo path
        try:
            if (self._target.sudo if sudo is None else sudo) and self._conn_user() != "root":
                self._put_sudo(path, content, mode)
            else:
                self._put_sftp(path, content, mode)
        except OpsrunError:
            raise
        except OSError as exc:
            if not self.connected:
                raise self._lost(f"put {path}", exc) from exc
            raise OpsrunError(f"{self.host.name}: cannot write {path}: "
                              f"{exc.strerror or exc}") from exc
        except (paramiko.SSHException, EOFError) as exc:
            raise self._lost(f"put {path}", exc) from exc

    def _put_sftp(self, path: str, content: bytes, mode: str | None) -> None:
        put_atomic(self._sftp_client(), path, content, mode)

    def _put_sudo(self, path: str, content: bytes, mode: str | None) -> None:
        sftp = self._sftp_client()
        staged = posixpath.join(sftp.normalize("."), f".opsrun-put-{secrets.token_hex(6)}")
        with sftp.open(staged, "wxb") as fh:
            fh.chmod(0o600)
            fh.set_pipelined(True)
            fh.write(content)
        q = shlex.quote
        name = posixpath.basename(path) or "file"
        set_mode = f"chmod {mode} \"$t\"" if mode is not None else ":"
        script = "\n".join([
            "set -e",
            f"src={q(staged)}; dest={q(path)}",
            'trap \'rm -f -- "$src" ${t:+"$t"}\' EXIT',
            'd=$(dirname -- "$dest"); mkdir -p -- "$d"',
            f't=$(mktemp "$d/.{safe_name(name)}.XXXXXX")',
            'cat -- "$src" > "$t"',
            'if [ -e "$dest" ]; then chown "$(stat -c %u:%g -- "$dest")" "$t"; '
            'chmod "$(stat -c %a -- "$dest")" "$t"; '
            'else chmod "$(printf %o $((0666 & ~$(umask))))" "$t"; fi',
            set_mode,
            'mv -f -- "$t" "$dest"; t=',
        ])
        result = self._run(script, timeout=None, stdin=None, sudo=True)
        if result.rc != 0:
            with contextlib.suppress(Exception):
                sftp.remove(staged)
            raise OpsrunError(f"{self.host.name}: cannot write {path} (sudo): "
                              f"{result.err.strip()[-300:]}")

    def _get(self, path: str) -> bytes:
        try:
            sftp = self._sftp_client()
            with sftp.open(path, "rb") as fh:
                fh.prefetch()
                return fh.read()
        except OpsrunError:
            raise
        except PermissionError as exc:
            if self._target.sudo and self._conn_user() != "root":
                result = self._run(f"cat -- {shlex.quote(path)}", timeout=None, stdin=None,
                                   sudo=True)
                if result.rc == 0:
                    return result.stdout
                raise OpsrunError(f"{self.host.name}: cannot read {path}: "
                                  f"{result.err.strip()[-300:]}") from exc
            raise OpsrunError(f"{self.host.name}: cannot read {path}: permission denied",
                              hint="set `sudo: true` for this host if root may read it") from exc
        except OSError as exc:
            if not self.connected:
                raise self._lost(f"get {path}", exc) from exc
            raise OpsrunError(f"{self.host.name}: cannot read {path}: "
                              f"{exc.strerror or exc}") from exc
        except (paramiko.SSHException, EOFError) as exc:
            raise self._lost(f"get {path}", exc) from exc
