"""Android devices (phones, kiosks, BlissOS/Android-x86) through an adb server, with adbutils.

Commands run in the device's shell over shell protocol v2 (real exit codes, separate stderr,
stdin); files move with the sync protocol and land atomically (temp name + mv). adbutils is
imported here only, so only when an ADB host is used; its exceptions never leave this module.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import secrets
import shlex
import shutil
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import adbutils
from adbutils.errors import AdbError

from runner.errors import AuthError, CommandTimeout, ConnectError, OpsrunError, TransportError
from runner.model import CommandResult, Host
from runner.transports import CAPABILITIES
from runner.transports.base import CommandGuard, Transport

DEFAULT_SERVER = ("127.0.0.1", 5037)
DEFAULT_DEVICE_PORT = 5555
IO_TIMEOUT = 30.0  # seconds without a byte from the server, outside commands with a timeout
READY_WAIT = 10.0  # seconds open() waits for a device in a transient state to become ready
SERVER_START_WAIT = 20.0
CHUNK = 64 * 1024 - 8  # sync DATA / shell stdin payload (under the 64 KiB limits)
V1_MARK = "@@opsrun-rc@@"
ADDRESS_RE = re.compile(r"^[^\s:]+:[0-9]{1,5}$")

# shell protocol v2 packet ids (adb's shell_protocol.h)
STDIN, STDOUT, STDERR, EXIT, CLOSE_STDIN = 0, 1, 2, 3, 4


class _Connection(adbutils.AdbConnection):  # type: ignore[misc]
    """A socket to the adb server that never starts a server by itself (adbutils would run
    `adb start-server` on the default port, whatever server the inventory names)."""

    def _safe_connect(self) -> Any:
        return self._create_socket()


class _Client(adbutils.AdbClient):  # type: ignore[misc]
    def __init__(self, host: str, port: int, io_timeout: float) -> None:
        super().__init__(host=host, port=port, socket_timeout=io_timeout)
        self.io_timeout = io_timeout

    def make_connection(self, timeout: float | None = None) -> Any:
        conn = _Connection(self.host, self.port)
        conn.conn.settimeout(timeout or self.io_timeout)
        return conn


@dataclass(frozen=True)
class Target:
    """Where the device is: the adb server, the device serial, and a TCP address to connect."""

    server_host: str
    server_port: int
    serial: str
    address: str | None  # host:port opsrun `connect`s (also used to reconnect)
    binary: str | None  # adb program to start a local server with
    source: str  # where the device came from: "inventory" or the env names used


def resolve_target(host: Host, env: dict[str, str] | None = None) -> Target:
    """Inventory settings first, then the environment names people already use."""
    env = dict(os.environ if env is None else env)
    s = host.settings
    used: list[str] = []
    serial = str(s.get("serial") or "")
    address = str(s.get("address") or "")
    if not serial and not address:
        if env.get("BLISS_ADB_SERIAL"):
            serial = env["BLISS_ADB_SERIAL"]
            used.append("BLISS_ADB_SERIAL")
        if env.get("BLISS_ADB_ADDRESS"):
            address = env["BLISS_ADB_ADDRESS"]
            used.append("BLISS_ADB_ADDRESS")
        elif env.get("BLISS_ADB_HOST"):
            address = f"{env['BLISS_ADB_HOST']}:{env.get('BLISS_ADB_PORT') or DEFAULT_DEVICE_PORT}"
            used.append("BLISS_ADB_HOST" + (" + BLISS_ADB_PORT" if env.get("BLISS_ADB_PORT") else ""))
    if not serial and not address:
        raise ConnectError(
            host.name,
            "no device given for this adb host",
            hint="set `serial:` (as `adb devices` lists it) or `address: host:port` for it in the "
            "inventory, or export BLISS_ADB_ADDRESS / BLISS_ADB_SERIAL",
        )
    if address and not ADDRESS_RE.match(address):
        where = " and ".join(used) if used else "address"
        raise ConnectError(host.name, f"{where}: '{address}' is not host:port", hint="e.g. 192.168.1.50:5555")
    if not address and ADDRESS_RE.match(serial):
        address = serial  # a TCP device listed by its address: reconnectable
    server = str(s.get("adb_server") or "")
    if server:
        server_host, _, port_text = server.rpartition(":")
    else:
        server_host = env.get("ANDROID_ADB_SERVER_ADDRESS") or DEFAULT_SERVER[0]
        port_text = env.get("ANDROID_ADB_SERVER_PORT") or str(DEFAULT_SERVER[1])
    if not server_host or not port_text.isdigit():
        raise ConnectError(host.name, f"adb_server '{server}' is not host:port", hint="e.g. 127.0.0.1:5037")
    binary = str(s.get("adb_binary") or env.get("ADB_BINARY") or "") or None
    return Target(
        server_host,
        int(port_text),
        serial or address,
        address or None,
        binary,
        ", ".join(used) if used else "inventory",
    )


def _is_loopback(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def find_adb(preferred: str | None) -> str | None:
    """The adb program to start a server with: the setting/ADB_BINARY, PATH, adbutils' own."""
    if preferred:
        return preferred
    found = shutil.which("adb")
    if found:
        return found
    bundled = os.path.join(os.path.dirname(adbutils.__file__), "binaries", "adb")
    return bundled if os.access(bundled, os.X_OK) else None


class ADBTransport(Transport):
    kind: ClassVar[str] = "adb"
    capabilities: ClassVar[frozenset[str]] = CAPABILITIES["adb"]

    def __init__(self, host: Host, guard: CommandGuard | None = None) -> None:
        super().__init__(host, guard)
        self.target: Target | None = None
        self._client: _Client | None = None
        self._features: frozenset[str] = frozenset()
        self._ready = False

    # ------------------------------------------------------------ lifecycle
    @property
    def label(self) -> str:
        t = self.target
        return f"device {t.serial}" if t else "device"

    @property
    def server(self) -> str:
        t = self.target
        return f"{t.server_host}:{t.server_port}" if t else "?"

    def open(self) -> None:
        """Reach the server (start a local one if none answers), connect a TCP device, and
        wait until the device is ready. After a lost connection it connects it again."""
        if self._ready:
            return
        self.target = resolve_target(self.host)
        self._client = _Client(self.target.server_host, self.target.server_port, IO_TIMEOUT)
        self._ensure_server()
        self._wait_ready()
        features = self._host_query(f"host-serial:{self.target.serial}:features")
        self._features = frozenset(f for f in features.split(",") if f)
        self._ready = True

    def close(self) -> None:
        self._ready = False

    @property
    def shell_v2(self) -> bool:
        return "shell_v2" in self._features

    def _ensure_server(self) -> None:
        assert self.target is not None
        if self._server_answers():
            return
        t = self.target
        if not _is_loopback(t.server_host):
            raise ConnectError(
                self.host.name,
                f"no adb server answers at {self.server}",
                hint=f"start one there (adb -a -P {t.server_port} server nodaemon), or fix `adb_server:`",
            )
        binary = find_adb(t.binary)
        if binary is None:
            raise ConnectError(
                self.host.name,
                f"no adb server answers at {self.server}, and no adb program was found to start one",
                hint="install adb (apt-get install adb), or set `adb_binary:` / ADB_BINARY",
            )
        try:
            proc = subprocess.run(
                [binary, "-P", str(t.server_port), "start-server"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=SERVER_START_WAIT,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise ConnectError(
                self.host.name,
                f"cannot start the adb server with {binary}: {exc}",
                hint="check `adb_binary:` / ADB_BINARY",
            ) from exc
        deadline = time.monotonic() + 5
        while not self._server_answers():
            if time.monotonic() > deadline:
                out = (proc.stderr or proc.stdout).decode(errors="replace").strip()[-300:]
                raise ConnectError(
                    self.host.name,
                    f"started `{binary} -P {t.server_port} start-server` (rc {proc.returncode}) but no "
                    f"adb server answers at {self.server}" + (f": {out}" if out else ""),
                    hint="run that command yourself to see why",
                )
            time.sleep(0.1)

    def _server_answers(self) -> bool:
        try:
            self._host_query("host:version")
        except ConnectError:
            return False
        return True

    def _wait_ready(self) -> None:
        """Poll the device state until `device`; (re)connect a TCP device on the way: a stale
        transport left by a device that restarted is dropped and made again."""
        assert self.target is not None
        t = self.target
        deadline = time.monotonic() + READY_WAIT
        last_connect: float | None = None
        connects = 0
        while True:
            try:
                state = self._host_query(f"host-serial:{t.serial}:get-state").strip()
            except _DeviceState as exc:
                state = exc.state
            if state == "device":
                return
            if state == "unauthorized":
                raise AuthError(
                    self.host.name,
                    f"{self.label} has not authorised this computer (adb server {self.server})",
                    hint="unlock the device and accept the 'Allow USB debugging?' prompt for the key of "
                    "the user running the adb server (~/.android/adbkey), then retry",
                )
            settled = last_connect is None or time.monotonic() - last_connect > 2.0
            if t.address and state in ("not found", "offline") and settled and connects < 3:
                if state == "offline":
                    with contextlib.suppress(TransportError):
                        self._host_query(f"host:disconnect:{t.address}")
                self._connect(t.address)  # fails fast when nothing listens there
                last_connect = time.monotonic()
                connects += 1
            elif state == "not found" and not t.address:
                raise ConnectError(
                    self.host.name,
                    f"{self.label} not found by the adb server at {self.server}",
                    hint="check `adb devices` on that server (cable, USB debugging on); for a network "
                    "device set `address: host:port` so opsrun connects it",
                )
            if time.monotonic() > deadline:
                raise ConnectError(
                    self.host.name,
                    f"{self.label} is {state or 'not ready'} (adb server {self.server}) after {READY_WAIT:g}s",
                    hint="check the device is on and debugging is enabled; `adb reconnect offline` "
                    "or replugging it usually helps",
                )
            time.sleep(0.2)

    def _connect(self, address: str) -> None:
        answer = self._host_query(f"host:connect:{address}")
        if "connected to" in answer and not answer.startswith(("failed", "unable")):
            return
        if "authenticate" in answer:
            raise AuthError(
                self.host.name,
                f"adb connect {address}: {answer.strip()}",
                hint="accept the 'Allow USB debugging?' prompt on the device for this computer's key",
            )
        raise ConnectError(
            self.host.name,
            f"adb connect {address} failed: {answer.strip() or 'no answer'} (adb server {self.server})",
            hint="is the device on, on the network, with network debugging (adb over TCP, port "
            "5555 by default) enabled?",
        )

    # ------------------------------------------------------------ server protocol helpers
    def _conn(self, timeout: float | None = None) -> Any:
        assert self._client is not None
        try:
            return self._client.make_connection(timeout=timeout)
        except (AdbError, OSError) as exc:
            raise ConnectError(
                self.host.name,
                f"no adb server answers at {self.server} ({exc})",
                hint=f"start it (adb -P {self.target.server_port if self.target else 5037} start-server) "
                "or fix `adb_server:`",
            ) from exc

    def _host_query(self, service: str) -> str:
        """A host service that answers OKAY + one length-prefixed string."""
        c = self._conn()
        try:
            c.send_command(service)
            self._check_okay(c, during_run=False)
            return str(c.read_string_block())
        except (AdbError, OSError, EOFError) as exc:
            raise self._lost(exc, f"asking the adb server ({service})") from exc
        finally:
            c.close()

    def _check_okay(self, c: Any, during_run: bool) -> None:
        status = c.read(4)
        if status == b"OKAY":
            return
        if status == b"FAIL":
            message = str(c.read_string_block())
            raise self._fail(message, during_run)
        raise ConnectError(self.host.name, f"adb server at {self.server} answered {status!r}: connection lost")

    def _fail(self, message: str, during_run: bool) -> TransportError:
        """A FAIL answer of the server, as our error."""
        low = message.lower()
        state = ""
        if "unauthorized" in low:
            state = "unauthorized"
        elif "offline" in low:
            state = "offline"
        elif "not found" in low or "no devices" in low:
            state = "not found"
        elif "authorizing" in low or "connecting" in low:
            state = "connecting"
        if state and not during_run:
            return _DeviceState(self.host.name, state, message)
        if state == "unauthorized":
            return AuthError(
                self.host.name,
                f"{self.label} is unauthorized: {message}",
                hint="accept the 'Allow USB debugging?' prompt on the device, then retry",
            )
        if state:
            return ConnectError(
                self.host.name,
                f"connection lost: {self.label} is {state} ({message})",
                hint="it may be rebooting; a retry policy with `on: [connection]` reconnects it",
            )
        return TransportError(self.host.name, f"adb server at {self.server}: {message}")

    def _lost(self, exc: BaseException, doing: str) -> TransportError:
        if isinstance(exc, TransportError):
            return exc
        return ConnectError(
            self.host.name,
            f"connection lost while {doing}: {type(exc).__name__}: {exc}".rstrip(": "),
            hint=f"is the adb server at {self.server} running, and {self.label} still attached?",
        )

    def _service(self, service: str, timeout: float | None) -> Any:
        """A connection switched to the device, with `service` opened on it."""
        assert self.target is not None
        c = self._conn(timeout)
        try:
            c.send_command(f"host:transport:{self.target.serial}")
            self._check_okay(c, during_run=True)
            c.send_command(service)
            self._check_okay(c, during_run=True)
        except BaseException as exc:
            c.close()
            if isinstance(exc, AdbError | OSError | EOFError):
                raise self._lost(exc, "opening a stream") from exc
            raise
        return c

    # ------------------------------------------------------------ commands
    def _run(self, command: str, *, timeout: float | None, stdin: bytes | None, sudo: bool | None) -> CommandResult:
        if not self._ready:
            self.open()
        if sudo:
            command = f"su 0 sh -c {shlex.quote(command)}"
        start = time.monotonic()
        deadline = start + timeout if timeout else None
        if self.shell_v2:
            rc, out, err = self._run_v2(command, stdin, deadline, timeout)
        else:
            if stdin is not None:
                raise OpsrunError(
                    f"{self.host.name}: {self.label} has no shell protocol v2 (Android < 7), so "
                    "standard input cannot be sent to a command",
                    hint="write the data to a file with adb.push first, then read it in the command",
                )
            rc, out, err = self._run_v1(command, deadline, timeout)
        return CommandResult(rc, out, err, time.monotonic() - start)

    def _timed_out(self, command: str, timeout: float | None) -> CommandTimeout:
        return CommandTimeout(self.host.name, f"command timed out after {timeout:g}s: {command}")

    def _run_v2(
        self, command: str, stdin: bytes | None, deadline: float | None, timeout: float | None
    ) -> tuple[int, bytes, bytes]:
        c = self._service(f"shell,v2,raw:{command}", None)
        sock: socket.socket = c.conn
        sender: threading.Thread | None = None
        out, err = bytearray(), bytearray()
        try:
            if stdin:
                sender = threading.Thread(target=_send_stdin, args=(sock, stdin), daemon=True)
                sender.start()
            else:
                sock.sendall(struct.pack("<BI", CLOSE_STDIN, 0))
            while True:
                header = _recv_exact(sock, 5, deadline)
                if header is None:
                    raise ConnectError(
                        self.host.name,
                        f"connection lost: {self.label} went away while running a command",
                        hint="it may have rebooted or dropped off the network; a retry policy with "
                        "`on: [connection]` reconnects it",
                    )
                packet, length = struct.unpack("<BI", header)
                data = _recv_exact(sock, length, deadline) if length else b""
                if data is None:
                    raise ConnectError(self.host.name, f"connection lost: {self.label} went away mid-command")
                if packet == STDOUT:
                    out += data
                elif packet == STDERR:
                    err += data
                elif packet == EXIT:
                    return (data[0] if data else 255), bytes(out), bytes(err)
        except TimeoutError:
            raise self._timed_out(command, timeout) from None
        except OSError as exc:
            raise self._lost(exc, "running a command") from exc
        finally:
            c.close()  # closing the stream ends the command on the device (after a timeout too)
            if sender is not None:
                sender.join(timeout=1)

    def _run_v1(self, command: str, deadline: float | None, timeout: float | None) -> tuple[int, bytes, bytes]:
        """Old devices: one merged output stream; the exit code comes back as a marker line."""
        wrapped = f"( {command}\n) 2>&1 </dev/null; printf '\\n%s%s\\n' {V1_MARK} \"$?\""
        c = self._service(f"shell:{wrapped}", None)
        sock: socket.socket = c.conn
        data = bytearray()
        try:
            while True:
                chunk = _recv_some(sock, deadline)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            raise self._timed_out(command, timeout) from None
        except OSError as exc:
            raise self._lost(exc, "running a command") from exc
        finally:
            c.close()
        text = bytes(data).replace(b"\r\n", b"\n")
        at = text.rfind(V1_MARK.encode())
        if at < 0:
            raise ConnectError(self.host.name, f"connection lost: {self.label} went away while running a command")
        rc_text = text[at + len(V1_MARK) :].strip()
        out = text[:at]
        out = out[:-1] if out.endswith(b"\n") else out
        return (int(rc_text) if rc_text.isdigit() else 255), out, b""

    # ------------------------------------------------------------ files
    def _put(self, path: str, content: bytes, mode: str | None, *, sudo: bool | None = None) -> None:
        if not self._ready:
            self.open()
        folder, slash, name = path.rpartition("/")
        tmp = f"{folder}{slash}.{name}.opsrun-{secrets.token_hex(4)}.tmp"
        file_mode = int(mode, 8) if mode else 0o644
        self._sync_send(tmp, content, file_mode)
        q = shlex.quote
        script = f"mv -f -- {q(tmp)} {q(path)}"
        if mode:
            script += f" && chmod {format(file_mode, 'o')} -- {q(path)}"
        res = self._run(f"{script} || {{ rc=$?; rm -f -- {q(tmp)}; exit $rc; }}", timeout=None, stdin=None, sudo=False)
        if res.rc != 0:
            why = (res.err or res.out).strip().splitlines()
            detail = f": {why[-1]}" if why else f" (rc {res.rc})"
            raise OpsrunError(f"{self.host.name}: cannot write {path} on {self.label}{detail}")

    def _get(self, path: str) -> bytes:
        if not self._ready:
            self.open()
        return self._sync_recv(path)

    def _sync(self) -> Any:
        return self._service("sync:", None)

    def _sync_send(self, path: str, content: bytes, mode: int) -> None:
        c = self._sync()
        sock: socket.socket = c.conn
        try:
            spec = f"{path},{0o100000 | mode}".encode()
            sock.sendall(b"SEND" + struct.pack("<I", len(spec)) + spec)
            for i in range(0, len(content), CHUNK):
                part = content[i : i + CHUNK]
                sock.sendall(b"DATA" + struct.pack("<I", len(part)) + part)
            sock.sendall(b"DONE" + struct.pack("<I", int(time.time())))
            reply = _recv_exact(sock, 8, None, IO_TIMEOUT)
            if reply is None:
                raise ConnectError(self.host.name, f"connection lost: {self.label} went away while receiving {path}")
            if reply[:4] != b"OKAY":
                (n,) = struct.unpack("<I", reply[4:])
                message = (_recv_exact(sock, n, None, IO_TIMEOUT) or b"").decode(errors="replace")
                raise OpsrunError(f"{self.host.name}: cannot write {path} on {self.label}: {message or reply[:4]!r}")
        except OSError as exc:
            raise self._lost(exc, f"sending {path}") from exc
        finally:
            c.close()

    def _sync_recv(self, path: str) -> bytes:
        c = self._sync()
        sock: socket.socket = c.conn
        data = bytearray()
        try:
            spec = path.encode()
            sock.sendall(b"RECV" + struct.pack("<I", len(spec)) + spec)
            while True:
                head = _recv_exact(sock, 8, None, IO_TIMEOUT)
                if head is None:
                    raise ConnectError(self.host.name, f"connection lost: {self.label} went away while sending {path}")
                kind, n = head[:4], struct.unpack("<I", head[4:])[0]
                if kind == b"DONE":
                    return bytes(data)
                body = _recv_exact(sock, n, None, IO_TIMEOUT) if n else b""
                if body is None:
                    raise ConnectError(self.host.name, f"connection lost: {self.label} went away while sending {path}")
                if kind == b"DATA":
                    data += body
                elif kind == b"FAIL":
                    why = body.decode(errors="replace")
                    raise OpsrunError(f"{self.host.name}: cannot read {path} on {self.label}: {why}")
                else:
                    raise ConnectError(self.host.name, f"sync: unexpected {kind!r} from {self.label}")
        except OSError as exc:
            raise self._lost(exc, f"reading {path}") from exc
        finally:
            c.close()


class _DeviceState(ConnectError):
    """The server's answer about a device that is not ready (offline, not found, ...)."""

    def __init__(self, host: str, state: str, message: str) -> None:
        super().__init__(host, message)
        self.state = state


def _send_stdin(sock: socket.socket, data: bytes) -> None:
    try:
        for i in range(0, len(data), CHUNK):
            part = data[i : i + CHUNK]
            sock.sendall(struct.pack("<BI", STDIN, len(part)) + part)
        sock.sendall(struct.pack("<BI", CLOSE_STDIN, 0))
    except OSError:
        pass  # the reader sees the stream end and says what happened


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _recv_exact(sock: socket.socket, n: int, deadline: float | None, idle: float | None = None) -> bytes | None:
    """n bytes, None at end of stream; TimeoutError past the deadline (or `idle` seconds
    without data when there is no deadline)."""
    buf = bytearray()
    while len(buf) < n:
        chunk = _recv_some(sock, deadline, n - len(buf), idle)
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _recv_some(sock: socket.socket, deadline: float | None, n: int = 65536, idle: float | None = None) -> bytes:
    left = _remaining(deadline)
    sock.settimeout(left if left is not None else idle)
    return sock.recv(n)
