"""Helpers on one paramiko channel: stdin fed without deadlock, the sudo'd shell's hello (its
process group) and RFC 4254 signals. Imports only the stdlib and paramiko: nothing of runner.
"""

from __future__ import annotations

import contextlib
import threading

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
        chan.sendall(data)
        chan.shutdown_write()
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
