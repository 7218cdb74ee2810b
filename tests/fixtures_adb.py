"""pytest plugin: the REAL adb server on a free loopback port, plus fake Android devices.

Fixtures adb_server (session), fake_android (device factory) and fake_apk; every process is
stopped by its PID at teardown, and nothing here talks beyond 127.0.0.1.
"""

# Binary: the adb inside the adbutils wheel (36.x, reconnects within a second), else Debian's
# `adb` (29.x, also works); OPSRUN_TEST_ADB=/path/to/adb forces one. The server runs as
# `adb -P PORT nodaemon server` with its own HOME (its own ~/.android/adbkey) and mDNS, USB and
# emulator scanning off; devices are tests/peers/fake_adbd.py processes joined with
# host:connect (the `adb connect` service, sent over the socket so no CLI can spawn a server).

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_peer

HERE = Path(__file__).resolve().parent
FAKE_ADBD = HERE / "peers" / "fake_adbd.py"
FAKE_MANIFEST = "opsrun-fake-manifest.txt"
LOOPBACK = "127.0.0.1"

#: adb server environment switches: no mDNS, no USB scan, no emulator port scan.
QUIET_ENV = {"ADB_MDNS": "0", "ADB_USB": "0", "ADB_EMU": "0", "ADB_LIBUSB": "0"}


def _wait(predicate: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(step)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _stop_pid(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """Stop one process we started: SIGTERM, then SIGKILL; always reaped."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=grace)


def find_adb() -> tuple[str | None, str]:
    """(path, why-not) of a working adb binary."""
    candidates: list[str] = []
    forced = os.environ.get("OPSRUN_TEST_ADB")
    if forced:
        candidates.append(forced)
    else:
        try:
            import adbutils

            candidates.append(str(Path(adbutils.__file__).parent / "binaries" / "adb"))
        except ImportError:
            pass
        system = shutil.which("adb")
        if system:
            candidates.append(system)
    problems: list[str] = []
    for path in candidates:
        if not os.access(path, os.X_OK):
            problems.append(f"{path}: not executable")
            continue
        try:
            out = subprocess.run([path, "version"], capture_output=True, timeout=10, check=True)
        except (OSError, subprocess.SubprocessError) as exc:
            problems.append(f"{path}: {exc}")
            continue
        if b"Android Debug Bridge" in out.stdout:
            return path, ""
        problems.append(f"{path}: unexpected `adb version` output")
    return None, "; ".join(problems) or "no adb binary (apt-get install adb, or adbutils wheel)"


def make_fake_apk(path: str | Path, package: str, version_code: int,
                  version_name: str | None = None, min_sdk: int = 21, target_sdk: int = 30,
                  activities: tuple[str, ...] = (".MainActivity",)) -> Path:
    """Write a fake APK the device's `pm install` understands: a zip with the manifest text."""
    path = Path(path)
    lines = [f"package={package}", f"versionCode={version_code}",
             f"versionName={version_name or version_code}", f"minSdk={min_sdk}",
             f"targetSdk={target_sdk}", f"activities={','.join(activities)}"]
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(FAKE_MANIFEST, "\n".join(lines) + "\n")
        zf.writestr("classes.dex", b"dex\n035\x00" + package.encode())
    return path


# ----------------------------------------------------------------------------- the adb server


@dataclass
class AdbServer:
    """A running `adb nodaemon server` of our own."""

    binary: str
    port: int
    home: Path
    log_path: Path
    proc: subprocess.Popen[bytes]
    host: str = LOOPBACK
    env: dict[str, str] = field(default_factory=dict)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def answers(self) -> bool:
        """True once `host:version` is answered with OKAY."""
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as sock:
                sock.sendall(b"000chost:version")
                return sock.recv(4) == b"OKAY"
        except OSError:
            return False

    def up_or_dead(self) -> bool:
        return self.answers() or not self.alive()

    def client(self) -> Any:
        import adbutils

        return adbutils.AdbClient(host=self.host, port=self.port, socket_timeout=30)

    def devices(self) -> dict[str, str]:
        """serial -> state (device, offline, ...) as the server reports them now."""
        return {info.serial: info.state for info in self.client().list()}

    def cli(self, *args: str, serial: str | None = None, input: bytes | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
        """Run the adb CLI against this server (never lets it spawn a second server)."""
        if not self.alive():
            raise RuntimeError(f"adb server (pid {self.proc.pid}) is not running; see "
                               f"{self.log_path}")
        argv = [self.binary, "-H", self.host, "-P", str(self.port)]
        if serial:
            argv += ["-s", serial]
        return subprocess.run([*argv, *args], input=input, capture_output=True,
                              timeout=timeout, env=self.env, check=False)


def _server_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ADB_", "ANDROID_"))}
    env.update(QUIET_ENV)
    env["HOME"] = str(home)
    return env


def start_adb_server(binary: str, workdir: Path, attempts: int = 3) -> AdbServer:
    home = workdir / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = _server_env(home)
    last = ""
    for attempt in range(attempts):
        port = free_port()
        log_path = workdir / f"adb-server-{attempt}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([binary, "-P", str(port), "nodaemon", "server"],
                                    stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, env=env, cwd=workdir)
        server = AdbServer(binary=binary, port=port, home=home, log_path=log_path,
                           proc=proc, env=env)
        with contextlib.suppress(TimeoutError):
            _wait(server.up_or_dead, 15, "the adb server to answer")
        if server.alive() and server.answers():
            return server
        _stop_pid(proc)
        last = log_path.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"adb server did not start ({binary}); last log:\n{last}")


@pytest.fixture(scope="session")
def adb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdbServer]:
    """The real adb server (own HOME and adbkey, free port); killed by PID at the end."""
    binary, why = find_adb()
    require_peer(binary is not None, f"adb: {why}")
    assert binary is not None
    server = start_adb_server(binary, tmp_path_factory.mktemp("adb-server"))
    try:
        yield server
    finally:
        _stop_pid(server.proc)


# ----------------------------------------------------------------------------- fake devices


@dataclass
class FakeDevice:
    """One fake_adbd process plus its connection state in the adb server."""

    name: str
    root: Path
    server: AdbServer
    port: int = 0
    features: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def serial(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def state_dir(self) -> Path:
        return self.root / ".state"

    def path(self, device_path: str) -> Path:
        """Where a device path (/sdcard/x) lives on this machine."""
        return self.root / device_path.lstrip("/")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 15) -> None:
        """Start the daemon (same port and root as before, if it ran already)."""
        if self.alive():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        self.log_path = self.root.parent / f"{self.name}-fake_adbd.log"
        argv = [sys.executable, str(FAKE_ADBD), "--port", str(self.port), "--root",
                str(self.root), "--serial-name", self.name]
        if self.features is not None:
            argv += ["--features", self.features]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=log)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(remaining, 0))
            if not ready:
                _stop_pid(self.proc)
                raise TimeoutError(f"fake_adbd {self.name} not ready in {timeout}s; see "
                                   f"{self.log_path}")
            chunk = os.read(self.proc.stdout.fileno(), 200)
            if not chunk:
                raise RuntimeError(f"fake_adbd {self.name} exited: "
                                   f"{self.log_path.read_text(errors='replace')[-2000:]}")
            line += chunk
        words = line.decode().split()
        assert words[:2] == ["fake_adbd", "ready"], line
        self.port = int(words[2].rsplit(":", 1)[1])

    def state(self) -> str | None:
        """The server's state for this device (None: not listed)."""
        return self.server.devices().get(self.serial)

    def wait_state(self, states: set[str | None], timeout: float = 15) -> str | None:
        seen: list[str | None] = []

        def check() -> bool:
            seen[:] = [self.state()]
            return seen[0] in states

        _wait(check, timeout, f"{self.serial} to be one of {states} (last: {seen})")
        return seen[0]

    def connect(self, timeout: float = 15) -> None:
        """`adb connect` and wait for the `device` state."""
        answer = self.server.client().connect(self.serial, timeout=timeout)
        if "connected" not in answer:
            raise RuntimeError(f"adb connect {self.serial}: {answer}")
        self.wait_state({"device"}, timeout)

    def disconnect(self) -> None:
        if self.server.alive():
            self.server.client().disconnect(self.serial)

    def kill(self) -> None:
        """Crash the device (SIGKILL): the server sees the TCP connection drop."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None:
            _stop_pid(self.proc)
            if self.proc.stdout is not None:
                self.proc.stdout.close()

    def restart(self, timeout: float = 15) -> None:
        """Start again on the same port and root; reconnect (the server may do it by itself)."""
        self.start()
        with contextlib.suppress(TimeoutError):
            self.wait_state({"device"}, timeout=3)
            return
        self.disconnect()
        self.connect(timeout)

    def device(self) -> Any:
        """An adbutils AdbDevice for this device, through our server."""
        return self.server.client().device(self.serial)


@pytest.fixture
def fake_android(adb_server: AdbServer, tmp_path: Path) -> Iterator[Callable[..., FakeDevice]]:
    """Factory: fake_android(name="dev1", features=None) -> a started, connected FakeDevice."""
    devices: list[FakeDevice] = []

    def factory(name: str | None = None, features: str | None = None,
                connect: bool = True) -> FakeDevice:
        name = name or f"fake{len(devices) + 1}"
        dev = FakeDevice(name=name, root=tmp_path / "devices" / name / "root",
                         server=adb_server, features=features)
        devices.append(dev)
        dev.start()
        if connect:
            dev.connect()
        return dev

    try:
        yield factory
    finally:
        for dev in devices:
            dev.stop()
            with contextlib.suppress(Exception):
                dev.disconnect()


@pytest.fixture
def fake_apk(tmp_path: Path) -> Callable[..., Path]:
    """Factory: fake_apk("com.x", 12, version_name="1.2") -> path of a fake APK in tmp_path."""

    def factory(package: str, version_code: int, **kwargs: Any) -> Path:
        return make_fake_apk(tmp_path / f"{package}-{version_code}.apk", package, version_code,
                             **kwargs)

    return factory
