"""The fake Android device, driven by adbutils and the adb CLI through the REAL adb server.

Covers shell v1/v2 (exit codes, stdin), sync, the shims, two devices, and a crash + restart.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
import time
from pathlib import Path
from typing import TYPE_CHECKING

import adbutils
import pytest
from adbutils.errors import AdbError

from tests.peers import fake_adbd

if TYPE_CHECKING:
    from tests.fixtures_adb import AdbServer


pytestmark = pytest.mark.peer


def shell_v2_packet(packet_id: int, data: bytes = b"") -> bytes:
    return struct.pack("<BI", packet_id, len(data)) + data


def test_shell_v2_separates_streams_and_exit_code(fake_android) -> None:
    d = fake_android().device()
    result = d.shell2("echo hi; echo err >&2; exit 3", v2=True)
    assert isinstance(result, adbutils.ShellReturn)
    assert (result.returncode, result.stdout, result.stderr) == (3, "hi\n", "err\n")
    # v1 (no shell protocol): stderr merged into stdout, exit code only via adbutils' echo trick
    v1 = d.shell2("echo hi; echo err >&2; false")
    assert v1.returncode == 1 and "hi" in v1.output and "err" in v1.output
    assert d.shell("echo $HOME; pwd") .splitlines() == [d.shell("echo $ANDROID_ROOT")] * 2
    # a killed command reports 128+signal like adbd
    assert d.shell2("kill -9 $$", v2=True).returncode == 137


def test_shell_v2_stdin_and_close_stdin(fake_android) -> None:
    d = fake_android().device()
    with d.open_transport(timeout=10) as c:
        c.send_command("shell,v2,raw:cat; echo done >&2")
        c.check_okay()
        c.send(shell_v2_packet(0, b"hello ") + shell_v2_packet(0, b"world"))
        c.send(shell_v2_packet(4))  # close stdin -> cat ends
        out, err, code = b"", b"", None
        while code is None:
            packet_id, length = struct.unpack("<BI", c.read_exact(5))
            data = c.read_exact(length)
            if packet_id == 1:
                out += data
            elif packet_id == 2:
                err += data
            elif packet_id == 3:
                code = data[0]
    assert (out, err, code) == (b"hello world", b"done\n", 0)


def test_adb_cli_shell_stdin_push_pull_install(fake_android, adb_server: AdbServer,
                                               fake_apk, tmp_path: Path) -> None:
    dev = fake_android()
    res = adb_server.cli("shell", "wc -c; exit 5", serial=dev.serial, input=b"x" * 100_000)
    assert (res.returncode, res.stdout.strip()) == (5, b"100000"), res.stderr
    payload = os.urandom(700_000)  # several WRTE packets and sync DATA chunks
    (tmp_path / "in.bin").write_bytes(payload)
    res = adb_server.cli("push", str(tmp_path / "in.bin"), "/sdcard/cli/in.bin", serial=dev.serial)
    assert res.returncode == 0, res.stderr
    assert dev.path("/storage/emulated/0/cli/in.bin").read_bytes() == payload
    res = adb_server.cli("pull", "/sdcard/cli/in.bin", str(tmp_path / "out.bin"),
                         serial=dev.serial)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "out.bin").read_bytes() == payload
    # `adb install` streams the APK into `cmd package install -S` through exec:
    res = adb_server.cli("install", str(fake_apk("com.example.cli", 7)), serial=dev.serial)
    assert res.returncode == 0 and b"Success" in res.stdout, res.stdout + res.stderr
    res = adb_server.cli("reboot", serial=dev.serial)
    assert res.returncode == 0, res.stderr
    dev.device().reboot()  # adbutils: `shell reboot` -> the reboot shim
    assert (dev.state_dir / "reboots.log").read_text().splitlines() == ["service", "shell"]


def test_sync_push_pull_stat_list(fake_android, tmp_path: Path) -> None:
    dev = fake_android()
    d = dev.device()
    data = os.urandom(300_000)
    assert d.sync.push(data, "/sdcard/Download/x.bin", mode=0o640) == len(data)
    assert dev.path("/sdcard/Download/x.bin").read_bytes() == data
    info = d.sync.stat("/sdcard/Download/x.bin")
    assert info.size == len(data) and stat.S_ISREG(info.mode)
    assert stat.S_IMODE(info.mode) == 0o666  # like adbd: user bits copied to group and other
    assert d.sync.read_bytes("/sdcard/Download/x.bin") == data
    assert d.sync.pull("/sdcard/Download/x.bin", tmp_path / "x.bin") == len(data)
    assert (tmp_path / "x.bin").read_bytes() == data
    names = {f.path for f in d.sync.list("/sdcard/Download")}
    assert {"x.bin", ".", ".."} <= names
    missing = d.sync.stat("/sdcard/nope")
    assert (missing.mode, missing.size, missing.mtime) == (0, 0, None)
    with pytest.raises(AdbError, match="No such file"):
        d.sync.read_bytes("/sdcard/nope")
    # a local file to a device directory keeps its name
    (tmp_path / "local.txt").write_text("hello\n")
    d.sync.push(str(tmp_path / "local.txt"), "/data/local/tmp/local.txt")
    assert d.shell("cat /data/local/tmp/local.txt") == "hello"


def test_getprop_setprop_settings(fake_android) -> None:
    d = fake_android().device()
    assert d.prop.model == "OpsrunFake"
    assert d.getprop("ro.build.version.sdk") == "30"
    assert d.getprop("sys.boot_completed") == "1"
    assert d.shell2("setprop ro.product.model X", v2=True).returncode == 1
    d.shell("setprop debug.opsrun 42")
    assert d.getprop("debug.opsrun") == "42"
    assert "[debug.opsrun]: [42]" in d.shell("getprop")
    assert d.shell("settings get global opsrun_flag") == "null"
    d.shell("settings put global opsrun_flag 'a b'")
    assert d.shell("settings get global opsrun_flag") == "a b"
    assert "opsrun_flag=a b" in d.shell("settings list global").splitlines()
    assert d.shell("settings delete global opsrun_flag") == "Deleted 1 rows"
    assert d.shell2("settings get nowhere x", v2=True).returncode == 255


def test_pm_install_list_dumpsys_uninstall(fake_android, fake_apk) -> None:
    d = fake_android().device()
    d.sync.push(fake_apk("com.example.app", 12, version_name="1.2").read_bytes(),
                "/data/local/tmp/app.apk")
    res = d.shell2("pm install -r /data/local/tmp/app.apk", v2=True)
    assert (res.returncode, res.stdout.strip()) == (0, "Success")
    listing = d.shell("pm list packages -3 --show-versioncode").splitlines()
    assert listing == ["package:com.example.app versionCode:12"]
    assert "package:com.android.settings" in d.shell("pm list packages").splitlines()
    info = d.app_info("com.example.app")
    assert info is not None and (info.version_code, info.version_name) == (12, "1.2")
    assert "versionCode=12 minSdk=21 targetSdk=30" in d.shell("dumpsys package com.example.app")
    assert d.shell("pm path com.example.app") == "package:/data/app/com.example.app-1/base.apk"
    d.sync.push(fake_apk("com.example.app", 3).read_bytes(), "/data/local/tmp/old.apk")
    res = d.shell2("pm install /data/local/tmp/old.apk", v2=True)
    assert res.returncode == 1 and "INSTALL_FAILED_VERSION_DOWNGRADE" in res.stdout
    d.sync.push(b"not a zip", "/data/local/tmp/bad.apk")
    assert "INSTALL_PARSE_FAILED_NOT_APK" in d.shell("pm install /data/local/tmp/bad.apk")
    assert d.shell("pm uninstall com.example.app") == "Success"
    assert d.shell("pm list packages -3") == ""
    assert d.shell2("pm uninstall com.example.app", v2=True).returncode == 1


def test_am_pidof_input_screencap(fake_android, fake_apk) -> None:
    dev = fake_android()
    d = dev.device()
    d.sync.push(fake_apk("com.example.app", 1).read_bytes(), "/data/local/tmp/a.apk")
    d.install_remote("/data/local/tmp/a.apk", clean=True)
    assert not dev.path("/data/local/tmp/a.apk").exists()  # adbutils' `rm` stayed in the sandbox
    out = d.shell("am start -W -n com.example.app/.MainActivity")
    assert "Status: ok" in out and "LaunchState: COLD" in out
    pid = d.shell("pidof com.example.app")
    assert pid.isdigit()
    assert d.app_current().package == "com.example.app"
    d.app_stop("com.example.app")
    assert d.shell2("pidof com.example.app", v2=True).returncode == 1
    bad = d.shell2("am start -n com.example.app/.Nope", v2=True)
    assert bad.returncode == 1 and "does not exist" in bad.stderr
    d.click(10, 20)
    d.keyevent("HOME")
    d.swipe(1, 2, 3, 4, 0.1)
    assert (dev.state_dir / "input.log").read_text().splitlines() == [
        "tap 10 20", "keyevent HOME", "swipe 1 2 3 4 100"]
    assert d.shell2("input tap x", v2=True).returncode != 0
    png = d.shell("screencap -p", encoding=None)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert d.screenshot().size == (1080, 1920)
    assert d.window_size(landscape=False) == (1080, 1920)
    d.shell("screencap -p /sdcard/s.png")
    assert dev.path("/sdcard/s.png").read_bytes() == png


def test_two_devices_are_independent(fake_android, adb_server: AdbServer) -> None:
    one, two = fake_android("alpha"), fake_android("beta")
    assert {one.serial: "device", two.serial: "device"}.items() <= adb_server.devices().items()
    one.device().shell("settings put system opsrun 1")
    assert two.device().shell("settings get system opsrun") == "null"
    assert one.device().getprop("ro.serialno") == "alpha"
    assert two.device().getprop("ro.serialno") == "beta"


def test_killed_device_goes_offline_and_comes_back(fake_android) -> None:
    dev = fake_android()
    dev.disconnect()  # the server dropping the connection and making it again
    assert dev.wait_state({None}) is None
    dev.connect()
    dev.device().shell("settings put global before_crash yes")
    dev.kill()
    assert dev.wait_state({"offline", None}) in ("offline", None)
    with pytest.raises(AdbError):
        dev.device().shell("echo hi", timeout=5)
    dev.restart()
    assert dev.state() == "device"
    d = dev.device()
    assert d.shell("echo back") == "back"
    assert d.shell("settings get global before_crash") == "yes"


def test_protocol_cnxn_checksum_and_unknown_service(tmp_path: Path) -> None:
    """Directly on the wire: an old host (checksums) is answered with checksums; bad OPEN -> CLSE."""
    device = fake_adbd.FakeAdbd(tmp_path / "root", "wire")
    device.start()
    try:
        with socket.create_connection(("127.0.0.1", device.port), timeout=5) as sock:

            def send(cmd: bytes, a0: int, a1: int, data: bytes) -> None:
                (c,) = struct.unpack("<I", cmd)
                sock.sendall(struct.pack("<6I", c, a0, a1, len(data), sum(data),
                                         c ^ 0xFFFFFFFF) + data)

            def recv() -> tuple[bytes, int, int, bytes, int]:
                header = b""
                while len(header) < 24:
                    header += sock.recv(24 - len(header))
                c, a0, a1, n, check, magic = struct.unpack("<6I", header)
                assert magic == c ^ 0xFFFFFFFF
                data = b""
                while len(data) < n:
                    data += sock.recv(n - len(data))
                return struct.pack("<I", c), a0, a1, data, check

            send(b"CNXN", 0x01000000, 4096, b"host::\0")
            cmd, version, max_payload, banner, check = recv()
            assert (cmd, version, max_payload) == (b"CNXN", 0x01000000, 4096)
            assert check == sum(banner)
            assert banner.startswith(b"device::ro.product.name=opsrun_fake;")
            features = banner.split(b"features=")[1].decode().split(",")
            assert "shell_v2" in features and not any(f.startswith("sendrecv") for f in features)
            send(b"OPEN", 7, 0, b"framebuffer:\0")
            assert recv()[:3] == (b"CLSE", 0, 7)
            send(b"OPEN", 8, 0, b"shell:echo wire\0")
            cmd, local_id, remote_id, _, _ = recv()
            assert (cmd, remote_id) == (b"OKAY", 8)
            cmd, _, _, data, check = recv()
            assert (cmd, data, check) == (b"WRTE", b"wire\n", sum(b"wire\n"))
            send(b"OKAY", 8, local_id, b"")
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                cmd, a0, a1, _, _ = recv()
                if cmd == b"CLSE":
                    assert (a0, a1) == (local_id, 8)
                    break
    finally:
        device.stop()
