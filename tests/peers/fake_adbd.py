"""Fake Android device daemon: the DEVICE side of the ADB transport over TCP, for tests.

Serves shell (v1/v2), exec, sync, reboot, root and tcp forwarding to a REAL adb server, running
/bin/sh in a sandbox folder; loopback only, no AUTH, and no security boundary (runs as the user).
"""

# Device filesystem: device path /x is ROOT/x for sync (ROOT/sdcard -> storage/emulated/0, and
# ROOT/data/local/tmp exist). Shell commands run in ROOT with HOME=ROOT, ANDROID_ROOT=ROOT,
# FAKE_ADBD_ROOT=ROOT and tests/peers/android_shims first on PATH; absolute /sdcard, /storage
# and /data paths in the command text are rewritten to ROOT/... (so `rm /data/local/tmp/x.apk`
# stays in the sandbox; output then shows host paths). The shims keep their state (props,
# settings, packages, running apps, input/intent/reboot logs) in ROOT/.state.
#
# Run: python -m tests.peers.fake_adbd --port N --root DIR --serial-name X
# It prints `fake_adbd ready 127.0.0.1:PORT` once listening (handy with --port 0), stops cleanly
# on SIGTERM/SIGINT, and can be restarted on the same port and root (state is kept).
# Importable too: FakeAdbd(root, serial_name).start() serves from a thread; .stop() ends it.

from __future__ import annotations

import argparse
import collections
import contextlib
import errno
import importlib.util
import ipaddress
import os
import posixpath
import re
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

# ----------------------------------------------------------------------------- protocol constants


def _cmd(name: bytes) -> int:
    value: int = struct.unpack("<I", name)[0]
    return value


A_SYNC = _cmd(b"SYNC")
A_CNXN = _cmd(b"CNXN")
A_AUTH = _cmd(b"AUTH")
A_OPEN = _cmd(b"OPEN")
A_OKAY = _cmd(b"OKAY")
A_CLSE = _cmd(b"CLSE")
A_WRTE = _cmd(b"WRTE")
A_STLS = _cmd(b"STLS")

A_VERSION_MIN = 0x01000000
A_VERSION_SKIP_CHECKSUM = 0x01000001
A_VERSION = 0x01000001
MAX_PAYLOAD = 256 * 1024
MAX_PAYLOAD_V1 = 4 * 1024
SYNC_DATA_MAX = 64 * 1024

# shell protocol v2 packet ids (shell_protocol.h)
SHELL_STDIN, SHELL_STDOUT, SHELL_STDERR, SHELL_EXIT, SHELL_CLOSE_STDIN, SHELL_WINSIZE = range(6)

#: Features we really implement (no sendrecv_v2*, abb, delayed_ack, track_app...).
FEATURES = ("shell_v2", "cmd", "stat_v2", "ls_v2", "fixed_push_mkdir")

HERE = Path(__file__).resolve().parent
SHIMS_DIR = HERE / "android_shims"
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEVICE_DIRS_RE = re.compile(
    r"(^|[\s'\"=:<>;|&(`])(/(?:sdcard|storage|data))(?=[/\s'\";|&)<>`]|$)"
)


def _load_shims() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fake_adbd_shims", SHIMS_DIR / "device.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


shims = _load_shims()


def log(message: str) -> None:
    sys.stderr.write(f"fake_adbd[{os.getpid()}] {message}\n")
    sys.stderr.flush()


def map_device_paths(command: str, root: str) -> str:
    """Rewrite absolute /sdcard, /storage and /data paths in a shell command to ROOT/..."""
    return DEVICE_DIRS_RE.sub(lambda m: m.group(1) + root.rstrip("/") + m.group(2), command)


# ----------------------------------------------------------------------------- streams


class Stream:
    """One multiplexed ADB stream: flow-controlled writes, acked reads."""

    def __init__(self, conn: Connection, local_id: int, remote_id: int) -> None:
        self.conn = conn
        self.local_id = local_id
        self.remote_id = remote_id
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()
        self._can_send = True
        self._inbox: collections.deque[bytes] = collections.deque()
        self.closed = False
        self.on_close: list[Callable[[], None]] = []

    # called by the connection's reader thread -----------------------------------------------
    def on_okay(self) -> None:
        with self._cond:
            self._can_send = True
            self._cond.notify_all()

    def on_write(self, data: bytes) -> None:
        with self._cond:
            self._inbox.append(data)
            self._cond.notify_all()

    def on_remote_close(self) -> None:
        self._mark_closed()

    # called by the service ------------------------------------------------------------------
    def accept(self) -> None:
        self.conn.send(A_OKAY, self.local_id, self.remote_id)

    def reject(self) -> None:
        self._mark_closed()
        with contextlib.suppress(OSError):
            self.conn.send(A_CLSE, 0, self.remote_id)

    def write(self, data: bytes) -> bool:
        """Send data in WRTE packets, each after the host's OKAY for the previous one."""
        view = memoryview(data)
        with self._write_lock:
            while view:
                size = self.conn.max_payload
                chunk, view = view[:size], view[size:]
                with self._cond:
                    while not self._can_send and not self.closed:
                        self._cond.wait(1.0)
                    if self.closed:
                        return False
                    self._can_send = False
                try:
                    self.conn.send(A_WRTE, self.local_id, self.remote_id, bytes(chunk))
                except OSError:
                    self._mark_closed()
                    return False
        return True

    def read(self) -> bytes | None:
        """Next chunk the host wrote (acked with OKAY once taken); None when the stream closed."""
        with self._cond:
            while not self._inbox and not self.closed:
                self._cond.wait(1.0)
            if not self._inbox:
                return None
            data = self._inbox.popleft()
            closed = self.closed
        if not closed:
            with contextlib.suppress(OSError):
                self.conn.send(A_OKAY, self.local_id, self.remote_id)
        return data

    def close(self) -> None:
        """Close from our side (CLSE to the host)."""
        if self._mark_closed():
            with contextlib.suppress(OSError):
                self.conn.send(A_CLSE, self.local_id, self.remote_id)

    def _mark_closed(self) -> bool:
        with self._cond:
            if self.closed:
                return False
            self.closed = True
            self._cond.notify_all()
        self.conn.forget(self)
        for hook in self.on_close:
            with contextlib.suppress(Exception):
                hook()
        return True


class StreamReader:
    """Exact-size reads over a Stream (sync protocol and shell v2 packets)."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.buf = bytearray()

    def read_exact(self, size: int) -> bytes | None:
        while len(self.buf) < size:
            data = self.stream.read()
            if data is None:
                return None
            self.buf += data
        out = bytes(self.buf[:size])
        del self.buf[:size]
        return out


# ----------------------------------------------------------------------------- connection


class Connection:
    """One TCP connection from an adb server (a 'transport')."""

    def __init__(self, device: FakeAdbd, sock: socket.socket) -> None:
        self.device = device
        self.sock = sock
        self.version = A_VERSION
        self.max_payload = MAX_PAYLOAD
        self.online = False
        self._send_lock = threading.Lock()
        self._streams: dict[int, Stream] = {}
        self._streams_lock = threading.Lock()
        self._next_id = 1

    def send(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        checksum = 0 if self.version >= A_VERSION_SKIP_CHECKSUM else sum(data) & 0xFFFFFFFF
        header = struct.pack("<6I", command, arg0, arg1, len(data), checksum,
                             command ^ 0xFFFFFFFF)
        with self._send_lock:
            self.sock.sendall(header + data)

    def forget(self, stream: Stream) -> None:
        with self._streams_lock:
            if self._streams.get(stream.local_id) is stream:
                del self._streams[stream.local_id]

    def _recv_exact(self, size: int) -> bytes | None:
        buf = bytearray()
        while len(buf) < size:
            try:
                chunk = self.sock.recv(size - len(buf))
            except OSError:
                return None
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)

    def serve(self) -> None:
        try:
            while True:
                header = self._recv_exact(24)
                if header is None:
                    return
                command, arg0, arg1, length, _check, magic = struct.unpack("<6I", header)
                if magic != command ^ 0xFFFFFFFF or length > 16 * 1024 * 1024:
                    log(f"bad packet header {header.hex()}; dropping connection")
                    return
                data = self._recv_exact(length) if length else b""
                if data is None:
                    return
                # The checksum (byte sum before A_VERSION_SKIP_CHECKSUM, 0 after) is not
                # verified: TCP already guarantees integrity and both forms are accepted.
                self._dispatch(command, arg0, arg1, data)
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        with self._streams_lock:
            streams = list(self._streams.values())
        for stream in streams:
            stream.on_remote_close()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def _dispatch(self, command: int, arg0: int, arg1: int, data: bytes) -> None:
        if command in (A_CNXN, A_AUTH):
            if command == A_CNXN:
                self._reset_streams()
                self.version = min(arg0, A_VERSION) if arg0 >= A_VERSION_MIN else A_VERSION_MIN
                limit = MAX_PAYLOAD if self.version >= A_VERSION_SKIP_CHECKSUM else MAX_PAYLOAD_V1
                self.max_payload = min(arg1 or limit, limit)
                self.device.record_host(data)
            # No AUTH required: answer the host's CNXN (or a stray AUTH) with our CNXN.
            self.send(A_CNXN, self.version, self.max_payload, self.device.banner())
            self.online = True
            return
        if not self.online:
            return
        if command == A_OPEN:
            self._open(arg0, data.rstrip(b"\0").decode("utf-8", "replace"))
            return
        with self._streams_lock:
            stream = self._streams.get(arg1)
        if stream is None or arg0 not in (stream.remote_id, 0):
            if command == A_WRTE:  # unknown stream: tell the host it is gone
                with contextlib.suppress(OSError):
                    self.send(A_CLSE, 0, arg0)
            return
        if command == A_OKAY:
            stream.on_okay()
        elif command == A_WRTE:
            stream.on_write(data)
        elif command == A_CLSE:
            stream.on_remote_close()
        # A_SYNC / A_STLS and anything else: ignored

    def _reset_streams(self) -> None:
        with self._streams_lock:
            streams = list(self._streams.values())
        for stream in streams:
            stream.on_remote_close()

    def _open(self, remote_id: int, service: str) -> None:
        handler = self.device.service_handler(service)
        if handler is None or remote_id == 0:
            log(f"unsupported service {service!r}")
            with contextlib.suppress(OSError):
                self.send(A_CLSE, 0, remote_id)
            return
        with self._streams_lock:
            local_id = self._next_id
            self._next_id += 1
            stream = Stream(self, local_id, remote_id)
            self._streams[local_id] = stream
        threading.Thread(target=self._run_service, args=(handler, stream, service),
                         name=f"svc-{local_id}", daemon=True).start()

    def _run_service(self, handler: Callable[[Stream], None], stream: Stream, name: str) -> None:
        try:
            handler(stream)
        except Exception as exc:  # a broken service must not take the daemon down
            log(f"service {name!r} failed: {exc!r}")
        finally:
            stream.close()


# ----------------------------------------------------------------------------- the device


class FakeAdbd:
    """The fake device: a loopback listener plus the services behind it."""

    def __init__(self, root: str | Path, serial_name: str = "opsrun-fake", host: str = "127.0.0.1",
                 port: int = 0, features: tuple[str, ...] = FEATURES) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"fake_adbd listens on loopback only, not {host}")
        missing = [p.name for p in SHIMS_DIR.iterdir()
                   if p.suffix != ".py" and p.is_file() and not os.access(p, os.X_OK)]
        if missing:
            raise RuntimeError(f"shims not executable (chmod +x {SHIMS_DIR}/*): {missing}")
        self.root = str(Path(root).resolve())
        self.serial_name = serial_name
        self.host = host
        self.features = features
        self.listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        self.listener.listen(16)
        self.port: int = self.listener.getsockname()[1]
        self._stopping = threading.Event()
        self._connections: set[Connection] = set()
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()
        self.host_banner = b""
        shims.ensure_state(self.root, serial_name)

    # ---- lifecycle
    def serve_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _addr = self.listener.accept()
            except OSError:
                break
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(self, sock)
            with self._lock:
                self._connections.add(conn)
            threading.Thread(target=self._serve_conn, args=(conn,), daemon=True).start()

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="fake_adbd", daemon=True)
        thread.start()
        return thread

    def _serve_conn(self, conn: Connection) -> None:
        try:
            conn.serve()
        finally:
            with self._lock:
                self._connections.discard(conn)

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        with self._lock:
            conns = list(self._connections)
        for conn in conns:
            conn.shutdown()
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            _kill_group(proc)

    # ---- identity
    def banner(self) -> bytes:
        props = shims.read_props(self.root)
        parts = [f"{key}={props.get(key, '')}" for key in
                 ("ro.product.name", "ro.product.model", "ro.product.device")]
        parts.append("features=" + ",".join(self.features))
        return ("device::" + ";".join(parts)).encode()

    def record_host(self, banner: bytes) -> None:
        self.host_banner = banner.rstrip(b"\0")

    # ---- helpers
    def host_path(self, device_path: str) -> str:
        """Device path -> path under ROOT (normalised, cannot climb out of ROOT lexically)."""
        return self.root + posixpath.normpath("/" + device_path.lstrip("/"))

    def _inside_root(self, path: str) -> bool:
        real = os.path.realpath(path)
        return real == self.root or real.startswith(self.root + "/")

    def env(self, term: str | None = None) -> dict[str, str]:
        env = {
            "PATH": f"{SHIMS_DIR}:{HOST_PATH}",
            "HOME": self.root,
            "ANDROID_ROOT": self.root,
            "FAKE_ADBD_ROOT": self.root,
            "FAKE_ADBD_SERIAL": self.serial_name,
            "FAKE_ADBD_SHIMS": str(SHIMS_DIR),
            "FAKE_ADBD_PYTHON": sys.executable,
            "TMPDIR": self.host_path("/data/local/tmp"),
            "LANG": "C.UTF-8",
            "SHELL": "/bin/sh",
        }
        if term:
            env["TERM"] = term
        return env

    def service_handler(self, service: str) -> Callable[[Stream], None] | None:
        if service.startswith("shell"):
            head, sep, command = service.partition(":")
            if not sep or (head != "shell" and not head.startswith("shell,")):
                return None
            args = head.split(",")[1:]
            v2 = "v2" in args
            term = next((a[5:] for a in args if a.startswith("TERM=")), None)
            return lambda s: self.run_command(s, command, v2=v2, term=term)
        if service.startswith("exec:"):
            return lambda s: self.run_command(s, service[5:], v2=False, term=None)
        if service == "sync:":
            return self.run_sync
        if service.startswith("reboot:"):
            return lambda s: self.run_reboot(s, service[7:])
        if service in ("root:", "unroot:"):
            text = b"adbd is already running as root\n" if service == "root:" else \
                b"adbd not running as root\n"
            return lambda s: self.run_text(s, text)
        if service.startswith("tcp:"):
            return lambda s: self.run_tcp(s, service[4:])
        return None

    # ---- services
    def run_text(self, stream: Stream, text: bytes) -> None:
        stream.accept()
        stream.write(text)

    def run_reboot(self, stream: Stream, target: str) -> None:
        stream.accept()
        shims.State(self.root).log("reboots.log", f"service {target}".strip())

    def run_command(self, stream: Stream, command: str, v2: bool, term: str | None) -> None:
        """shell:/exec: (raw, stderr merged into stdout) and shell,v2: (framed, exit code)."""
        argv = ["/bin/sh", "-c", map_device_paths(command, self.root)] if command else ["/bin/sh"]
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE if v2 else subprocess.STDOUT,
                cwd=self.root, env=self.env(term), start_new_session=True, bufsize=0,
            )
        except OSError as exc:
            log(f"cannot start {argv!r}: {exc}")
            stream.reject()
            return
        with self._lock:
            self._procs.add(proc)
        stream.on_close.append(lambda: _kill_group(proc))
        stream.accept()
        chunk = max(stream.conn.max_payload - (5 if v2 else 0), 1)

        def pump(pipe: Any, packet_id: int) -> None:
            while True:
                try:
                    data = pipe.read(chunk)
                except (OSError, ValueError):
                    data = b""
                if not data:
                    break
                if v2:
                    data = struct.pack("<BI", packet_id, len(data)) + data
                if not stream.write(data):
                    _kill_group(proc)  # host went away; keep draining until EOF
            pipe.close()

        pumps = [threading.Thread(target=pump, args=(proc.stdout, SHELL_STDOUT), daemon=True)]
        if v2:
            pumps.append(threading.Thread(target=pump, args=(proc.stderr, SHELL_STDERR),
                                          daemon=True))
        for thread in pumps:
            thread.start()
        feeder = threading.Thread(target=self._feed_stdin, args=(stream, proc, v2), daemon=True)
        feeder.start()
        for thread in pumps:
            thread.join()
        code = proc.wait()
        with self._lock:
            self._procs.discard(proc)
        if v2 and not stream.closed:
            status = code if code >= 0 else 128 - code
            stream.write(struct.pack("<BIB", SHELL_EXIT, 1, status & 0xFF))
        stream.close()
        feeder.join(timeout=5)

    @staticmethod
    def _feed_stdin(stream: Stream, proc: subprocess.Popen[bytes], v2: bool) -> None:
        stdin = proc.stdin
        assert stdin is not None

        def put(data: bytes) -> None:
            if not stdin.closed:
                try:
                    stdin.write(data)
                except (OSError, ValueError):
                    with contextlib.suppress(OSError, ValueError):
                        stdin.close()

        if not v2:
            while (data := stream.read()) is not None:
                put(data)
        else:
            reader = StreamReader(stream)
            while (header := reader.read_exact(5)) is not None:
                packet_id, length = struct.unpack("<BI", header)
                payload = reader.read_exact(length)
                if payload is None:
                    break
                if packet_id == SHELL_STDIN:
                    put(payload)
                elif packet_id == SHELL_CLOSE_STDIN:
                    with contextlib.suppress(OSError, ValueError):
                        stdin.close()
                # SHELL_WINSIZE and unknown ids: ignored (no pty here)
        with contextlib.suppress(OSError, ValueError):
            stdin.close()

    def run_tcp(self, stream: Stream, target: str) -> None:
        host, _, port_text = target.rpartition(":")
        if host not in ("", "localhost", "127.0.0.1") or not port_text.isdigit():
            stream.reject()
            return
        try:
            sock = socket.create_connection(("127.0.0.1", int(port_text)), timeout=5)
        except OSError:
            stream.reject()
            return
        sock.settimeout(None)
        stream.on_close.append(lambda: _close_socket(sock))
        stream.accept()

        def upstream() -> None:
            while True:
                try:
                    data = sock.recv(stream.conn.max_payload)
                except OSError:
                    data = b""
                if not data or not stream.write(data):
                    break
            stream.close()

        thread = threading.Thread(target=upstream, daemon=True)
        thread.start()
        while (data := stream.read()) is not None:
            try:
                sock.sendall(data)
            except OSError:
                break
        _close_socket(sock)
        thread.join(timeout=5)

    # ---- sync
    def run_sync(self, stream: Stream) -> None:
        stream.accept()
        reader = StreamReader(stream)
        while True:
            header = reader.read_exact(8)
            if header is None:
                return
            request, length = header[:4], struct.unpack("<I", header[4:])[0]
            if length > 1024:
                self._sync_fail(stream, "path too long")
                return
            raw = reader.read_exact(length)
            if raw is None:
                return
            path = raw.decode("utf-8", "surrogateescape")
            if request == b"STAT":
                stream.write(self._lstat_v1(path))
            elif request in (b"STA2", b"LST2"):
                stream.write(self._stat_v2(request, path))
            elif request in (b"LIST", b"LIS2"):
                stream.write(self._list(path, v2=request == b"LIS2"))
            elif request == b"SEND":
                if not self._sync_send(stream, reader, path):
                    return
            elif request == b"RECV":
                if not self._sync_recv(stream, path):
                    return
            elif request == b"QUIT":
                return
            else:
                self._sync_fail(stream, f"unknown command {struct.unpack('<I', request)[0]:08x}")
                return

    @staticmethod
    def _sync_fail(stream: Stream, reason: str) -> None:
        message = reason.encode()
        stream.write(b"FAIL" + struct.pack("<I", len(message)) + message)

    def _lstat_v1(self, path: str) -> bytes:
        try:
            st = os.lstat(self.host_path(path))
            fields = (st.st_mode, st.st_size, int(st.st_mtime))
        except OSError:
            fields = (0, 0, 0)
        return b"STAT" + struct.pack("<III", *(f & 0xFFFFFFFF for f in fields))

    @staticmethod
    def _v2_fields(st: os.stat_result) -> tuple[int, ...]:
        return (0, st.st_dev, st.st_ino, st.st_mode, st.st_nlink, st.st_uid, st.st_gid,
                st.st_size, int(st.st_atime), int(st.st_mtime), int(st.st_ctime))

    def _stat_v2(self, request: bytes, path: str) -> bytes:
        fields: tuple[int, ...]
        try:
            target = self.host_path(path)
            st = os.stat(target) if request == b"STA2" else os.lstat(target)
            fields = self._v2_fields(st)
        except OSError as exc:
            fields = (exc.errno or errno.EIO, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        return request + struct.pack("<IQQIIIIQqqq", *fields)

    def _list(self, path: str, v2: bool) -> bytes:
        directory = self.host_path(path)
        out = bytearray()
        try:
            names = [".", "..", *sorted(os.listdir(directory))]
        except OSError:
            names = []
        for name in names:
            encoded = os.fsencode(name)
            try:
                st = os.lstat(os.path.join(directory, name))
            except OSError as exc:
                if not v2:
                    continue
                out += b"DNT2" + struct.pack("<IQQIIIIQqqqI", exc.errno or errno.EIO,
                                             *([0] * 10), len(encoded)) + encoded
                continue
            if v2:
                out += b"DNT2" + struct.pack("<IQQIIIIQqqqI", *self._v2_fields(st),
                                             len(encoded)) + encoded
            else:
                out += b"DENT" + struct.pack("<IIII", st.st_mode & 0xFFFFFFFF,
                                             st.st_size & 0xFFFFFFFF,
                                             int(st.st_mtime) & 0xFFFFFFFF, len(encoded)) + encoded
        out += b"DONE" + bytes(struct.calcsize("<IQQIIIIQqqqI" if v2 else "<IIII"))
        return bytes(out)

    def _sync_send(self, stream: Stream, reader: StreamReader, spec: str) -> bool:
        path, comma, mode_text = spec.rpartition(",")
        if not comma:
            self._sync_fail(stream, "missing , in ID_SEND_V1")
            return False
        try:
            mode = int(mode_text, 8 if mode_text.startswith("0") and mode_text != "0" else 0)
        except ValueError:
            self._sync_fail(stream, "bad mode")
            return False
        target = self.host_path(path)
        error: str | None = None
        if not self._inside_root(os.path.dirname(target)):
            error = "couldn't create file: Permission denied"
        data_chunks: list[bytes] = []
        mtime = 0
        # read the whole DATA... DONE sequence first (like adbd, keep reading after an error)
        while True:
            head = reader.read_exact(8)
            if head is None:
                return False
            kind, size = head[:4], struct.unpack("<I", head[4:])[0]
            if kind == b"DONE":
                mtime = size
                break
            if kind != b"DATA":
                self._sync_fail(stream, "invalid data message")
                return False
            if size > SYNC_DATA_MAX:
                self._sync_fail(stream, "oversize data message")
                return False
            chunk = reader.read_exact(size)
            if chunk is None:
                return False
            data_chunks.append(chunk)
        if error is None:
            error = self._write_file(target, mode, b"".join(data_chunks), mtime)
        if error is not None:
            self._sync_fail(stream, error)
            return False
        return stream.write(b"OKAY" + struct.pack("<I", 0))

    @staticmethod
    def _write_file(target: str, mode: int, data: bytes, mtime: int) -> str | None:
        if stat.S_ISLNK(mode):
            link = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
            try:
                if os.path.lexists(target):
                    os.unlink(target)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.symlink(link, target)
                os.utime(target, (mtime, mtime), follow_symlinks=False)
            except OSError as exc:
                return f"symlink failed: {exc.strerror}"
            return None
        perms = mode & 0o777
        perms |= (perms >> 3) & 0o070
        perms |= (perms >> 3) & 0o007
        try:
            if os.path.islink(target) or os.path.isfile(target):
                os.unlink(target)
        except OSError:
            pass
        try:
            try:
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, perms)
            except FileNotFoundError:
                try:
                    os.makedirs(os.path.dirname(target), mode=0o775, exist_ok=True)
                except OSError as exc:
                    return f"secure_mkdirs failed: {exc.strerror}"
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, perms)
            except FileExistsError:
                fd = os.open(target, os.O_WRONLY, perms)
        except OSError as exc:
            return f"couldn't create file: {exc.strerror}"
        try:
            os.fchmod(fd, perms)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        except OSError as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(target)
            return f"write failed: {exc.strerror}"
        os.close(fd)
        os.utime(target, (mtime, mtime))
        return None

    def _sync_recv(self, stream: Stream, path: str) -> bool:
        target = self.host_path(path)
        if not self._inside_root(target):
            self._sync_fail(stream, "open failed: Permission denied")
            return False
        try:
            fd = os.open(target, os.O_RDONLY)
        except OSError as exc:
            self._sync_fail(stream, f"open failed: {exc.strerror}")
            return False
        try:
            while True:
                try:
                    data = os.read(fd, SYNC_DATA_MAX - 8)
                except OSError as exc:
                    self._sync_fail(stream, f"read failed: {exc.strerror}")
                    return False
                if not data:
                    break
                if not stream.write(b"DATA" + struct.pack("<I", len(data)) + data):
                    return False
        finally:
            os.close(fd)
        return stream.write(b"DONE" + struct.pack("<I", 0))


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


def _close_socket(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: pick a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument("--root", required=True, help="folder that acts as the device's /")
    parser.add_argument("--serial-name", default="opsrun-fake", help="ro.serialno of the device")
    parser.add_argument("--features", default=",".join(FEATURES),
                        help="comma separated feature list to advertise (default: all we have)")
    args = parser.parse_args(argv)
    os.makedirs(args.root, exist_ok=True)
    features = tuple(f for f in args.features.split(",") if f)
    try:
        device = FakeAdbd(args.root, args.serial_name, args.host, args.port, features)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"fake_adbd: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1

    def stop(_signum: int, _frame: Any) -> None:
        device.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"fake_adbd ready {args.host}:{device.port}", flush=True)
    thread = device.start()
    while thread.is_alive():
        thread.join(0.5)
    time.sleep(0.05)
    return 0


if __name__ == "__main__":
    sys.exit(main())
