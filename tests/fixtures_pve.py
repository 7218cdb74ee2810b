"""pytest fixtures for Proxmox VE: fakepve in-process and as a separate process.

fakepve (PyPI, AGPL) is a test dependency only: these fixtures drive its public API
(FakePve, make_cert) and never copy its code. Both serve HTTPS on 127.0.0.1 with a
throw-away self-signed certificate (used as the CA) and an API token.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from runner.model import Host
from runner.secrets import Secret, mark
from tests.conftest import require_peer

LOOPBACK = "127.0.0.1"
TOKEN_ID = "root@pam!opsrun"
TEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
START_TIMEOUT = 20.0
REPO = Path(__file__).resolve().parent.parent


def _fakepve_available() -> tuple[bool, str]:
    try:
        import cryptography  # noqa: F401  (make_cert needs it)
        import fakepve  # noqa: F401
    except ImportError as exc:
        return False, f"fakepve[crypto] is not installed ({exc})"
    return True, ""


@pytest.fixture(scope="session")
def pve_pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(certfile, keyfile): a self-signed certificate for 127.0.0.1, also the CA to trust."""
    ok, why = _fakepve_available()
    require_peer(ok, why)
    from fakepve.certs import make_cert

    cert, key, _ = make_cert(str(tmp_path_factory.mktemp("pve-pki")), hosts=(LOOPBACK,))
    return cert, key


@dataclass
class PveLab:
    """A running in-process fakepve and how to reach it."""

    pve: Any  # fakepve.FakePve
    loop: asyncio.AbstractEventLoop
    cafile: str
    token_id: str
    token_secret: Secret
    password: str = "secret"
    hosts: list[Host] = field(default_factory=list)

    @property
    def url(self) -> str:
        return str(self.pve.url)

    def host(self, name: str = "pve", **settings: Any) -> Host:
        """A proxmox Host for this fake: API token and the CA by default."""
        base: dict[str, Any] = {"api": self.url, "token_id": self.token_id,
                                "token_secret": self.token_secret, "ca_file": self.cafile,
                                "node": "pve1", "timeout": 10}
        base.update(settings)
        return Host(name=name, transport="proxmox", settings={k: v for k, v in base.items()
                                                              if v is not None})

    def sync(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run fn on the server's event loop (state changes and fault injection)."""
        done = asyncio.run_coroutine_threadsafe(_call(fn, args, kwargs), self.loop)
        return done.result(START_TIMEOUT)


async def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    result = fn(*args, **kwargs)
    if asyncio.iscoroutine(result):
        result = await result
    return result


@pytest.fixture
def pve_lab(pve_pki: tuple[str, str]) -> Iterator[PveLab]:
    """A fresh fakepve for one test: HTTPS on 127.0.0.1 (a free port), time_scale 0 (tasks
    end before the request returns), API token root@pam!opsrun, node pve1 and a Debian
    template on `local`."""
    from fakepve import FakePve, settle

    cert, key = pve_pki
    pve = FakePve(user="root@pam", password="secret", host=LOOPBACK, port=0)
    pve.time_scale = 0
    secret = mark(str(uuid.uuid4()))
    pve.apitokens[TOKEN_ID] = str(secret)
    pve.store_file("local", TEMPLATE.split("/", 1)[1], 200 * 1024 * 1024, content="vztmpl")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fakepve", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(pve.start(cert, key), loop).result(START_TIMEOUT)
    except Exception as exc:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(START_TIMEOUT)
        require_peer(False, f"fakepve did not start: {exc}")
    try:
        yield PveLab(pve=pve, loop=loop, cafile=cert, token_id=TOKEN_ID, token_secret=secret)
    finally:
        try:
            asyncio.run_coroutine_threadsafe(settle(), loop).result(START_TIMEOUT)
            asyncio.run_coroutine_threadsafe(pve.stop(), loop).result(START_TIMEOUT)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(START_TIMEOUT)
            if not thread.is_alive():
                loop.close()


@dataclass
class PveProcess:
    """A fakepve peer process: its URL, CA file, token and PID."""

    url: str
    cafile: str
    token_id: str
    token_secret: str
    pid: int

    def settings(self, **extra: Any) -> dict[str, Any]:
        """Host settings for an inventory (token_secret given as an env: reference)."""
        out: dict[str, Any] = {"transport": "proxmox", "api": self.url, "token_id": self.token_id,
                               "token_secret": "env:OPSRUN_TEST_PVE_TOKEN",
                               "ca_file": self.cafile, "node": "pve1"}
        out.update(extra)
        return out

    def env(self) -> dict[str, str]:
        """The variables the settings above and the PROXMOX_* fallbacks read."""
        return {"OPSRUN_TEST_PVE_TOKEN": self.token_secret, "PROXMOX_HOST": self.url,
                "PROXMOX_USER": self.token_id, "PROXMOX_TOKEN_VALUE": self.token_secret}


def start_pve_process(pki: tuple[str, str], *, guests: str | None = None,
                      nodes: tuple[str, ...] = ()) -> tuple[subprocess.Popen[str], PveProcess]:
    """Launch tests.peers.fakepve_peer and wait (bounded) for its `listening` line."""
    cert, key = pki
    secret = str(uuid.uuid4())
    argv = [sys.executable, "-m", "tests.peers.fakepve_peer", "--host", LOOPBACK, "--port", "0",
            "--cert", cert, "--key", key, "--token-id", TOKEN_ID]
    for node in nodes:
        argv += ["--node", node]
    if guests:
        argv += ["--guests", guests]
    env = dict(os.environ, FAKEPVE_TOKEN_SECRET=secret)
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline() if proc.stdout
                                                         else ""), daemon=True)
    reader.start()
    reader.join(START_TIMEOUT)
    text = line[0].strip() if line else ""
    if "listening on " not in text:
        stop_process(proc)
        err = proc.stderr.read()[-2000:] if proc.stderr else ""
        raise RuntimeError(f"fakepve peer did not start within {START_TIMEOUT:g}s: {text} {err}")
    url = text.split("listening on ", 1)[1]
    return proc, PveProcess(url=url, cafile=cert, token_id=TOKEN_ID, token_secret=secret,
                            pid=proc.pid)


def stop_process(proc: subprocess.Popen[str]) -> None:
    """Stop the peer by its PID: SIGTERM, then SIGKILL after a bounded wait."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        except ProcessLookupError:
            pass
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


@pytest.fixture
def pve_process(pve_pki: tuple[str, str]) -> Iterator[PveProcess]:
    """fakepve as its own process (for CLI end-to-end tests); stopped by PID at teardown."""
    try:
        proc, info = start_pve_process(pve_pki)
    except (OSError, RuntimeError) as exc:
        require_peer(False, f"fakepve peer process: {exc}")
        raise  # unreachable: require_peer skipped or failed
    try:
        yield info
    finally:
        stop_process(proc)
