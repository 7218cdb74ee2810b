"""Android over ADB: the transport against the REAL adb server and fake devices (contract), the
step kinds' pure plans (table), and plan/apply through the CLI on two fake devices, with a
device killed mid-run (reported; reconnected under a retry policy) and the shipped kiosk playbook.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from runner import apk
from runner.errors import AuthError, CommandTimeout, ConnectError, OpsrunError
from runner.model import Host, Probe, ProbeResult
from runner.steps import adb as kinds
from runner.steps import adb_apps, adb_device
from runner.steps.base import StepContext
from runner.steps.shell import PrepareError
from runner.transports import transport_for
from runner.transports.adb import ADBTransport, resolve_target
from tests.fixtures_adb import AdbServer, FakeDevice, free_port, make_fake_apk
from tests.oracle import Oracle

ROOT = Path(__file__).resolve().parent.parent
KIOSK = ROOT / "playbooks" / "kiosk.yaml"
PNG = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.peer


# ---------------------------------------------------------------- helpers


def host_for(dev: FakeDevice, name: str = "tab", **extra: Any) -> Host:
    settings = {"serial": dev.serial, "adb_server": f"127.0.0.1:{dev.server.port}", **extra}
    return Host(name, "adb", settings)


def opened(dev: FakeDevice, **extra: Any) -> ADBTransport:
    t = transport_for(host_for(dev, **extra))
    assert isinstance(t, ADBTransport)
    t.open()
    return t


def clean_env() -> dict[str, str]:
    drop = ("OPSRUN_STATE_DIR", "BLISS_", "ADB_", "ANDROID_")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def opsrun(*args: str, cwd: Path, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        cwd=cwd,
        text=True,
        capture_output=True,
        env=clean_env(),
        timeout=timeout,
        check=False,
    )


def recap_of(stdout: str) -> dict[str, Any]:
    """The final recap of `apply --json`."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("{") and '"recap"' in line:
            data: dict[str, Any] = json.loads(line)
            return data
    raise AssertionError(f"no recap in:\n{stdout[-3000:]}")


def events_of(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def write_inventory(path: Path, devices: dict[str, FakeDevice], group: str = "tablets") -> Path:
    server = next(iter(devices.values())).server
    lines = ["opsrun: 1", "hosts:"]
    for name, dev in devices.items():
        lines += [
            f"  {name}:",
            "    transport: adb",
            f'    serial: "{dev.serial}"',
            f'    adb_server: "127.0.0.1:{server.port}"',
        ]
    lines += ["groups:", f"  {group}:", f"    hosts: [{', '.join(devices)}]"]
    path.write_text("\n".join(lines) + "\n")
    return path


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def device_state(dev: FakeDevice, name: str) -> Any:
    return json.loads((dev.state_dir / name).read_text())


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


# ---------------------------------------------------------------- transport contract


def test_run_exit_codes_stderr_stdin_and_timeout(fake_android: Callable[..., FakeDevice]) -> None:
    t = opened(fake_android())
    r = t.run("echo hi; echo oops >&2; exit 3")
    assert (r.rc, r.stdout, r.stderr) == (3, b"hi\n", b"oops\n")
    big = os.urandom(300_000)
    r = t.run("cat | sha256sum | cut -d' ' -f1", stdin=big)
    import hashlib

    assert r.out.strip() == hashlib.sha256(big).hexdigest()
    assert t.run("cat").stdout == b""  # no stdin: closed at once, never hangs
    # quoting is for the device shell: a value with quotes and $ survives as one argument
    r = t.run("printf '%s|' " + kinds.q('it\'s $HOME `x` "q"'))
    assert r.out == 'it\'s $HOME `x` "q"|'
    start = time.monotonic()
    with pytest.raises(CommandTimeout, match=r"timed out after 0\.5s"):
        t.run("sleep 5", timeout=0.5)
    assert time.monotonic() - start < 4
    assert t.run("echo still fine").out == "still fine\n"


def test_put_is_atomic_with_mode_and_get_reads_back(fake_android: Callable[..., FakeDevice]) -> None:
    dev = fake_android()
    t = opened(dev)
    data = os.urandom(200_000)
    t.put("/data/local/tmp/opsrun/blob.bin", data, "0600")
    local = dev.path("/data/local/tmp/opsrun/blob.bin")
    assert local.read_bytes() == data
    assert oct(local.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in local.parent.iterdir()] == ["blob.bin"]  # no temp file left
    assert t.get("/data/local/tmp/opsrun/blob.bin") == data
    with pytest.raises(OpsrunError, match=r"cannot read /sdcard/nope on device 127\.0\.0\.1:\d+"):
        t.get("/sdcard/nope")
    with pytest.raises(OpsrunError, match="cannot write /proc/nope/x"):
        t.put("/proc/nope/x", b"x", None)


class CountingTransport(ADBTransport):
    """Counts device round trips (our own subclass; nothing of adbutils is replaced)."""

    calls = 0

    def _run(self, command: str, *, timeout: float | None, stdin: bytes | None, sudo: bool) -> Any:
        self.calls += 1
        return super()._run(command, timeout=timeout, stdin=stdin, sudo=sudo)


def test_probes_are_one_round_trip(fake_android: Callable[..., FakeDevice]) -> None:
    t = CountingTransport(host_for(fake_android()))
    t.open()
    answers = t.probe(
        [
            Probe("model", "getprop ro.product.model"),
            Probe("flag", "settings get global adb_enabled"),
            Probe("bad", "echo no >&2; exit 4"),
        ]
    )
    assert t.calls == 1
    assert answers["model"].text == "OpsrunFake\n" and answers["flag"].text == "1\n"
    assert (answers["bad"].rc, answers["bad"].stderr) == (4, b"no\n")


def test_wait_loop_runs_in_the_device_shell(fake_android: Callable[..., FakeDevice]) -> None:
    t = opened(fake_android())
    ctx = StepContext(host=t.host)
    params = {"for": "property", "property": "debug.opsrun", "value": "ready", "timeout": 10, "interval": 0.2}
    wait = adb_device.Wait()
    probes = wait.probes(params, ctx)
    assert t.probe(probes)["now"].rc != 0
    change = wait.plan(params, t.probe(probes), ctx)
    assert change.status == "run" and change.read_only
    t.run("(sleep 1; setprop debug.opsrun ready) >/dev/null 2>&1 &")
    start = time.monotonic()
    res = t.execute(change.actions[0])
    assert res.rc == 0 and time.monotonic() - start < 8, res
    assert wait.plan(params, t.probe(probes), ctx).status == "noop"
    never = {"for": "package", "package": "com.example.never", "timeout": 0.6, "interval": 0.2}
    res = t.execute(wait.plan(never, {}, ctx).actions[0])
    assert res.rc == 1 and "gave up after 0.6s waiting for package com.example.never" in res.err
    assert wait.outcome(never, change, [res], lambda e, n: None)[0] == "failed"


def test_pull_copies_once(fake_android: Callable[..., FakeDevice], tmp_path: Path) -> None:
    t = opened(fake_android())
    data = os.urandom(50_000)
    t.put("/sdcard/Download/log.bin", data, None)
    ctx = StepContext(host=t.host, playbook_dir=str(tmp_path))
    pull = kinds.Pull()

    def plan() -> Any:
        params = pull.prepare({"src": "/sdcard/Download/log.bin", "dest": "logs/"}, ctx)
        return params, pull.plan(params, t.probe(pull.probes(params, ctx)), ctx)

    params, change = plan()
    assert change.status == "create", change.summary
    results = [t.execute(a) for a in change.actions]
    assert pull.outcome(params, change, results, lambda e, n: None)[0] == "changed"
    assert (tmp_path / "logs" / "log.bin").read_bytes() == data
    assert plan()[1].status == "noop"


def test_old_device_without_shell_v2(fake_android: Callable[..., FakeDevice]) -> None:
    t = opened(fake_android(features="cmd,stat_v2,ls_v2,fixed_push_mkdir"))
    assert not t.shell_v2
    r = t.run("echo out; echo err >&2; exit 5")
    assert r.rc == 5 and r.out == "out\nerr\n"  # one merged stream on such devices
    with pytest.raises(OpsrunError, match="no shell protocol v2"):
        t.run("cat", stdin=b"x")


def test_device_errors_name_the_device_and_what_to_do(adb_server: AdbServer, tmp_path: Path) -> None:
    server = f"127.0.0.1:{adb_server.port}"
    t = ADBTransport(Host("ghost", "adb", {"serial": "emulator-5554", "adb_server": server}))
    with pytest.raises(ConnectError, match="device emulator-5554 not found by the adb server") as e:
        t.open()
    assert "adb devices" in e.value.hint
    port = free_port()  # nothing listens there
    t = ADBTransport(Host("gone", "adb", {"address": f"127.0.0.1:{port}", "adb_server": server}))
    with pytest.raises(ConnectError, match=f"adb connect 127.0.0.1:{port} failed.*refused"):
        t.open()
    t = ADBTransport(Host("nodev", "adb", {"adb_server": server}))
    with pytest.raises(ConnectError, match="no device given") as e:
        t.open()
    assert "BLISS_ADB_ADDRESS" in e.value.hint
    # no server on that port, and the adb program to start one does not exist
    dead = f"127.0.0.1:{free_port()}"
    missing = str(tmp_path / "no-adb")
    t = ADBTransport(Host("x", "adb", {"serial": "s", "adb_server": dead, "adb_binary": missing}))
    with pytest.raises(ConnectError, match=f"cannot start the adb server with {missing}") as e:
        t.open()
    assert "adb_binary" in e.value.hint


def test_server_answers_are_translated() -> None:
    t = ADBTransport(Host("kiosk1", "adb", {"serial": "10.0.0.5:5555"}))
    t.target = resolve_target(t.host, env={})
    unauthorized = t._fail("device unauthorized.\nThis adb server's $ADB_VENDOR_KEYS is not set", True)
    assert isinstance(unauthorized, AuthError) and "kiosk1: device 10.0.0.5:5555 is unauthorized" in str(unauthorized)
    assert "Allow USB debugging" in unauthorized.hint
    offline = t._fail("device offline", True)
    assert isinstance(offline, ConnectError) and "connection lost" in str(offline)
    gone = t._fail("device '10.0.0.5:5555' not found", True)
    assert isinstance(gone, ConnectError) and "connection lost" in str(gone)
    other = t._fail("closed", True)
    assert not isinstance(other, ConnectError | AuthError)
    # while opening, the same answers are states to wait on or to act upon
    state = t._fail("device unauthorized.", False)
    assert getattr(state, "state", None) == "unauthorized"
    assert getattr(t._fail("device still authorizing", False), "state", None) == "connecting"


@pytest.mark.parametrize(
    ("settings", "env", "expected"),
    [
        (
            {"serial": "R58M", "adb_server": "127.0.0.1:5038"},
            {"BLISS_ADB_SERIAL": "X"},
            ("127.0.0.1", 5038, "R58M", None),
        ),
        ({"address": "10.0.0.9:5555"}, {}, ("127.0.0.1", 5037, "10.0.0.9:5555", "10.0.0.9:5555")),
        ({"serial": "127.0.0.1:4444"}, {}, ("127.0.0.1", 5037, "127.0.0.1:4444", "127.0.0.1:4444")),
        ({}, {"BLISS_ADB_ADDRESS": "192.168.1.7:5555"}, ("127.0.0.1", 5037, "192.168.1.7:5555", "192.168.1.7:5555")),
        ({}, {"BLISS_ADB_HOST": "bliss.lan"}, ("127.0.0.1", 5037, "bliss.lan:5555", "bliss.lan:5555")),
        (
            {},
            {"BLISS_ADB_HOST": "bliss.lan", "BLISS_ADB_PORT": "5556"},
            ("127.0.0.1", 5037, "bliss.lan:5556", "bliss.lan:5556"),
        ),
        (
            {},
            {"BLISS_ADB_SERIAL": "emulator-5554", "ANDROID_ADB_SERVER_PORT": "5039"},
            ("127.0.0.1", 5039, "emulator-5554", None),
        ),
    ],
)
def test_target_from_settings_then_environment(
    settings: dict[str, Any], env: dict[str, str], expected: tuple[Any, ...]
) -> None:
    t = resolve_target(Host("h", "adb", settings), env=env)
    assert (t.server_host, t.server_port, t.serial, t.address) == expected


def test_environment_names_reach_a_real_device(
    fake_android: Callable[..., FakeDevice], monkeypatch: pytest.MonkeyPatch
) -> None:
    dev = fake_android()
    monkeypatch.setenv("BLISS_ADB_HOST", "127.0.0.1")
    monkeypatch.setenv("BLISS_ADB_PORT", str(dev.port))
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(dev.server.port))
    t = ADBTransport(Host("envdev", "adb", {}))
    t.open()
    assert t.target is not None and t.target.source == "BLISS_ADB_HOST + BLISS_ADB_PORT"
    assert t.run("getprop ro.serialno").out.strip() == dev.name


def test_killed_device_is_connection_lost_then_reconnected(fake_android: Callable[..., FakeDevice]) -> None:
    dev = fake_android()
    t = opened(dev)
    killer = threading.Timer(0.5, dev.kill)
    killer.start()
    try:
        with pytest.raises(ConnectError, match="connection lost"):
            t.run("sleep 5")
    finally:
        killer.join()
    t.close()
    with pytest.raises(ConnectError):  # still down: fails fast, names the device
        t.open()
    dev.start()  # back on the same port; open() connects it again
    t.close()
    t.open()
    assert t.run("echo back").out == "back\n"


def test_no_server_is_started_with_adb_binary(adb_server: AdbServer, tmp_path: Path) -> None:
    """No server answers on the port: opsrun runs `ADB -P PORT start-server`. The program here
    starts the real adb server in the foreground mode and records its PID so we can stop it."""
    port = free_port()
    pidfile = tmp_path / "server.pid"
    home = tmp_path / "home"
    home.mkdir()
    wrapper = tmp_path / "adb"
    wrapper.write_text(
        textwrap.dedent(f"""\
        #!/bin/sh
        [ "$1 $3" = "-P start-server" ] || {{ echo "unexpected: $*" >&2; exit 2; }}
        HOME={home} ADB_MDNS=0 ADB_USB=0 ADB_EMU=0 ADB_LIBUSB=0 \\
            {adb_server.binary} -P "$2" nodaemon server >{tmp_path}/server.log 2>&1 </dev/null &
        echo $! > {pidfile}
        """)
    )
    wrapper.chmod(0o755)
    t = ADBTransport(
        Host("x", "adb", {"serial": "nothing-here", "adb_server": f"127.0.0.1:{port}", "adb_binary": str(wrapper)})
    )
    try:
        with pytest.raises(ConnectError, match="device nothing-here not found by the adb server"):
            t.open()  # the server was started (and answered): the device is what is missing
        assert pidfile.exists()
    finally:
        if pidfile.exists():
            pid = int(pidfile.read_text())
            os.kill(pid, 15)
            wait_for(
                lambda: not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z",
                10,
                "the started server to stop",
            )


def test_docs_examples_validate() -> None:
    """Every YAML example in docs/android.md is valid (step snippets are wrapped in a playbook)."""
    from runner import load, schema

    text = (ROOT / "docs" / "android.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert len(blocks) >= 12
    for block in blocks:
        if block.startswith("opsrun:"):
            doc = load.parse(block, "android.md")
            diags = schema.validate_inventory(doc) if schema.detect(doc) == "inventory" else []
        else:
            head = "opsrun: 1\nname: doc\nhosts: all\n"
            body = block if block.startswith("policy:") else "steps:\n" + block
            if block.startswith("policy:"):
                body += "steps:\n  - id: a\n    adb.wait: boot_completed\n"
            diags = schema.validate_playbook(load.parse(head + body, "android.md"))
        assert not diags, "\n".join(d.render() for d in diags) + "\nin:\n" + block


def test_adbutils_is_imported_only_by_the_transport() -> None:
    code = (
        "import sys; from runner.steps import base; base.load_all(); "
        "assert 'adb.install' in base.REGISTRY; print('adbutils' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False", out.stderr


# ---------------------------------------------------------------- APK manifests


def axml(
    strings: Sequence[str], resids: Sequence[int], attrs: Sequence[tuple[int, int, int, int, int]], utf8: bool = False
) -> bytes:
    """A compiled AndroidManifest.xml: string pool, resource map and a <manifest> start tag.
    attrs: (namespace index, name index, raw string index, type, data)."""
    data, offsets = b"", []
    for s in strings:
        offsets.append(len(data))
        if utf8:
            b = s.encode()
            data += bytes([len(s), len(b)]) + b + b"\0"
        else:
            data += struct.pack("<H", len(s)) + s.encode("utf-16-le") + b"\0\0"
    data += b"\0" * (-len(data) % 4)
    head = 28
    body = struct.pack("<IIIII", len(strings), 0, 0x100 if utf8 else 0, head + 4 * len(strings), 0)
    pool = struct.pack("<HHI", 1, head, head + 4 * len(strings) + len(data)) + body[:20]
    pool += b"".join(struct.pack("<I", o) for o in offsets) + data
    resmap = struct.pack("<HHI", 0x0180, 8, 8 + 4 * len(resids)) + b"".join(struct.pack("<I", r) for r in resids)
    manifest = strings.index("manifest")
    ext = struct.pack("<IIHHHHHH", 0xFFFFFFFF, manifest, 20, 20, len(attrs), 0, 0, 0)
    atts = b"".join(struct.pack("<IIIHBBI", ns, name, raw, 8, 0, typ, val) for ns, name, raw, typ, val in attrs)
    element = struct.pack("<HHIII", 0x0102, 16, 16 + len(ext) + len(atts), 1, 0xFFFFFFFF) + ext + atts
    chunks = pool + resmap + element
    return struct.pack("<HHI", 3, 8, 8 + len(chunks)) + chunks


def apk_with(tmp_path: Path, manifest: bytes) -> bytes:
    path = tmp_path / "real.apk"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("AndroidManifest.xml", manifest)
        zf.writestr("classes.dex", b"dex\n035\0")
    return path.read_bytes()


def test_apk_manifest_binary_xml_utf16_and_utf8(tmp_path: Path) -> None:
    strings = ["versionCode", "versionName", "package", "manifest", "com.example.real", "4.2", "android"]
    none = 0xFFFFFFFF
    attrs = [(6, 0, none, 0x10, 42), (6, 1, 5, 0x03, 5), (none, 2, 4, 0x03, 4)]
    info = apk.apk_info(apk_with(tmp_path, axml(strings, [0x0101021B, 0x0101021C], attrs)))
    assert info == {"package": "com.example.real", "version_code": 42, "version_name": "4.2"}
    # UTF-8 pool, attribute names stripped (shrunk APKs): found by resource id; hex int
    strings8 = ["", "", "package", "manifest", "com.example.shrunk", "1.0", "android"]
    attrs8 = [(6, 0, none, 0x11, 0x10), (6, 1, 5, 0x03, 5), (none, 2, 4, 0x03, 4)]
    info = apk.apk_info(apk_with(tmp_path, axml(strings8, [0x0101021B, 0x0101021C], attrs8, utf8=True)))
    assert info == {"package": "com.example.shrunk", "version_code": 16, "version_name": "1.0"}
    assert apk.apk_info(make_fake_apk(tmp_path / "f.apk", "com.x.y", 7).read_bytes())["version_code"] == 7
    for bad in (b"not a zip", apk_with(tmp_path, b"\x03\x00\x08\x00garbage")):
        with pytest.raises(ValueError):
            apk.apk_info(bad)


def test_install_prepare_reads_or_refuses(tmp_path: Path) -> None:
    ctx = StepContext(host=Host("d", "adb"), playbook_dir=str(tmp_path))
    make_fake_apk(tmp_path / "a.apk", "com.example.a", 3)
    p = adb_apps.Install().prepare({"src": "a.apk"}, ctx)
    assert (p["_package"], p["_version_code"]) == ("com.example.a", 3)
    with pytest.raises(PrepareError, match=r"is package com\.example\.a, not com\.other"):
        adb_apps.Install().prepare({"src": "a.apk", "package": "com.other"}, ctx)
    (tmp_path / "b.apk").write_bytes(b"junk")
    with pytest.raises(PrepareError, match="set `package:` and `version_code:`"):
        adb_apps.Install().prepare({"src": "b.apk"}, ctx)
    p = adb_apps.Install().prepare({"src": "b.apk", "package": "com.b", "version_code": 9}, ctx)
    assert (p["_package"], p["_version_code"]) == ("com.b", 9)
    with pytest.raises(PrepareError, match=r"nope\.apk"):
        adb_apps.Install().prepare({"src": "nope.apk"}, ctx)


# ---------------------------------------------------------------- pure plans


def R(text: str = "", rc: int = 0) -> ProbeResult:
    return ProbeResult(rc, text.encode())


CTX = StepContext(host=Host("tab1", "adb"), run_dir="/runs/R1")
APK = {"src": "k.apk", "_apk": b"APK", "_package": "com.k", "_version_code": 5}


def plan_of(kind: kinds.StepKind, params: Any, facts: dict[str, ProbeResult]) -> tuple[str, str, list[str]]:
    p = kind.normalize(params)
    probe_keys = {pr.key for pr in kind.probes(p, CTX)}
    assert set(facts) <= probe_keys, (set(facts), probe_keys)
    c = kind.plan(p, facts, CTX)
    return c.status, c.summary, [a.display() for a in c.actions]


PLANS: list[tuple[str, kinds.StepKind, Any, dict[str, ProbeResult], str, list[str]]] = [
    ("setting same", adb_device.Setting(), {"namespace": "global", "key": "k", "value": 7}, {"value": R("7\n")}, "noop", []),
    (
        "setting unset",
        adb_device.Setting(),
        {"namespace": "global", "key": "k", "value": True},
        {"value": R("null\n")},
        "create",
        ["settings put global k 1"],
    ),
    (
        "setting quoted",
        adb_device.Setting(),
        {"namespace": "secure", "key": "k", "value": "a b'c"},
        {"value": R("x\n")},
        "update",
        ["settings put secure k 'a b'\"'\"'c'"],
    ),
    (
        "setting absent",
        adb_device.Setting(),
        {"namespace": "system", "key": "k", "state": "absent"},
        {"value": R("3\n")},
        "delete",
        ["settings delete system k"],
    ),
    (
        "setting unreadable",
        adb_device.Setting(),
        {"namespace": "global", "key": "k", "value": 1},
        {"value": R("", 255)},
        "unknown",
        [],
    ),
    (
        "install same",
        adb_apps.Install(),
        APK,
        {"list": R("package:com.k versionCode:5\npackage:com.kx versionCode:1\n")},
        "noop",
        [],
    ),
    (
        "install new",
        adb_apps.Install(),
        APK,
        {"list": R("package:com.kx versionCode:1\n"), "dumpsys": R("", 1)},
        "create",
        [
            "put /data/local/tmp/opsrun-com.k.apk (3 bytes, mode 0644)",
            "pm install -r /data/local/tmp/opsrun-com.k.apk; rc=$?; rm -f /data/local/tmp/opsrun-com.k.apk; exit $rc",
        ],
    ),
    (
        "install upgrade",
        adb_apps.Install(),
        APK,
        {"list": R("package:com.k versionCode:4\n")},
        "update",
        [
            "put /data/local/tmp/opsrun-com.k.apk (3 bytes, mode 0644)",
            "pm install -r /data/local/tmp/opsrun-com.k.apk; rc=$?; rm -f /data/local/tmp/opsrun-com.k.apk; exit $rc",
        ],
    ),
    ("install newer there", adb_apps.Install(), APK, {"list": R("package:com.k versionCode:9\n")}, "blocked", []),
    (
        "install old android",
        adb_apps.Install(),
        APK,
        {"list": R("package:com.k\n"), "dumpsys": R("  Package [com.k] (1a2b):\n    versionCode=5 minSdk=21\n")},
        "noop",
        [],
    ),
    ("uninstall absent", adb_apps.Uninstall(), "com.k", {"list": R("package:com.kx\n")}, "noop", []),
    (
        "uninstall",
        adb_apps.Uninstall(),
        {"package": "com.k", "keep_data": True},
        {"list": R("package:com.k\n")},
        "delete",
        ["pm uninstall -k -- com.k"],
    ),
    ("app running", adb_apps.App(), "com.k", {"pid": R("4001\n"), "path": R("package:/data/app/x")}, "noop", []),
    (
        "app start launcher",
        adb_apps.App(),
        "com.k",
        {"pid": R("", 1), "path": R("package:/x")},
        "create",
        ["monkey -p com.k -c android.intent.category.LAUNCHER 1"],
    ),
    (
        "app to front",
        adb_apps.App(),
        {"package": "com.k", "activity": ".Main", "foreground": True},
        {
            "pid": R("4001\n"),
            "path": R("package:/x"),
            "front": R("  mResumedActivity: ActivityRecord{1 u0 com.other/.A t1}"),
        },
        "update",
        ["am start -W -n com.k/.Main"],
    ),
    (
        "app in front",
        adb_apps.App(),
        {"package": "com.k", "activity": ".Main", "foreground": True},
        {
            "pid": R("4001\n"),
            "path": R("package:/x"),
            "front": R("  mResumedActivity: ActivityRecord{1 u0 com.k/.Main t1}"),
        },
        "noop",
        [],
    ),
    (
        "app stop",
        adb_apps.App(),
        {"package": "com.k", "state": "stopped"},
        {"pid": R("4001\n"), "path": R("")},
        "update",
        ["am force-stop -- com.k"],
    ),
    (
        "app clear",
        adb_apps.App(),
        {"package": "com.k", "state": "cleared"},
        {"pid": R("", 1), "path": R("")},
        "run",
        ["pm clear -- com.k"],
    ),
    ("input keys", adb_device.Input(), {"keyevent": ["WAKEUP", 82]}, {}, "run", ["input keyevent WAKEUP 82"]),
    ("input tap", adb_device.Input(), {"tap": {"x": 10, "y": "20"}}, {}, "run", ["input tap 10 20"]),
    (
        "input swipe",
        adb_device.Input(),
        {"swipe": {"x1": 1, "y1": 2, "x2": 3, "y2": 4, "duration_ms": 300}},
        {},
        "run",
        ["input swipe 1 2 3 4 300"],
    ),
    ("input text", adb_device.Input(), {"text": "it's me"}, {}, "run", ["input text 'it'\"'\"'s%sme'"]),
    ("prop read", adb_device.Prop(), "ro.build.version.sdk", {"value": R("30\n")}, "noop", []),
    (
        "prop set",
        adb_device.Prop(),
        {"name": "persist.sys.timezone", "value": "Europe/Paris", "assert": False},
        {"value": R("UTC\n")},
        "update",
        ["setprop persist.sys.timezone Europe/Paris"],
    ),
    (
        "prop ro",
        adb_device.Prop(),
        {"name": "ro.product.model", "value": "X", "assert": False},
        {"value": R("Fake\n")},
        "blocked",
        [],
    ),
    (
        "push new",
        kinds.Push(),
        {"src": "c.json", "dest": "/sdcard/c.json", "_bytes": b"{}\n"},
        {"file": R("absent\n")},
        "create",
        ["put /sdcard/c.json (3 bytes)"],
    ),
    (
        "push same",
        kinds.Push(),
        {"src": "c.json", "dest": "/sdcard/c.json", "_bytes": b"{}\n"},
        {"file": R("file\n660 shell shell 3\nsha256 ca3d163bab055381827226140568f3bef7eaac187cebd76878e0b63e9e442356\n")},
        "noop",
        [],
    ),
    (
        "push same md5",
        kinds.Push(),
        {"src": "c.json", "dest": "/sdcard/c.json", "_bytes": b"{}\n"},
        {"file": R("file\n660 shell shell 3\nmd5 8a80554c91d9fca8acb82f023de02f11\n")},
        "noop",
        [],
    ),
    (
        "push differs",
        kinds.Push(),
        {"src": "c.json", "dest": "/sdcard/c.json", "_bytes": b"{}\n"},
        {"file": R("file\n660 shell shell 3\nsha256 00\n")},
        "update",
        ["put /sdcard/c.json (3 bytes)"],
    ),
    (
        "push onto dir",
        kinds.Push(),
        {"src": "c.json", "dest": "/sdcard", "_bytes": b"{}\n"},
        {"file": R("directory\n")},
        "blocked",
        [],
    ),
    (
        "pull missing",
        kinds.Pull(),
        {"src": "/sdcard/x", "_dest": "/tmp/x", "_local": None},
        {"file": R("absent\n")},
        "unknown",
        [],
    ),
    (
        "pull new",
        kinds.Pull(),
        {"src": "/sdcard/x", "_dest": "/tmp/x", "_local": None},
        {"file": R("file\n660 shell shell 3\nsha256 ab\n")},
        "create",
        ["base64 < /sdcard/x"],
    ),
    (
        "pull same",
        kinds.Pull(),
        {"src": "/sdcard/x", "_dest": "/tmp/x", "_local": {"size": 3, "sha256": "ab"}},
        {"file": R("file\n660 shell shell 3\nsha256 ab\n")},
        "noop",
        [],
    ),
    ("screenshot", kinds.Screenshot(), "front", {}, "run", ["screencap -p | base64"]),
    ("wait done", adb_device.Wait(), "boot_completed", {"now": R()}, "noop", []),
    (
        "wait pkg",
        adb_device.Wait(),
        {"for": "package", "package": "com.k", "timeout": 5, "interval": 2},
        {"now": R("", 1)},
        "run",
        [
            "n=0; until pm list packages -- com.k 2>/dev/null | grep -qxF package:com.k; do n=$((n+1)); if [ $n -ge 3 ]; "
            "then echo 'opsrun: gave up after 5s waiting for package com.k' >&2; exit 1; fi; sleep 2; done"
        ],
    ),
]


@pytest.mark.parametrize(("label", "kind", "params", "facts", "status", "commands"), PLANS, ids=[p[0] for p in PLANS])
def test_plans(
    label: str, kind: kinds.StepKind, params: Any, facts: dict[str, ProbeResult], status: str, commands: list[str]
) -> None:
    got_status, summary, got_commands = plan_of(kind, params, facts)
    assert (got_status, got_commands) == (status, commands), summary
    assert summary


def test_read_only_kinds_say_so() -> None:
    shot = kinds.Screenshot().plan({"name": "front"}, {}, CTX)
    assert shot.read_only and shot.data["artifact"] == "/runs/R1/artifacts/tab1/front.png"
    assert not shot.changes
    assert adb_device.Wait().plan({"for": "boot_completed"}, {"now": R("", 1)}, CTX).read_only
    failing = adb_device.Prop().plan({"name": "ro.x", "value": "1"}, {"value": R("0\n")}, CTX)
    assert failing.read_only and "will fail" in failing.summary
    assert not adb_device.Input().plan({"keyevent": "HOME"}, {}, CTX).read_only


# ---------------------------------------------------------------- plan/apply through the CLI

SITE = """\
    opsrun: 1
    name: tablets
    hosts: tablets
    steps:
      - id: stay_on
        adb.setting: {namespace: global, key: stay_on_while_plugged_in, value: 7}
      - id: apk
        adb.install: app.apk
      - id: config
        adb.push: {src: config.json, dest: /sdcard/Download/kiosk/config.json}
      - id: start
        adb.app: {package: com.example.kiosk, activity: .MainActivity}
      - id: shot
        adb.screenshot: front.png
    """


def run_folder(project: Path, recap: dict[str, Any]) -> Path:
    return project / ".opsrun" / "runs" / str(recap["run_id"])


def test_two_devices_converge_then_stay_unchanged(fake_android: Callable[..., FakeDevice], tmp_path: Path) -> None:
    devs = {"tab1": fake_android("tab1"), "tab2": fake_android("tab2")}
    write_inventory(tmp_path / "inventory.yaml", devs)
    write(tmp_path / "site.yaml", SITE)
    make_fake_apk(tmp_path / "app.apk", "com.example.kiosk", 12)
    (tmp_path / "config.json").write_text('{"url": "https://example.com"}\n')

    p = opsrun("plan", "site.yaml", "--detailed-exitcode", cwd=tmp_path)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "$ settings put global stay_on_while_plugged_in 7" in p.stdout
    assert "pm install -r /data/local/tmp/opsrun-com.example.kiosk.apk" in p.stdout
    assert "$ am start -W -n com.example.kiosk/.MainActivity" in p.stdout
    assert "$ screencap -p | base64" in p.stdout

    first = opsrun("apply", "site.yaml", "--yes", "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr
    recap = recap_of(first.stdout)
    assert recap["totals"]["changed"] == 8 and recap["totals"]["failed"] == 0, recap
    for name, dev in devs.items():
        assert device_state(dev, "settings.json")["global"]["stay_on_while_plugged_in"] == "7"
        assert device_state(dev, "packages.json")["com.example.kiosk"]["versionCode"] == 12
        assert dev.path("/sdcard/Download/kiosk/config.json").read_text() == '{"url": "https://example.com"}\n'
        assert "com.example.kiosk" in device_state(dev, "running.json")["apps"]
        shot = run_folder(tmp_path, recap) / "artifacts" / name / "front.png"
        assert shot.read_bytes().startswith(PNG), shot
    shown = opsrun("runs", "show", str(recap["run_id"]), cwd=tmp_path)
    for name in devs:  # `runs show` lists the screenshots the run saved
        assert f"artifact: artifacts/{name}/front.png" in shown.stdout, shown.stdout

    again = opsrun("plan", "site.yaml", "--detailed-exitcode", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "= stay_on: setting global stay_on_while_plugged_in is '7'" in again.stdout
    assert "= apk: com.example.kiosk versionCode 12 is installed" in again.stdout
    second = opsrun("apply", "site.yaml", "--yes", "--json", cwd=tmp_path)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr
    recap2 = recap_of(second.stdout)
    assert recap2["totals"]["changed"] == 0, recap2
    commands = [e.get("command", "") for e in events_of(second.stdout) if e.get("type") == "attempt"]
    assert commands and all(c.startswith("screencap") for c in commands), commands  # no install, no push
    for name in devs:
        assert (run_folder(tmp_path, recap2) / "artifacts" / name / "front.png").is_file()


SLOW = """\
    opsrun: 1
    name: slow
    hosts: tablets
    {policy}
    steps:
      - id: before
        adb.setting: {{namespace: global, key: opsrun_before, value: 1}}
      - id: slow
        adb.shell: "if [ -f /sdcard/once ]; then echo again; else touch /sdcard/once; sleep 4; fi"
      - id: after
        adb.setting: {{namespace: global, key: opsrun_after, value: 1}}
    """


def start_apply(project: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "runner", "apply", "slow.yaml", "--yes", "--json"],
        cwd=project,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode, out, err


def test_device_killed_mid_run_is_reported_other_device_finishes(
    fake_android: Callable[..., FakeDevice], tmp_path: Path
) -> None:
    devs = {"tab1": fake_android("tab1"), "tab2": fake_android("tab2")}
    write_inventory(tmp_path / "inventory.yaml", devs)
    write(tmp_path / "slow.yaml", SLOW.format(policy=""))
    proc = start_apply(tmp_path)
    try:
        wait_for(lambda: devs["tab1"].path("/sdcard/once").exists(), 60, "the slow step to start on tab1")
        devs["tab1"].kill()
    finally:
        rc, out, err = finish(proc)
    assert rc == 1, out[-3000:] + err
    recap = recap_of(out)
    tab1, tab2 = recap["hosts"]["tab1"], recap["hosts"]["tab2"]
    slow1 = next(s for s in tab1["steps"] if s["step"] == "slow")
    assert slow1["status"] in ("failed", "unreachable") and "connection lost" in slow1["message"], slow1
    assert "after" not in [s["step"] for s in tab1["steps"]]
    assert [s["status"] for s in tab2["steps"]] == ["changed", "changed", "changed"], tab2
    assert device_state(devs["tab2"], "settings.json")["global"]["opsrun_after"] == "1"
    assert "opsrun_after" not in device_state(devs["tab1"], "settings.json")["global"]


def test_device_restarted_within_the_retry_window_succeeds(
    fake_android: Callable[..., FakeDevice], tmp_path: Path
) -> None:
    devs = {"tab1": fake_android("tab1")}
    write_inventory(tmp_path / "inventory.yaml", devs)
    write(tmp_path / "slow.yaml", SLOW.format(policy="policy: {retry: {attempts: 3, delay: 1, on: [connection]}}"))
    proc = start_apply(tmp_path)
    try:
        wait_for(lambda: devs["tab1"].path("/sdcard/once").exists(), 60, "the slow step to start")
        devs["tab1"].kill()
        devs["tab1"].start()  # same port, same state; opsrun reconnects it on the retry
    finally:
        rc, out, err = finish(proc)
    assert rc == 0, out[-3000:] + err
    events = events_of(out)
    assert any(e["type"] == "retry" and e.get("failure") == "connection" for e in events), events
    slow = next(s for s in recap_of(out)["hosts"]["tab1"]["steps"] if s["step"] == "slow")
    assert slow["status"] == "changed" and slow["attempts"] >= 2, slow
    assert device_state(devs["tab1"], "settings.json")["global"]["opsrun_after"] == "1"


def test_shipped_kiosk_playbook(fake_android: Callable[..., FakeDevice], tmp_path: Path) -> None:
    dev = fake_android("kiosk1")
    inventory = write_inventory(tmp_path / "kiosks.yaml", {"kiosk1": dev}, group="kiosks")
    apk = make_fake_apk(tmp_path / "kiosk.apk", "com.example.kiosk", 3)
    args = [str(KIOSK), "-i", str(inventory), "--var", f"kiosk_apk={apk}"]
    first = opsrun("apply", *args, "--yes", "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr
    recap = recap_of(first.stdout)
    assert recap["totals"]["failed"] == 0 and recap["totals"]["changed"] >= 5, recap
    assert device_state(dev, "running.json")["foreground"] == "com.example.kiosk"
    assert device_state(dev, "settings.json")["system"]["screen_off_timeout"] == "2147483647"
    assert json.loads(dev.path("/sdcard/Download/kiosk.json").read_text())["idle_reset_seconds"] == 120
    assert (run_folder(tmp_path, recap) / "artifacts" / "kiosk1" / "kiosk.png").read_bytes().startswith(PNG)
    again = opsrun("plan", *args, "--detailed-exitcode", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr


# ---------------------------------------------------------------- the plan/apply oracle over ADB


def test_two_devices_hold_the_plan_apply_oracle(fake_android: Callable[..., FakeDevice], tmp_path: Path) -> None:
    devs = {"tab1": fake_android("tab1"), "tab2": fake_android("tab2")}
    write_inventory(tmp_path / "inventory.yaml", devs)
    write(tmp_path / "site.yaml", SITE)
    make_fake_apk(tmp_path / "app.apk", "com.example.kiosk", 12)
    (tmp_path / "config.json").write_text('{"url": "https://example.com"}\n')
    oracle = Oracle(tmp_path, drop_env=("OPSRUN_STATE_DIR", "BLISS_", "ADB_", "ANDROID_"))
    oracle.check("site.yaml", check_actions=True)
    oracle.check("site.yaml", check_actions=True)


def test_shipped_kiosk_playbook_holds_the_plan_apply_oracle(
    fake_android: Callable[..., FakeDevice], tmp_path: Path
) -> None:
    dev = fake_android("kiosk1")
    inventory = write_inventory(tmp_path / "kiosks.yaml", {"kiosk1": dev}, group="kiosks")
    apk = make_fake_apk(tmp_path / "kiosk.apk", "com.example.kiosk", 3)
    oracle = Oracle(
        tmp_path,
        inventory=inventory,
        variables=[f"kiosk_apk={apk}"],
        drop_env=("OPSRUN_STATE_DIR", "BLISS_", "ADB_", "ANDROID_"),
    )
    oracle.check(KIOSK, check_actions=True)
    oracle.check(KIOSK, check_actions=True)
