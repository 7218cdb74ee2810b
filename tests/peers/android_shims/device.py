"""Android command shims for the fake ADB device: getprop, settings, pm, am, input, screencap...

One stdlib-only implementation behind the sh wrappers in this folder, with state in ROOT/.state;
it imitates Android's output formats and exit codes, nothing more: no app ever runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import posixpath
import re
import struct
import sys
import time
import zlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # keep start-up light: every shim call is a new process
    from collections.abc import Callable, Iterator
    from typing import Any

#: The text file inside a fake APK (a zip) that describes the app, one `key=value` per line:
#: package (required), versionCode (required), versionName, minSdk, targetSdk,
#: activities (comma separated, ".Main" style allowed), launchActivity.
MANIFEST_NAME = "opsrun-fake-manifest.txt"

SDK = 30
PHYSICAL_SIZE = (1080, 1920)
PHYSICAL_DENSITY = 420
NAMESPACES = ("system", "secure", "global")
PACKAGE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)+$")

SYSTEM_PACKAGES: dict[str, list[str]] = {
    "android": [],
    "com.android.shell": [],
    "com.android.systemui": [],
    "com.android.settings": [".Settings"],
    "com.android.launcher3": [".Launcher"],
}


class UsageError(Exception):
    """A command line the real tool would reject; message goes to stderr."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# ----------------------------------------------------------------------------- state


def default_props(serial: str) -> dict[str, str]:
    return {
        "ro.product.model": "OpsrunFake",
        "ro.product.name": "opsrun_fake",
        "ro.product.device": "fake",
        "ro.product.brand": "opsrun",
        "ro.product.manufacturer": "Opsrun",
        "ro.product.cpu.abi": "x86_64",
        "ro.build.version.sdk": str(SDK),
        "ro.build.version.release": "11",
        "ro.build.type": "userdebug",
        "ro.build.tags": "test-keys",
        "ro.build.fingerprint": "opsrun/opsrun_fake/fake:11/RQ1A.210105.003/1:userdebug/test-keys",
        "ro.debuggable": "1",
        "ro.secure": "1",
        "ro.serialno": serial,
        "sys.boot_completed": "1",
        "dev.bootcomplete": "1",
        "init.svc.bootanim": "stopped",
        "persist.sys.timezone": "UTC",
    }


def default_settings(serial: str) -> dict[str, dict[str, str]]:
    android_id = _digest(serial)[:16]
    return {
        "system": {
            "screen_brightness": "102",
            "screen_brightness_mode": "0",
            "screen_off_timeout": "60000",
            "font_scale": "1.0",
        },
        "secure": {"android_id": android_id, "location_mode": "3"},
        "global": {
            "adb_enabled": "1",
            "airplane_mode_on": "0",
            "auto_time": "1",
            "development_settings_enabled": "1",
            "stay_on_while_plugged_in": "0",
            "wifi_on": "1",
            "device_name": "OpsrunFake",
        },
    }


def _digest(text: str) -> str:
    """A stable 40-hex-digit fingerprint of text (not cryptographic; hashlib is slow to import)."""
    return "".join(f"{zlib.crc32(f'{i}:{text}'.encode()):08x}" for i in range(5))


def _rmtree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _stamp(ts: float | None = None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts if ts is not None else time.time()))


def default_packages() -> dict[str, dict[str, Any]]:
    packages: dict[str, dict[str, Any]] = {}
    for name, activities in SYSTEM_PACKAGES.items():
        packages[name] = {
            "versionCode": SDK,
            "versionName": "11",
            "minSdk": SDK,
            "targetSdk": SDK,
            "system": True,
            "codePath": f"/system/app/{name}",
            "apk": f"/system/app/{name}/{name}.apk",
            "activities": [full_activity(name, a) for a in activities],
            "launch": full_activity(name, activities[0]) if activities else None,
            "firstInstallTime": "2009-01-01 00:00:00",
            "lastUpdateTime": "2009-01-01 00:00:00",
            "permissions": {},
            "installer": None,
        }
    return packages


def ensure_state(root: str, serial: str = "opsrun-fake") -> None:
    """Create the device folders and seed the state files that are missing (idempotent)."""
    for sub in ("storage/emulated/0", "data/local/tmp", "data/app", "data/data", ".state"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    sdcard = os.path.join(root, "sdcard")
    if not os.path.lexists(sdcard):
        with contextlib.suppress(FileExistsError):
            os.symlink("storage/emulated/0", sdcard)
    state = State(root)
    with state.locked():
        seeds: dict[str, Any] = {
            "props.json": default_props(serial),
            "settings.json": default_settings(serial),
            "packages.json": default_packages(),
            "running.json": {"apps": {}, "foreground": None, "next_pid": 4000},
            "wm.json": {"size": None, "density": None},
        }
        for name, value in seeds.items():
            if not os.path.exists(os.path.join(state.dir, name)):
                state.save(name, value)


class State:
    """JSON files under ROOT/.state, read-modify-write under one flock."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.dir = os.path.join(root, ".state")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        os.makedirs(self.dir, exist_ok=True)
        with open(os.path.join(self.dir, "lock"), "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def load(self, name: str, default: Any = None) -> Any:
        try:
            with open(os.path.join(self.dir, name), encoding="utf-8") as fh:
                return json.load(fh)
        except FileNotFoundError:
            return default

    def save(self, name: str, value: Any) -> None:
        path = os.path.join(self.dir, name)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(value, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)

    def log(self, name: str, line: str) -> None:
        with open(os.path.join(self.dir, name), "a", encoding="utf-8") as fh:
            fh.write(f"{line}\n")


def read_props(root: str) -> dict[str, str]:
    """The device properties (used by the daemon for its CNXN banner too)."""
    props = State(root).load("props.json", {})
    return {str(k): str(v) for k, v in props.items()}


def host_path(root: str, path: str) -> str:
    """Device path -> path on this machine: '/sdcard/x' -> ROOT/sdcard/x (already mapped: kept)."""
    if path == root or path.startswith(root.rstrip("/") + "/"):
        return path
    if path.startswith("/"):
        return root.rstrip("/") + posixpath.normpath(path)
    return os.path.abspath(path)


def full_activity(package: str, activity: str) -> str:
    return package + activity if activity.startswith(".") else activity


def short_activity(package: str, activity: str) -> str:
    prefix = package + "."
    return "." + activity[len(prefix):] if activity.startswith(prefix) else activity


# ----------------------------------------------------------------------------- getprop/setprop


def cmd_getprop(root: str, args: list[str]) -> int:
    props = read_props(root)
    if not args:
        for key in sorted(props):
            print(f"[{key}]: [{props[key]}]")
        return 0
    default = args[1] if len(args) > 1 else ""
    print(props.get(args[0], default))
    return 0


def cmd_setprop(root: str, args: list[str]) -> int:
    if len(args) != 2:
        raise UsageError("usage: setprop NAME VALUE\n\nSets an Android system property.")
    key, value = args
    state = State(root)
    with state.locked():
        props = state.load("props.json", {})
        if key.startswith("ro.") and key in props:
            print(f"Failed to set property '{key}' to '{value}'.\nSee dmesg for error reason.",
                  file=sys.stderr)
            return 1
        props[key] = value
        state.save("props.json", props)
    return 0


# ----------------------------------------------------------------------------- settings

SETTINGS_USAGE = """usage:  settings [--user <USER_ID> | current] get namespace key
        settings [--user <USER_ID> | current] put namespace key value
        settings [--user <USER_ID> | current] delete namespace key
        settings [--user <USER_ID> | current] list namespace

'namespace' is one of {system, secure, global}, case-insensitive"""


def cmd_settings(root: str, args: list[str]) -> int:
    args = list(args)
    if len(args) >= 2 and args[0] == "--user":
        args = args[2:]
    if not args:
        raise UsageError(SETTINGS_USAGE)
    verb, rest = args[0], args[1:]
    arity = {"get": 2, "put": 3, "delete": 2, "list": 1}
    if verb not in arity or len(rest) < arity[verb]:
        raise UsageError(SETTINGS_USAGE)
    namespace = rest[0].lower()
    if namespace not in NAMESPACES:
        raise UsageError(f"Invalid namespace '{rest[0]}'\n{SETTINGS_USAGE}", code=255)
    state = State(root)
    with state.locked():
        settings = state.load("settings.json", {})
        table: dict[str, str] = settings.setdefault(namespace, {})
        if verb == "get":
            print(table.get(rest[1], "null"))
        elif verb == "list":
            for key in sorted(table):
                print(f"{key}={table[key]}")
        elif verb == "put":
            table[rest[1]] = rest[2]
            state.save("settings.json", settings)
        else:
            deleted = 1 if table.pop(rest[1], None) is not None else 0
            state.save("settings.json", settings)
            print(f"Deleted {deleted} rows")
    return 0


# ----------------------------------------------------------------------------- pm


def parse_apk(data: bytes) -> dict[str, Any]:
    """Read the fake APK (zip + manifest text). Raises ValueError with the Android failure."""
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            text = zf.read(MANIFEST_NAME).decode("utf-8")
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError) as exc:
        raise ValueError(
            "INSTALL_PARSE_FAILED_NOT_APK: Failed to parse package: "
            f"no {MANIFEST_NAME} in a zip ({exc})"
        ) from exc
    fields: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            fields[key.strip()] = value.strip()
    package = fields.get("package", "")
    if not PACKAGE_RE.match(package):
        raise ValueError(f"INSTALL_PARSE_FAILED_BAD_PACKAGE_NAME: Invalid package name {package!r}")
    try:
        version_code = int(fields.get("versionCode", ""))
        min_sdk = int(fields.get("minSdk", "21"))
        target_sdk = int(fields.get("targetSdk", str(SDK)))
    except ValueError as exc:
        raise ValueError(
            "INSTALL_PARSE_FAILED_MANIFEST_MALFORMED: versionCode/minSdk/targetSdk must be integers"
        ) from exc
    activities = [a.strip() for a in fields.get("activities", ".MainActivity").split(",")]
    activities = [full_activity(package, a) for a in activities if a]
    launch = fields.get("launchActivity")
    return {
        "package": package,
        "versionCode": version_code,
        "versionName": fields.get("versionName", str(version_code)),
        "minSdk": min_sdk,
        "targetSdk": target_sdk,
        "activities": activities,
        "launch": full_activity(package, launch) if launch else (activities[0] if activities else None),
    }


def _install(root: str, data: bytes, allow_downgrade: bool, installer: str | None) -> int:
    try:
        info = parse_apk(data)
    except ValueError as exc:
        print(f"Failure [{exc}]")
        return 1
    if info["minSdk"] > SDK:
        print(f"Failure [INSTALL_FAILED_OLDER_SDK: Failed parse during installPackageLI: "
              f"Requires newer sdk version #{info['minSdk']} (current version is #{SDK})]")
        return 1
    name = info["package"]
    state = State(root)
    with state.locked():
        packages = state.load("packages.json", {})
        old = packages.get(name)
        if old and info["versionCode"] < old["versionCode"] and not allow_downgrade:
            print(f"Failure [INSTALL_FAILED_VERSION_DOWNGRADE: Downgrade detected: Update version "
                  f"code {info['versionCode']} is older than current {old['versionCode']}]")
            return 1
        code_dir = f"/data/app/{name}-1"
        _rmtree(host_path(root, code_dir))
        os.makedirs(host_path(root, code_dir))
        with open(host_path(root, f"{code_dir}/base.apk"), "wb") as fh:
            fh.write(data)
        os.makedirs(host_path(root, f"/data/data/{name}"), exist_ok=True)
        now = _stamp()
        packages[name] = {
            "versionCode": info["versionCode"],
            "versionName": info["versionName"],
            "minSdk": info["minSdk"],
            "targetSdk": info["targetSdk"],
            "system": bool(old and old.get("system")),
            "codePath": code_dir,
            "apk": f"{code_dir}/base.apk",
            "activities": info["activities"],
            "launch": info["launch"],
            "firstInstallTime": old["firstInstallTime"] if old else now,
            "lastUpdateTime": now,
            "permissions": old.get("permissions", {}) if old else {},
            "installer": installer,
        }
        state.save("packages.json", packages)
        _stop_app(state, name)
    print("Success")
    return 0


def _read_stdin_exact(size: int) -> bytes:
    chunks: list[bytes] = []
    remaining = size
    while remaining > 0:
        chunk = sys.stdin.buffer.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def pm_install(root: str, args: list[str]) -> int:
    allow_downgrade = False
    installer: str | None = None
    size: int | None = None
    paths: list[str] = []
    it = iter(args)
    for arg in it:
        if arg in ("-r", "-t", "-g", "-f", "--dont-kill", "--force-queryable", "--staged",
                   "--instant", "--full", "--wait", "--restrict-permissions", "--no-streaming"):
            continue
        if arg == "-d":
            allow_downgrade = True
        elif arg == "-i":
            installer = next(it, None)
        elif arg in ("--user", "--install-reason", "--pkg", "--originating-uri", "--referrer",
                     "--abi", "--install-location"):
            next(it, None)
        elif arg == "-S":
            value = next(it, "")
            if not value.isdigit():
                raise UsageError(f"Error: bad size {value!r} for -S", code=255)
            size = int(value)
        elif arg.startswith("-") and arg != "-":
            raise UsageError(f"Error: Unknown option: {arg}", code=255)
        else:
            paths.append(arg)
    if size is not None or paths == ["-"]:
        data = _read_stdin_exact(size) if size is not None else sys.stdin.buffer.read()
        return _install(root, data, allow_downgrade, installer)
    if len(paths) != 1:
        raise UsageError("Error: need exactly one APK file path (or -S SIZE to read stdin)", code=255)
    try:
        with open(host_path(root, paths[0]), "rb") as fh:
            data = fh.read()
    except OSError:
        print(f"Error: Can't open file: {paths[0]}", file=sys.stderr)
        print(f"java.lang.IllegalArgumentException: Error: Can't open file: {paths[0]}",
              file=sys.stderr)
        return 255
    return _install(root, data, allow_downgrade, installer)


def pm_list(root: str, args: list[str]) -> int:
    if not args or args[0] not in ("packages", "package"):
        raise UsageError(f"Error: unknown list type '{args[0] if args else ''}'")
    opts: set[str] = set()
    name_filter = ""
    it = iter(args[1:])
    for arg in it:
        if arg == "--user":
            next(it, None)
        elif arg.startswith("--"):
            opts.add(arg)
        elif arg.startswith("-"):
            opts.update(f"-{c}" for c in arg[1:])
        else:
            name_filter = arg
    packages = State(root).load("packages.json", {})
    for name in sorted(packages):
        pkg = packages[name]
        if name_filter and name_filter not in name:
            continue
        if "-3" in opts and pkg.get("system"):
            continue
        if "-s" in opts and not pkg.get("system"):
            continue
        if "-d" in opts:  # nothing is ever disabled here
            continue
        line = "package:"
        if "-f" in opts:
            line += f"{pkg['apk']}="
        line += name
        if "--show-versioncode" in opts:
            line += f" versionCode:{pkg['versionCode']}"
        if "-i" in opts:
            line += f"  installer={pkg.get('installer')}"
        if "-U" in opts:
            line += f" uid:{_uid(name)}"
        print(line)
    return 0


def _uid(name: str) -> int:
    return 10000 + int(_digest(name)[:4], 16) % 9000


def pm_uninstall(root: str, args: list[str]) -> int:
    names = [a for a in args if not a.startswith("-")]
    if "--user" in args:
        names = [n for n in names if not n.isdigit() and n != "current"]
    if len(names) != 1:
        raise UsageError("Error: package name not specified")
    name = names[0]
    state = State(root)
    with state.locked():
        packages = state.load("packages.json", {})
        pkg = packages.get(name)
        if pkg is None or pkg.get("system"):
            print("Failure [DELETE_FAILED_INTERNAL_ERROR]")
            return 1
        del packages[name]
        state.save("packages.json", packages)
        _stop_app(state, name)
    _rmtree(host_path(root, pkg["codePath"]))
    if "-k" not in args:
        _rmtree(host_path(root, f"/data/data/{name}"))
    print("Success")
    return 0


def pm_clear(root: str, args: list[str]) -> int:
    names = [a for a in args if not a.startswith("-")]
    if not names:
        raise UsageError("Error: no package specified")
    name = names[-1]
    state = State(root)
    with state.locked():
        packages = state.load("packages.json", {})
        if name not in packages:
            print("Failed")
            return 1
        packages[name]["clearCount"] = int(packages[name].get("clearCount", 0)) + 1
        state.save("packages.json", packages)
        _stop_app(state, name)
    data_dir = host_path(root, f"/data/data/{name}")
    _rmtree(data_dir)
    os.makedirs(data_dir, exist_ok=True)
    print("Success")
    return 0


def pm_path(root: str, args: list[str]) -> int:
    names = [a for a in args if not a.startswith("-")]
    packages = State(root).load("packages.json", {})
    if not names or names[-1] not in packages:
        return 1
    print(f"package:{packages[names[-1]]['apk']}")
    return 0


def pm_permission(root: str, args: list[str], grant: bool) -> int:
    rest = [a for a in args if a != "--user"]
    if len(rest) < 2:
        raise UsageError("Error: no package or permission specified")
    name, permission = rest[-2], rest[-1]
    state = State(root)
    with state.locked():
        packages = state.load("packages.json", {})
        if name not in packages:
            verb = "grant" if grant else "revoke"
            print(f"Exception occurred while executing '{verb}':\n"
                  f"java.lang.IllegalArgumentException: Unknown package: {name}", file=sys.stderr)
            return 255
        packages[name].setdefault("permissions", {})[permission] = grant
        state.save("packages.json", packages)
    return 0


def cmd_pm(root: str, args: list[str]) -> int:
    if not args:
        raise UsageError("usage: pm [list|path|install|uninstall|clear|grant|revoke|dump] ...")
    verb, rest = args[0], args[1:]
    if verb == "list":
        return pm_list(root, rest)
    if verb == "install":
        return pm_install(root, rest)
    if verb == "uninstall":
        return pm_uninstall(root, rest)
    if verb == "clear":
        return pm_clear(root, rest)
    if verb == "path":
        return pm_path(root, rest)
    if verb in ("grant", "revoke"):
        return pm_permission(root, rest, verb == "grant")
    if verb == "dump":
        return dumpsys_package(root, rest)
    raise UsageError(f"Unknown command: {verb}", code=255)


# ----------------------------------------------------------------------------- am / monkey / pidof


def _stop_app(state: State, name: str) -> bool:
    """Forget a running app; the caller holds the state lock."""
    running = state.load("running.json", {"apps": {}, "foreground": None, "next_pid": 4000})
    if name not in running["apps"]:
        return False
    del running["apps"][name]
    if running.get("foreground") == name:
        running["foreground"] = None
    state.save("running.json", running)
    return True


def _start_app(state: State, name: str, activity: str) -> tuple[bool, int]:
    """Mark an app running in front; returns (was already running, pid)."""
    running = state.load("running.json", {"apps": {}, "foreground": None, "next_pid": 4000})
    app = running["apps"].get(name)
    was_running = app is not None
    if app is None:
        pid = int(running.get("next_pid", 4000))
        running["next_pid"] = pid + 1
        app = {"pid": pid, "started": _stamp()}
        running["apps"][name] = app
    app["activity"] = activity
    running["foreground"] = name
    state.save("running.json", running)
    return was_running, int(app["pid"])


def am_start(root: str, args: list[str]) -> int:
    component = action = data = None
    wait = stop_first = False
    it = iter(args)
    for arg in it:
        if arg == "-n":
            component = next(it, None)
        elif arg == "-a":
            action = next(it, None)
        elif arg == "-d":
            data = next(it, None)
        elif arg == "-W":
            wait = True
        elif arg == "-S":
            stop_first = True
        elif arg in ("-c", "-t", "-f", "-p", "-R", "-P", "--user", "--display", "--windowingMode",
                     "--activityType", "--start-profiler", "--sampling"):
            next(it, None)  # option with one value
        elif arg == "-e" or (arg.startswith("--e") and len(arg) <= 6):
            next(it, None)  # extra: key and value
            next(it, None)
        elif arg.startswith("-"):
            continue  # flag without value
        elif component is None and "/" in arg:
            component = arg
    parts = []
    if action:
        parts.append(f"act={action}")
    if data:
        parts.append(f"dat={data}")
    if component:
        parts.append(f"cmp={component}")
    print(f"Starting: Intent {{ {' '.join(parts)} }}")
    state = State(root)
    state.log("intents.log", " ".join(["start", *parts]))
    if component is None:
        if wait:
            print("Status: ok\nLaunchState: UNKNOWN (0)\nActivity: null\nWaitTime: 1\nComplete")
        return 0
    name, _, activity = component.partition("/")
    with state.locked():
        packages = state.load("packages.json", {})
        pkg = packages.get(name)
        full = full_activity(name, activity)
        if pkg is None or full not in pkg.get("activities", []):
            print("Error type 3", file=sys.stderr)
            print(f"Error: Activity class {{{name}/{full}}} does not exist.", file=sys.stderr)
            return 1
        if stop_first:
            _stop_app(state, name)
        was_running, _pid = _start_app(state, name, full)
    if was_running:
        print("Warning: Activity not started, its current task has been brought to the front")
    if wait:
        print("Status: ok")
        print(f"LaunchState: {'HOT' if was_running else 'COLD'}")
        print(f"Activity: {name}/{short_activity(name, full)}")
        print("TotalTime: 120\nWaitTime: 125\nComplete")
    return 0


def cmd_am(root: str, args: list[str]) -> int:
    if not args:
        raise UsageError("usage: am [start|force-stop|kill|broadcast] ...")
    verb, rest = args[0], args[1:]
    if verb in ("start", "start-activity"):
        return am_start(root, rest)
    if verb in ("force-stop", "kill", "stop-app"):
        names = [a for a in rest if not a.startswith("-") and not a.isdigit()]
        if not names:
            raise UsageError(f"Error: no package specified for {verb}")
        state = State(root)
        with state.locked():
            _stop_app(state, names[-1])
        return 0
    if verb == "broadcast":
        action = rest[rest.index("-a") + 1] if "-a" in rest[:-1] else None
        State(root).log("intents.log", f"broadcast act={action}")
        print(f"Broadcasting: Intent {{ act={action} flg=0x400000 }}")
        print("Broadcast completed: result=0")
        return 0
    raise UsageError(f"Error: Unknown command: {verb}", code=255)


def cmd_monkey(root: str, args: list[str]) -> int:
    if "-p" not in args[:-1]:
        raise UsageError("usage: monkey [-p ALLOWED_PACKAGE] [-c MAIN_CATEGORY] COUNT")
    name = args[args.index("-p") + 1]
    state = State(root)
    with state.locked():
        pkg = state.load("packages.json", {}).get(name)
        if pkg is None or not pkg.get("launch"):
            print("** No activities found to run, monkey aborted.", file=sys.stderr)
            return 252
        _start_app(state, name, pkg["launch"])
    State(root).log("intents.log", f"start act=android.intent.action.MAIN cmp={name}/{pkg['launch']}")
    print("Events injected: 1")
    print("## Network stats: elapsed time=12ms (0ms mobile, 0ms wifi, 12ms not connected)")
    return 0


def cmd_pidof(root: str, args: list[str]) -> int:
    apps = State(root).load("running.json", {"apps": {}})["apps"]
    pids = [str(apps[a]["pid"]) for a in args if a in apps]
    if not pids:
        return 1
    print(" ".join(pids))
    return 0


# ----------------------------------------------------------------------------- dumpsys


def dumpsys_package(root: str, args: list[str]) -> int:
    names = [a for a in args if not a.startswith("-")]
    packages = State(root).load("packages.json", {})
    if not names or names[-1] not in packages:
        return 0
    name = names[-1]
    pkg = packages[name]
    token = _digest(name)
    flags = "SYSTEM HAS_CODE ALLOW_CLEAR_USER_DATA" if pkg.get("system") else \
        "HAS_CODE ALLOW_CLEAR_USER_DATA ALLOW_BACKUP"
    out = ["Activity Resolver Table:", "  Non-Data Actions:", "      android.intent.action.MAIN:"]
    for activity in pkg.get("activities", []):
        out.append(f"        {token[:7]} {name}/{short_activity(name, activity)} filter {token[7:14]}")
    out += [
        "",
        "Packages:",
        f"  Package [{name}] ({token[:7]}):",
        f"    userId={_uid(name)}",
        f"    pkg=Package{{{token[14:21]} {name}}}",
        f"    codePath={pkg['codePath']}",
        f"    resourcePath={pkg['codePath']}",
        f"    versionCode={pkg['versionCode']} minSdk={pkg['minSdk']} targetSdk={pkg['targetSdk']}",
        f"    versionName={pkg['versionName']}",
        "    splits=[base]",
        "    apkSigningVersion=2",
        f"    flags=[ {flags} ]",
        f"    dataDir=/data/user/0/{name}",
        f"    timeStamp={pkg['lastUpdateTime']}",
        f"    firstInstallTime={pkg['firstInstallTime']}",
        f"    lastUpdateTime={pkg['lastUpdateTime']}",
        f"    installerPackageName={pkg.get('installer')}",
        f"    signatures=PackageSignatures{{{token[21:28]} version:2, signatures:[{token[28:36]}], "
        "past signatures:[]}",
        f"    pkgFlags=[ {flags} ]",
        "    User 0: ceDataInode=4242 installed=true hidden=false suspended=false stopped=false "
        "notLaunched=false enabled=0 instant=false virtual=false",
    ]
    permissions = pkg.get("permissions", {})
    if permissions:
        out.append("      runtime permissions:")
        out += [f"        {p}: granted={str(g).lower()}" for p, g in sorted(permissions.items())]
    print("\n".join(out))
    return 0


def cmd_dumpsys(root: str, args: list[str]) -> int:
    if not args:
        print("Currently running services:\n  activity\n  battery\n  package\n  window")
        return 0
    service, rest = args[0], args[1:]
    if service == "package":
        return dumpsys_package(root, rest)
    running = State(root).load("running.json", {"apps": {}, "foreground": None})
    front = running.get("foreground")
    if service == "activity":
        if rest[:1] == ["top"]:
            for name, app in running["apps"].items():
                act = short_activity(name, app["activity"])
                print(f"TASK {name} id={app['pid'] % 1000} userId=0")
                print(f"  ACTIVITY {name}/{act} {app['pid']:x} pid={app['pid']}")
        else:
            print("ACTIVITY MANAGER ACTIVITIES (dumpsys activity activities)")
            if front:
                app = running["apps"][front]
                act = short_activity(front, app["activity"])
                print(f"  mResumedActivity: ActivityRecord{{{app['pid']:x} u0 {front}/{act} t1}}")
        return 0
    if service == "window":
        if front:
            app = running["apps"][front]
            print(f"  mCurrentFocus=Window{{{app['pid']:x} u0 {front}/{app['activity']}}}")
        return 0
    if service == "battery":
        print("Current Battery Service state:\n  AC powered: true\n  USB powered: false\n"
              "  Wireless powered: false\n  status: 2\n  health: 2\n  present: true\n"
              "  level: 100\n  scale: 100\n  voltage: 4200\n  temperature: 250\n"
              "  technology: Li-ion")
        return 0
    print(f"Can't find service: {service}")
    return 1


# ----------------------------------------------------------------------------- input / wm / screencap

KEYEVENTS = {"HOME": 3, "BACK": 4, "POWER": 26, "MENU": 82, "ENTER": 66, "VOLUME_UP": 24,
             "VOLUME_DOWN": 25, "VOLUME_MUTE": 164, "WAKEUP": 224, "SLEEP": 223, "APP_SWITCH": 187}
INPUT_USAGE = """Usage: input [<source>] [-d DISPLAY_ID] <command> [<arg>...]
The commands and default sources are:
      text <string> (Default: touchscreen)
      keyevent [--longpress|--doubletap] <key code number or name> ... (Default: keyboard)
      tap <x> <y> (Default: touchscreen)
      swipe <x1> <y1> <x2> <y2> [duration(ms)] (Default: touchscreen)
      draganddrop <x1> <y1> <x2> <y2> [duration(ms)] (Default: touchscreen)
      press (Default: trackball)
      roll <dx> <dy> (Default: trackball)"""
SOURCES = {"keyboard", "touchscreen", "touchpad", "mouse", "trackball", "stylus", "dpad",
           "gamepad", "joystick", "touchnavigation"}


def _ints(values: list[str], low: int, high: int) -> bool:
    return low <= len(values) <= high and all(re.fullmatch(r"-?\d+(\.\d+)?", v) for v in values)


def cmd_input(root: str, args: list[str]) -> int:
    args = list(args)
    if args and args[0] in SOURCES:
        args = args[1:]
    if len(args) >= 2 and args[0] == "-d":
        args = args[2:]
    if not args:
        raise UsageError(INPUT_USAGE)
    verb, rest = args[0], args[1:]
    ok = {
        "text": len(rest) >= 1,
        "tap": _ints(rest, 2, 2),
        "swipe": _ints(rest, 4, 5),
        "draganddrop": _ints(rest, 4, 5),
        "press": not rest,
        "roll": _ints(rest, 2, 2),
    }
    if verb == "keyevent":
        keys = [k for k in rest if k not in ("--longpress", "--doubletap")]
        valid = all(k.isdigit() or k.removeprefix("KEYCODE_") in KEYEVENTS or
                    re.fullmatch(r"(KEYCODE_)?[A-Z0-9_]+", k) for k in keys)
        if not keys or not valid:
            raise UsageError(f"Error: Invalid arguments for command: keyevent\n{INPUT_USAGE}")
    elif not ok.get(verb, False):
        raise UsageError(f"Error: Invalid arguments for command: {verb}\n{INPUT_USAGE}"
                         if verb in ok else f"Error: Unknown command: {verb}\n{INPUT_USAGE}")
    State(root).log("input.log", " ".join([verb, *rest]))
    return 0


def _display_size(root: str) -> tuple[int, int]:
    wm = State(root).load("wm.json", {})
    size = wm.get("size")
    return (int(size[0]), int(size[1])) if size else PHYSICAL_SIZE


def cmd_wm(root: str, args: list[str]) -> int:
    if not args or args[0] not in ("size", "density"):
        raise UsageError("usage: wm [size [WxH|reset]|density [N|reset]]")
    state = State(root)
    verb, rest = args[0], args[1:]
    with state.locked():
        wm = state.load("wm.json", {"size": None, "density": None})
        if rest:
            value = rest[0]
            if value == "reset":
                wm[verb] = None
            elif verb == "size" and re.fullmatch(r"\d+x\d+", value):
                wm["size"] = [int(x) for x in value.split("x")]
            elif verb == "density" and value.isdigit():
                wm["density"] = int(value)
            else:
                raise UsageError(f"Error: bad {verb} {value}")
            state.save("wm.json", wm)
            return 0
    if verb == "size":
        print(f"Physical size: {PHYSICAL_SIZE[0]}x{PHYSICAL_SIZE[1]}")
        if wm.get("size"):
            print(f"Override size: {wm['size'][0]}x{wm['size'][1]}")
    else:
        print(f"Physical density: {PHYSICAL_DENSITY}")
        if wm.get("density"):
            print(f"Override density: {wm['density']}")
    return 0


def make_png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A valid, solid-colour RGB PNG."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    row = b"\x00" + bytes(rgb) * width
    pixels = zlib.compress(row * height, 6)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels)
            + chunk(b"IEND", b""))


def cmd_screencap(root: str, args: list[str]) -> int:
    png = False
    target = None
    it = iter(args)
    for arg in it:
        if arg == "-p":
            png = True
        elif arg == "-d":
            next(it, None)
        elif arg.startswith("-"):
            raise UsageError(f"usage: screencap [-hp] [-d display-id] [FILENAME]\nbad option {arg}")
        else:
            target = arg
    if target and target.endswith(".png"):
        png = True
    width, height = _display_size(root)
    front = State(root).load("running.json", {}).get("foreground") or "launcher"
    digest = bytes.fromhex(_digest(front))
    rgb = (digest[0], digest[1], digest[2])
    if png:
        data = make_png(width, height, rgb)
    else:
        data = struct.pack("<IIII", width, height, 1, 0) + (bytes(rgb) + b"\xff") * (width * height)
    if target:
        path = host_path(root, target)
        try:
            with open(path, "wb") as fh:
                fh.write(data)
        except OSError as exc:
            print(f"Error opening file: {target} ({exc.strerror})", file=sys.stderr)
            return 1
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    return 0


# ----------------------------------------------------------------------------- cmd / reboot


def cmd_cmd(root: str, args: list[str]) -> int:
    services: dict[str, Callable[[str, list[str]], int]] = {
        "package": cmd_pm, "settings": cmd_settings, "activity": cmd_am,
        "window": cmd_wm, "input": cmd_input,
    }
    if not args:
        raise UsageError("cmd: No service specified; use -l to list all running services.", 20)
    if args[0] == "-l":
        print("Currently running services:")
        for name in sorted(services):
            print(f"  {name}")
        return 0
    handler = services.get(args[0])
    if handler is None:
        print(f"cmd: Can't find service: {args[0]}", file=sys.stderr)
        return 20
    return handler(root, args[1:])


def cmd_reboot(root: str, args: list[str]) -> int:
    State(root).log("reboots.log", " ".join(["shell", *args]).strip())
    return 0


COMMANDS: dict[str, Callable[[str, list[str]], int]] = {
    "getprop": cmd_getprop,
    "setprop": cmd_setprop,
    "settings": cmd_settings,
    "pm": cmd_pm,
    "am": cmd_am,
    "monkey": cmd_monkey,
    "pidof": cmd_pidof,
    "dumpsys": cmd_dumpsys,
    "input": cmd_input,
    "wm": cmd_wm,
    "screencap": cmd_screencap,
    "cmd": cmd_cmd,
    "reboot": cmd_reboot,
}


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] not in COMMANDS:
        print(f"android shim: unknown command {argv[1:2]}", file=sys.stderr)
        return 127
    root = os.environ.get("FAKE_ADBD_ROOT", "")
    if not root or not os.path.isdir(root):
        print(f"{argv[1]}: not running inside fake_adbd (FAKE_ADBD_ROOT unset)", file=sys.stderr)
        return 127
    ensure_state(root, os.environ.get("FAKE_ADBD_SERIAL", "opsrun-fake"))
    try:
        return COMMANDS[argv[1]](root, argv[2:])
    except UsageError as exc:
        print(str(exc), file=sys.stderr)
        return exc.code
    except BrokenPipeError:
        return 141


if __name__ == "__main__":
    sys.exit(main(sys.argv))
