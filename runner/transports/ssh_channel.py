"""Helpers on one paramiko channel and its socket: stdin fed without deadlock, the sudo'd
shell's hello (its process group), RFC 4254 signals, and TCP ACKs sent at once. Imports only
the stdlib and paramiko: nothing of runner.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

import paramiko
from paramiko.common import cMSG_CHANNEL_REQUEST
from paramiko.message import Message

SUDO_OK = "@@opsrun-sudo-ok@@"  # printed (with its process group) by the root shell
# A builtin `read` of /proc (no fork) gives the root shell's process group for a timeout kill.
SUDO_HELLO = f"pg=; read -r _ _ _ _ pg _ </proc/$$/stat 2>/dev/null; echo {SUDO_OK} $pg"
SUDO_PROMPT = "@@opsrun-sudo-password@@"  # sudo -S -p: tells us when to send the password
CHUNK = 65536
INLINE_STDIN = 1 << 20  # below the SSH window: sendall cannot block, no writer thread needed


def _send_stdin(chan: paramiko.Channel, data: bytes | None) -> threading.Thread | None:
    """Give the command its stdin, then EOF. Large inputs go from a thread so that a
    command writing lots of output before reading can never deadlock against us."""
    if not data:
        chan.shutdown_write()
        return None
    if len(data) <= INLINE_STDIN:
        try:
            chan.sendall(data)
            chan.shutdown_write()
        except OSError:
            # the command ended (its channel closed) before reading its stdin, as `true` can:
            # not a lost connection (subprocess.communicate ignores the broken pipe alike)
            if not (chan.closed and chan.get_transport() is not None and chan.get_transport().is_active()):
                raise
        return None

    def feed() -> None:
        with contextlib.suppress(Exception):
            view = memoryview(data)
            for i in range(0, len(view), CHUNK):
                chan.sendall(view[i:i + CHUNK])
            chan.shutdown_write()

    thread = threading.Thread(target=feed, name="opsrun-ssh-stdin", daemon=True)
    thread.start()
    return thread


def _hello_pgid(out: bytes | bytearray) -> str | None:
    """The process group in the sudo'd shell's first line, "" when unknown, None if absent."""
    if not out.startswith(SUDO_OK.encode()):
        return None
    line = bytes(out).split(b"\n", 1)[0]
    if len(line) == len(out):  # line not finished yet
        return None
    return line[len(SUDO_OK):].decode("ascii", "replace").strip()


def _signal(chan: paramiko.Channel, name: str) -> None:
    """RFC 4254 'signal' request; OpenSSH sshd delivers it to the session's process group."""
    if chan.closed:
        return
    m = Message()
    m.add_byte(cMSG_CHANNEL_REQUEST)
    m.add_int(chan.remote_chanid)
    m.add_string("signal")
    m.add_boolean(False)
    m.add_string(name)
    with contextlib.suppress(Exception):
        chan.transport._send_user_message(m)


class QuickAckSocket:
    """A TCP socket whose every read acknowledges what it read at once (TCP_QUICKACK), for
    paramiko's transport thread.

    After login OpenSSH sends a message of its own (`hostkeys-00@openssh.com`) that the client
    need not answer; with Nagle on in sshd (it is, for sessions without a terminal) the answer
    to the first channel request then waits for the client's delayed ACK of that message:
    ~40 ms on every connection before anything runs. Linux sends a pending ACK when the option
    is set, so setting it after each read ends that wait (measured: first channel 45 ms -> 2 ms)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._quick = hasattr(socket, "TCP_QUICKACK")

    def recv(self, size: int) -> bytes:
        data = self._sock.recv(size)
        if self._quick:
            try:
                self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            except OSError:
                self._quick = False
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


# AES-GCM first: an AEAD cipher needs no separate MAC, and paramiko computes and compares every
# packet's HMAC in Python (~25% of its per-packet CPU with aes-ctr + hmac-sha2-256). The server
# still picks from the whole list (RFC 4253 7.1: the client's first that it supports).
_AEAD = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


class FastTransport(paramiko.Transport):
    """paramiko's Transport offering AES-GCM before its defaults (where paramiko has it)."""

    _preferred_ciphers = (
        *(c for c in _AEAD if c in getattr(paramiko.Transport, "_cipher_info", {})),
        *(c for c in getattr(paramiko.Transport, "_preferred_ciphers", ()) if c not in _AEAD),
    )


def describe(exc: BaseException | None) -> str:
    """A connection-level failure in words (for `cannot connect ...` and `connection lost`)."""
    if exc is None:
        return "unknown error"
    if isinstance(exc, EOFError):
        return "connection closed by the remote side"
    if isinstance(exc, paramiko.ChannelException):
        return f"{exc.text} (SSH channel open failure {exc.code})"
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    return text


def quiet_close(client: paramiko.SSHClient) -> None:
    with contextlib.suppress(Exception):
        client.close()


class _Side:
    """One buffer's flag for DataReady (paramiko's BufferedPipe calls set() and clear())."""

    def __init__(self, owner: DataReady, index: int) -> None:
        self._owner = owner
        self._index = index

    def set(self) -> None:
        self._owner.mark(self._index, True)

    def clear(self) -> None:
        self._owner.mark(self._index, False)


class DataReady:
    """An Event set while a channel's stdout or stderr buffer has data (or is closed): what
    select() on paramiko's `Channel.fileno()` tells, without the OS pipe that makes (two fds,
    and a write and a read of it for every packet that arrives)."""

    def __init__(self, chan: paramiko.Channel) -> None:
        self.event = threading.Event()
        self._on = [False, False]
        self._lock = threading.Lock()
        chan.in_buffer.set_event(_Side(self, 0))  # type: ignore[arg-type]  # set() and clear() are all it calls
        chan.in_stderr_buffer.set_event(_Side(self, 1))  # type: ignore[arg-type]

    def mark(self, index: int, on: bool) -> None:
        with self._lock:
            self._on[index] = on
            if on or any(self._on):
                self.event.set()
            else:
                self.event.clear()

    def wait(self, timeout: float) -> bool:
        return self.event.wait(timeout)
