"""Step kinds for Android devices over ADB: adb.shell, adb.install, adb.uninstall, adb.app,
adb.input, adb.setting, adb.prop, adb.push, adb.pull, adb.screenshot, adb.wait.

Each kind asks read-only probes in the device's shell (mksh + toybox; every value quoted for
it) and decides purely from the answers. Nothing here talks to a device or imports adbutils;
prepare() may read local files (APKs, push sources, pull destinations), and outcome() writes
what a step brings back (pulled files, screenshots) on this machine.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import math
import os
import re
import shlex
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from runner.files import write_atomic
from runner.model import Action, Change, CommandResult, Probe, ProbeResult, Status
from runner.overlay import Effect, Overlay
from runner.steps import adb_overlay as ao
from runner.steps import facts as F
from runner.steps import names
from runner.steps.base import Facts, StepContext, StepKind, register
from runner.steps.shell import PrepareError, Run, read_source

ADB = frozenset({"adb"})
APK_TMP = "/data/local/tmp"
FAKE_MANIFEST = "opsrun-fake-manifest.txt"  # the manifest text of the test suite's fake APKs
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_DEVICE_FILE = 1024**3  # APKs, pushed and pulled files: more than the 16 MiB of copy/template
q = shlex.quote


def _refuse(*problems: str | None) -> None:
    """PrepareError at the first failed name check (runner/steps/names.py): never sent."""
    problem = names.first_problem(*problems)
    if problem:
        raise PrepareError(problem)


def _tail(r: CommandResult) -> str:
    lines = (r.err or r.out).strip().splitlines()
    return lines[-1] if lines else ""


def _failed(results: list[CommandResult]) -> tuple[str, str] | None:
    """('failed', why) at the first non-zero exit code, else None."""
    for r in results:
        if r.rc != 0:
            tail = _tail(r)
            return "failed", f"rc {r.rc}" + (f": {tail}" if tail else "")
    return None


def _text(facts: Facts, key: str) -> str:
    r = facts.get(key)
    return r.text.strip() if r is not None else ""


# ---------------------------------------------------------------- adb.shell


class AdbShell(Run):
    """`run` on the device: same guards (creates/removes/unless/only_if) and changed_when /
    failed_when; the command runs in the device's shell (mksh on Android)."""

    name: ClassVar[str] = "adb.shell"
    transports = ADB


# ---------------------------------------------------------------- APK manifest


def apk_info(data: bytes) -> dict[str, Any]:
    """package / version_code / version_name of an APK: from its binary AndroidManifest.xml,
    or from the manifest text the test suite's fake APKs carry. Raises ValueError."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = set(zf.namelist())
            if "AndroidManifest.xml" in names:
                return parse_axml_manifest(zf.read("AndroidManifest.xml"))
            if FAKE_MANIFEST in names:
                fields = dict(
                    line.split("=", 1)
                    for line in zf.read(FAKE_MANIFEST).decode("utf-8", "replace").splitlines()
                    if "=" in line and not line.startswith("#")
                )
                out: dict[str, Any] = {"package": fields.get("package", "").strip() or None}
                vc = fields.get("versionCode", "").strip()
                out["version_code"] = int(vc) if vc.isdigit() else None
                out["version_name"] = fields.get("versionName", "").strip() or None
                return out
    except zipfile.BadZipFile as exc:
        raise ValueError("not an APK (not a zip archive)") from exc
    raise ValueError("no AndroidManifest.xml inside")


_RES_XML, _STRING_POOL, _RESOURCE_MAP, _START_ELEMENT = 0x0003, 0x0001, 0x0180, 0x0102
_ATTR_VERSION_CODE, _ATTR_VERSION_NAME = 0x0101021B, 0x0101021C
_TYPE_STRING, _TYPE_INT_DEC, _TYPE_INT_HEX = 0x03, 0x10, 0x11
_NO_INDEX = 0xFFFFFFFF


def parse_axml_manifest(buf: bytes) -> dict[str, Any]:
    """Read package, versionCode and versionName from the <manifest> element of Android's
    binary XML (the compiled AndroidManifest.xml). Raises ValueError when it is not one."""
    try:
        if len(buf) < 8 or struct.unpack_from("<H", buf, 0)[0] != _RES_XML:
            raise ValueError("AndroidManifest.xml is not Android binary XML")
        pos = struct.unpack_from("<H", buf, 2)[0]
        strings: list[str] = []
        resids: list[int] = []
        while pos + 8 <= len(buf):
            ctype, hsize, csize = struct.unpack_from("<HHI", buf, pos)
            if csize < 8:
                break
            if ctype == _STRING_POOL:
                strings = _string_pool(buf, pos, hsize)
            elif ctype == _RESOURCE_MAP:
                resids = list(struct.unpack_from(f"<{(csize - hsize) // 4}I", buf, pos + hsize))
            elif ctype == _START_ELEMENT:
                ext = pos + hsize
                _ns, name, attr_start, attr_size, count = struct.unpack_from("<IIHHH", buf, ext)
                if name < len(strings) and strings[name] == "manifest":
                    return _manifest_attrs(buf, ext + attr_start, attr_size, count, strings, resids)
            pos += csize
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise ValueError(f"AndroidManifest.xml is damaged ({exc})") from exc
    raise ValueError("AndroidManifest.xml has no <manifest> element")


def _string_pool(buf: bytes, pos: int, hsize: int) -> list[str]:
    count, _styles, flags, start = struct.unpack_from("<IIII", buf, pos + 8)
    utf8 = bool(flags & 0x100)
    out = []
    for i in range(count):
        (offset,) = struct.unpack_from("<I", buf, pos + hsize + 4 * i)
        p = pos + start + offset
        if utf8:
            p += 2 if buf[p] & 0x80 else 1  # length in UTF-16 units (skipped)
            n = buf[p]
            if n & 0x80:
                n = ((n & 0x7F) << 8) | buf[p + 1]
                p += 1
            p += 1
            out.append(buf[p : p + n].decode("utf-8", "replace"))
        else:
            (n,) = struct.unpack_from("<H", buf, p)
            p += 2
            if n & 0x8000:
                n = ((n & 0x7FFF) << 16) | struct.unpack_from("<H", buf, p)[0]
                p += 2
            out.append(buf[p : p + 2 * n].decode("utf-16-le", "replace"))
    return out


def _manifest_attrs(
    buf: bytes, at: int, size: int, count: int, strings: list[str], resids: list[int]
) -> dict[str, Any]:
    out: dict[str, Any] = {"package": None, "version_code": None, "version_name": None}
    for i in range(count):
        _ns, name, raw, _vsize, _res0, dtype, data = struct.unpack_from("<IIIHBBI", buf, at + i * size)
        key = strings[name] if name < len(strings) else ""
        rid = resids[name] if name < len(resids) else 0
        text = strings[raw] if raw != _NO_INDEX and raw < len(strings) else None
        if text is None and dtype == _TYPE_STRING and data < len(strings):
            text = strings[data]
        if key == "package":
            out["package"] = text
        elif rid == _ATTR_VERSION_CODE or key == "versionCode":
            if dtype in (_TYPE_INT_DEC, _TYPE_INT_HEX):
                out["version_code"] = data
            elif text and text.strip().isdigit():
                out["version_code"] = int(text)
        elif rid == _ATTR_VERSION_NAME or key == "versionName":
            out["version_name"] = text if text is not None else str(data)
    return out


# ---------------------------------------------------------------- adb.install / adb.uninstall


def _list_versions(text: str) -> dict[str, int | None]:
    """`pm list packages [--show-versioncode]` -> package -> versionCode (None: not shown)."""
    out: dict[str, int | None] = {}
    for line in text.splitlines():
        m = re.match(r"^package:(\S+)(?:\s+versionCode:(\d+))?", line.strip())
        if m:
            out[m.group(1)] = int(m.group(2)) if m.group(2) else None
    return out


class Install(StepKind):
    name: ClassVar[str] = "adb.install"
    transports = ADB

    def normalize(self, params: Any) -> dict[str, Any]:
        return {"src": params} if isinstance(params, str) else dict(params)

    def prepare(self, params: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        if params.get("package"):
            _refuse(names.android_package(params["package"]))
        src = params["src"]
        data = read_source(ctx, params, "APK", MAX_DEVICE_FILE, contain=False).data
        try:
            info = apk_info(data)
        except ValueError as exc:
            info = {"package": None, "version_code": None, "version_name": None, "error": str(exc)}
        package = str(params.get("package") or info["package"] or "")
        given_vc = params.get("version_code")
        version_code = int(str(given_vc)) if given_vc is not None else info["version_code"]
        if params.get("package") and info["package"] and info["package"] != params["package"]:
            raise PrepareError(f"APK {src} is package {info['package']}, not {params['package']} as the step says")
        if given_vc is not None and info["version_code"] is not None and info["version_code"] != version_code:
            raise PrepareError(f"APK {src} has versionCode {info['version_code']}, not {version_code} as the step says")
        if not package or version_code is None:
            why = info.get("error") or "its manifest does not say"
            raise PrepareError(
                f"APK {src}: cannot read its package name and versionCode ({why}); "
                "set `package:` and `version_code:` in the step"
            )
        _refuse(names.android_package(package, f"APK {src}: package"))
        return {
            **params,
            "_apk": data,
            "_package": package,
            "_version_code": version_code,
            "_version_name": info.get("version_name"),
        }

    def probes(self, params: dict[str, Any], ctx: StepContext) -> list[Probe]:
        pkg = str(params["_package"])
        return [
            F.ask(ctx, "pm_list", pkg, versions=True, key="list"),
            # Android < 9 has no --show-versioncode: dumpsys says it too (only read then)
            F.ask(ctx, "pm_dumpsys", pkg, key="dumpsys"),
        ]

    def view(self, params: dict[str, Any], facts: Facts, overlay: Overlay) -> Facts:
        return ao.view_install(str(params["_package"]), facts, overlay)

    def effects(self, params: dict[str, Any], change: Change, facts: Facts, overlay: Overlay) -> list[Effect]:
        return ao.install_effects(str(params["_package"]), int(params["_version_code"]), change, overlay)

    @staticmethod
    def installed_version(package: str, facts: Facts) -> tuple[bool, int | None]:
        """(installed, versionCode) from the probes."""
        listed = facts.get("list")
        if listed is not None and listed.rc == 0 and "versionCode:" in listed.text:
            versions = _list_versions(listed.text)
            return package in versions, versions.get(package)
        if listed is not None and listed.rc == 0 and "package:" in listed.text:
            versions = _list_versions(listed.text)
            if package not in versions:
                return False, None
        dump = _text(facts, "dumpsys")
        if f"Package [{package}]" not in dump:
            return False, None
        m = re.search(r"versionCode=(\d+)", dump)
        return True, int(m.group(1)) if m else None

    def plan(self, params: dict[str, Any], facts: Facts, ctx: StepContext) -> Change:
        pkg, vc = str(params["_package"]), int(params["_version_code"])
        installed, have = self.installed_version(pkg, facts)
        src = params["src"]
        if installed and have == vc:
            return Change("noop", f"{pkg} versionCode {vc} is installed")
        if installed and have is None:
            return Change(
                "unknown",
                f"cannot tell the installed version of {pkg}",
                reason="neither `pm list packages --show-versioncode` nor `dumpsys package` gave it",
            )
        flags = ["-r"]
        status: Status = "create"
        summary = f"install {pkg} versionCode {vc} from {src}"
        if installed and have is not None:
            status = "update"
            if have > vc:
                if not params.get("downgrade"):
                    return Change(
                        "blocked",
                        f"{pkg}: the device has versionCode {have}, newer than the APK's {vc}",
                        reason=f"{pkg} versionCode {have} is installed, the APK has {vc}: set "
                        "`downgrade: true` to install the older one",
                    )
                flags.append("-d")
                summary = f"downgrade {pkg} versionCode {have} -> {vc}"
            else:
                summary = f"upgrade {pkg} versionCode {have} -> {vc}"
        if params.get("grant_permissions"):
            flags.append("-g")
        remote = f"{APK_TMP}/opsrun-{pkg}.apk"
        r = q(remote)
        command = f"pm install {' '.join(flags)} {r}; rc=$?; rm -f {r}; exit $rc"
        return Change(
            status,
            summary,
            (Action("put", path=remote, content=params["_apk"], mode="0644"), Action("cmd", command=command)),
            data={"package": pkg, "version_code": vc, "previous_version_code": have},
        )

    def outcome(
        self,
        params: dict[str, Any],
        change: Change,
        results: list[CommandResult],
        evaluate: Callable[[str, dict[str, Any]], Any],
    ) -> tuple[str, str]:
        failed = _failed(results)
        if failed:
            return failed
        last = results[-1] if results else CommandResult(0)
        if "Success" not in last.out:
            return "failed", f"pm install did not say Success: {_tail(last) or 'no output'}"
        return "changed", ""


class Uninstall(StepKind):
    name: ClassVar[str] = "adb.uninstall"
    transports = ADB

    def normalize(self, params: Any) -> dict[str, Any]:
        return {"package": params} if isinstance(params, str) else dict(params)

    def probes(self, params: dict[str, Any], ctx: StepContext) -> list[Probe]:
        return [F.ask(ctx, "pm_list", str(params["package"]), key="list")]

    def prepare(self, params: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        _refuse(names.android_package(params["package"]))
        return params

    def view(self, params: dict[str, Any], facts: Facts, overlay: Overlay) -> Facts:
        return ao.view_uninstall(str(params["package"]), facts, overlay)

    def effects(self, params: dict[str, Any], change: Change, facts: Facts, overlay: Overlay) -> list[Effect]:
        return ao.uninstall_effects(str(params["package"]), change, overlay)

    def plan(self, params: dict[str, Any], facts: Facts, ctx: StepContext) -> Change:
        pkg = str(params["package"])
        if pkg not in _list_versions(_text(facts, "list")):
            return Change("noop", f"{pkg} is not installed")
        keep = " -k" if params.get("keep_data") else ""
        return Change(
            "delete",
            f"uninstall {pkg}" + (" (keeping its data)" if keep else ""),
            (Action("cmd", command=f"pm uninstall{keep} -- {q(pkg)}"),),
        )

    def outcome(
        self,
        params: dict[str, Any],
        change: Change,
        results: list[CommandResult],
        evaluate: Callable[[str, dict[str, Any]], Any],
    ) -> tuple[str, str]:
        failed = _failed(results)
        if failed:
            return failed
        if results and "Success" not in results[-1].out:
            return "failed", f"pm uninstall did not say Success: {_tail(results[-1]) or 'no output'}"
        return "changed", ""


# ---------------------------------------------------------------- adb.app


class App(StepKind):
    name: ClassVar[str] = "adb.app"
    transports = ADB

    def normalize(self, params: Any) -> dict[str, Any]:
        out = {"package": params} if isinstance(params, str) else dict(params)
        out.setdefault("state", "started")
        return out

    def prepare(self, params: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        _refuse(
            names.android_package(params["package"]),
            names.activity(params["activity"]) if params.get("activity") else None,
        )
        return params

    def probes(self, params: dict[str, Any], ctx: StepContext) -> list[Probe]:
        pkg = str(params["package"])
        out = [F.ask(ctx, "pid", pkg), F.ask(ctx, "pm_path", pkg, key="path")]
        if params.get("foreground"):
            out.append(F.ask(ctx, "front_activity", key="front"))
        return out

    def view(self, params: dict[str, Any], facts: Facts, overlay: Overlay) -> Facts:
        return ao.view_app(params, facts, overlay)

    def effects(self, params: dict[str, Any], change: Change, facts: Facts, overlay: Overlay) -> list[Effect]:
        return ao.app_effects(params, change, overlay)

    @staticmethod
    def component(params: dict[str, Any]) -> str | None:
        act = params.get("activity")
        if not act:
            return None
        act = str(act)
        return act if "/" in act else f"{params['package']}/{act}"

    def plan(self, params: dict[str, Any], facts: Facts, ctx: StepContext) -> Change:
        pkg = str(params["package"])
        state = params.get("state", "started")
        pid = _text(facts, "pid").split()
        running = facts.get("pid") is not None and facts["pid"].rc == 0 and bool(pid)
        installed = facts.get("path") is not None and facts["path"].rc == 0 and "package:" in _text(facts, "path")
        note = "" if installed else " (not installed yet)"
        if state == "stopped":
            if not running:
                return Change("noop", f"{pkg} is not running")
            stop = Action("cmd", command=f"am force-stop -- {q(pkg)}")
            return Change("update", f"stop {pkg} (pid {pid[0]})", (stop,))
        if state == "cleared":
            return Change(
                "run",
                f"clear the data of {pkg}{note} (always: the device cannot tell whether it is clear)",
                (Action("cmd", command=f"pm clear -- {q(pkg)}"),),
            )
        in_front = f" {pkg}/" in _text(facts, "front")
        if running and (not params.get("foreground") or in_front):
            where = " in the foreground" if params.get("foreground") else ""
            return Change("noop", f"{pkg} is running{where} (pid {pid[0]})")
        comp = self.component(params)
        if comp:
            command = f"am start -W -n {q(comp)}"
        else:
            command = f"monkey -p {q(pkg)} -c android.intent.category.LAUNCHER 1"
        what = f"bring {pkg} to the foreground" if running else f"start {pkg}{note}"
        return Change("update" if running else "create", what, (Action("cmd", command=command),))

    def outcome(
        self,
        params: dict[str, Any],
        change: Change,
        results: list[CommandResult],
        evaluate: Callable[[str, dict[str, Any]], Any],
    ) -> tuple[str, str]:
        failed = _failed(results)
        if failed:
            return failed
        last = results[-1] if results else CommandResult(0)
        text = last.out + last.err
        state = params.get("state", "started")
        # am and monkey may exit 0 and still say they failed
        if state == "started" and ("Error" in text or "aborted" in text or "No activities" in text):
            return "failed", _tail(last) or "could not start it"
        if state == "cleared" and "Success" not in last.out:
            return "failed", f"pm clear did not say Success: {_tail(last) or 'no output'}"
        return "changed", ""


# ---------------------------------------------------------------- adb.input


class Input(StepKind):
    """Key presses, taps, swipes and text. The device cannot tell whether input was already
    given, so this always runs: it is never idempotent."""

    name: ClassVar[str] = "adb.input"
    transports = ADB

    @staticmethod
    def command(params: dict[str, Any]) -> tuple[str, str]:
        if "keyevent" in params:
            keys = params["keyevent"]
            keys = keys if isinstance(keys, list) else [keys]
            words = " ".join(q(str(k)) for k in keys)
            return f"input keyevent {words}", f"press {', '.join(str(k) for k in keys)}"
        if "tap" in params:
            t = params["tap"]
            x, y = (t["x"], t["y"]) if isinstance(t, dict) else (t[0], t[1])
            return f"input tap {int(x)} {int(y)}", f"tap at {int(x)},{int(y)}"
        if "swipe" in params:
            s = params["swipe"]
            nums = [int(s[k]) for k in ("x1", "y1", "x2", "y2")]
            if s.get("duration_ms") is not None:
                nums.append(int(s["duration_ms"]))
            return "input swipe " + " ".join(map(str, nums)), f"swipe {nums[0]},{nums[1]} -> {nums[2]},{nums[3]}"
        text = str(params["text"])
        return f"input text {q(text.replace(' ', '%s'))}", f"type {len(text)} characters"

    def prepare(self, params: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        keys = params.get("keyevent")
        if keys is not None:
            _refuse(*(names.keyevent(k) for k in (keys if isinstance(keys, list) else [keys])))
        return params

    def effects(self, params: dict[str, Any], change: Change, facts: Facts, overlay: Overlay) -> list[Effect]:
        return ao.input_effects(change)

    def plan(self, params: dict[str, Any], facts: Facts, ctx: StepContext) -> Change:
        command, what = self.command(params)
        return Change("run", f"{what} (always: input is not idempotent)", (Action("cmd", command=command),))


# ---------------------------------------------------------------- adb.setting


def setting_value(value: Any) -> str:
    """YAML value -> the text `settings put` stores (booleans as 1/0, like Android)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


SETTING_NAMESPACES = ("system", "secure", "global")


class Setting(StepKind):
    name: ClassVar[str] = "adb.setting"
    transports = ADB

    def prepare(self, params: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        # `settings` has no "--": it reads --user anywhere, so no word of its line may start with --
        _refuse(
            None if str(params["namespace"]) in SETTING_NAMESPACES else
            f"setting namespace {params['namespace']!r} is not one of {', '.join(SETTING_NAMESPACES)}",
            names.setting_key(params["key"]),
            names.setting_value(setting_value(params["value"])) if params.get("value") is not None else None,
        )
        return params

    def probes(self, params: dict[str, Any], ctx: StepContext) -> list[Probe]:
        return [F.ask(ctx, "setting", str(params["namespace"]), str(params["key"]), key="value")]

    def view(self, params: dict[str, Any], facts: Facts, overlay: Overlay) -> Facts:
        return ao.view_setting(params, facts, overlay)

    def effects(self, params: dict[str, Any], change: Change, facts: Facts, overlay: Overlay) -> list[Effect]:
        want = setting_value(params["value"]) if params.get("value") is not None else None
        return ao.setting_effects(params, change, want)

    def plan(self, params: dict[str, Any], facts: Facts, ctx: StepContext) -> Change:
        ns, key = str(params["namespace"]), str(params["key"])
        r = facts.get("value")
        if r is None or r.rc != 0:
            why = (r.stderr or r.stdout).decode("utf-8", "replace").strip() if r is not None else "no answer"
            return Change("unknown", f"cannot read setting {ns} {key}", reason=f"settings get failed: {why}")
        current = r.text.rstrip("\n")
        unset = current == "null"
        where = f"{ns} {key}"
        if params.get("state", "present") == "absent":
            if unset:
                return Change("noop", f"setting {where} is not set")
            return Change(
                "delete",
                f"delete setting {where} (now {current!r})",
                (Action("cmd", command=f"settings delete {q(ns)} {q(key)}"),),
            )
        want = setting_value(params["value"])
        if current == want:
            return Change("noop", f"setting {where} is {want!r}")
        action = Action("cmd", command=f"settings put {q(ns)} {q(key)} {q(want)}")
        if unset:
            return Change("create", f"set {where} = {want!r} (not set now)", (action,))
        return Change("update", f"set {where}: {current!r} -> {want!r}", (action,), diff=f"-{current}\n+{want}\n")


# ---------------------------------------------------------------- adb.prop


class Prop(StepKind):
    """Read a system property, assert its value, or (assert: false) set it with setprop."""

    name: ClassVar[str] = "adb.prop"
    transports = ADB

    def normalize(self, params: Any) -> dict[str, Any]:
        return {"name": params} if isinstance(params, str) else dict(params)

    def read_only(self, params: dict[str, Any]) -> bool:
        return params.get("value") is None or params.get("assert", True) is not False

    def prepare(self, params: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        _refuse(names.property_name(params["name"]))
        return params

    def probes(self, params: dict[str, Any], ctx: StepContext) -> list[Probe]:
        return [F.ask(ctx, "prop", str(params["name"]), key="value")]

    def view(self, params: dict[str, Any], facts: Facts, overlay: Overlay) -> Facts:
        return ao.view_prop(params, facts, overlay)

    def effects(self, params: dict[str, Any], change: Change, facts: Facts, overlay: Overlay) -> list[Effect]:
        want = setting_value(params["value"]) if params.get("value") is not None else None
        return ao.prop_effects(params, change, want)

    def plan(self, params: dict[str, Any], facts: Facts, ctx: StepContext) -> Change:
        name = str(params["name"])
        current = facts["value"].text.rstrip("\n") if "value" in facts else ""
        if params.get("value") is None:
            return Change("noop", f"{name} = {current!r}", data={"name": name, "value": current})
        want = setting_value(params["value"])
        data = {"name": name, "value": current, "expected": want}
        if current == want:
            return Change("noop", f"{name} is {want!r}", data=data)
        if params.get("assert", True) is not False:
            check = (
                f'v=$(getprop {q(name)}); [ "$v" = {q(want)} ] || '
                f"{{ printf \"%s is '%s', expected '%s'\\n\" {q(name)} \"$v\" {q(want)} >&2; exit 1; }}"
            )
            return Change(
                "run",
                f"check {name} == {want!r} (now {current!r}: this step will fail)",
                (Action("cmd", command=check),),
                data={**data, "read_only": True},
            )
        if name.startswith("ro.") and current:
            return Change(
                "blocked", f"{name} is read-only", reason=f"{name} is a read-only property (ro.*), already {current!r}"
            )
        verb: Status = "update" if current else "create"
        return Change(
            verb,
            f"setprop {name}: {current!r} -> {want!r}",
            (Action("cmd", command=f"setprop {q(name)} {q(want)}"),),
            data=data,
        )

    def outcome(
        self,
        params: dict[str, Any],
        change: Change,
        results: list[CommandResult],
        evaluate: Callable[[str, dict[str, Any]], Any],
    ) -> tuple[str, str]:
        failed = _failed(results)
        if failed:
            return failed
        return ("ok" if change.read_only else "changed"), ""


# ---------------------------------------------------------------- adb.push / adb.pull


class RemoteFile:
    """A device file as the `stat` fact (with its digest) answers: type, size, mode, digest."""

    def __init__(self, result: ProbeResult | None) -> None:
        info = F.read_stat(result)
        self.type = info.type
        self.size: int | None = info.size
        self.mode: str | None = info.mode
        self.algo, self.digest = info.algo, info.digest

    def same_as(self, content_size: int, sha256: str, md5: str) -> bool:
        if self.type != "file" or self.size != content_size:
            return False
        return self.digest == (sha256 if self.algo == "sha256" else md5)


def _local_digests(data: bytes) -> tuple[str, str]:
    return hashlib.sha256(data).hexdigest(), hashlib.md5(data, usedforsecurity=False).hexdigest()


class Push(StepKind):
    name: ClassVar[str] = "adb.push"
    transports = ADB

    def normalize(self, params: Any) -> dict[str, Any]:
        out = dict(params)
        dest = str(out.get("dest", ""))
        if dest.endswith("/") and out.get("src"):
            out["dest"] = dest + os.path.basename(str(out["src"]))
        return out

    def prepare(self, params: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        return {**params, "_bytes": read_source(ctx, params, "push source", MAX_DEVICE_FILE, contain=False).data}

    def probes(self, params: dict[str, Any], ctx: StepContext) -> list[Probe]:
        return [F.ask(ctx, "stat", str(params["dest"]), digest=True, key="file")]

    def view(self, params: dict[str, Any], facts: Facts, overlay: Overlay) -> Facts:
        return ao.view_file(str(params["dest"]), facts, overlay)

    def effects(self, params: dict[str, Any], change: Change, facts: Facts, overlay: Overlay) -> list[Effect]:
        mode = format(int(str(params["mode"]), 8), "04o") if params.get("mode") is not None else None
        return ao.push_effects(str(params["dest"]), params["_bytes"], mode, change, RemoteFile(facts.get("file")).mode)

    def plan(self, params: dict[str, Any], facts: Facts, ctx: StepContext) -> Change:
        dest = str(params["dest"])
        data: bytes = params["_bytes"]
        mode = format(int(str(params["mode"]), 8), "04o") if params.get("mode") is not None else None
        st = RemoteFile(facts.get("file"))
        if st.type == "directory":
            return Change(
                "blocked",
                f"{dest} is a directory",
                reason=f"{dest} is a directory on the device: give the file's full path (or end dest with /)",
            )
        if st.type == "other":
            return Change("blocked", f"{dest} is not a regular file", reason=f"{dest} exists and is not a file")
        sha, md5 = _local_digests(data)
        put = Action("put", path=dest, content=data, mode=mode)
        if st.type == "absent":
            return Change("create", f"push {params['src']} to {dest} ({len(data)} bytes)", (put,))
        if st.same_as(len(data), sha, md5):
            if mode and st.mode != mode:
                return Change(
                    "update", f"chmod {dest}: {st.mode} -> {mode}", (Action("cmd", command=f"chmod {mode} {q(dest)}"),)
                )
            return Change("noop", f"{dest} is up to date ({len(data)} bytes, {st.algo} matches)")
        return Change(
            "update",
            f"push {params['src']} to {dest} (size {st.size} -> {len(data)} bytes, content differs)",
            (put,),
            diff=f"{st.algo} {st.digest} -> {sha if st.algo == 'sha256' else md5}\n",
        )


class Pull(StepKind):
    """A device file to this machine (dest relative to the playbook's folder). The bytes come
    back base64-encoded through the device shell, so keep it to files of modest size."""

    name: ClassVar[str] = "adb.pull"
    transports = ADB

    def prepare(self, params: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        dest = Path(ctx.playbook_dir) / str(params["dest"])
        if str(params["dest"]).endswith("/") or dest.is_dir():
            dest = dest / os.path.basename(str(params["src"]))
        local: dict[str, Any] | None = None
        try:  # the file there now (for its digest): a regular file of bounded size, or none
            here = {"src": os.path.abspath(dest)}
            data = read_source(ctx, here, "pull destination", MAX_DEVICE_FILE, contain=False).data
        except PrepareError:
            if os.path.lexists(dest):
                raise
        else:
            sha, md5 = _local_digests(data)
            local = {"size": len(data), "sha256": sha, "md5": md5}
        return {**params, "_dest": str(dest), "_local": local}

    def probes(self, params: dict[str, Any], ctx: StepContext) -> list[Probe]:
        return [F.ask(ctx, "stat", str(params["src"]), digest=True, key="file")]

    def view(self, params: dict[str, Any], facts: Facts, overlay: Overlay) -> Facts:
        return ao.view_file(str(params["src"]), facts, overlay)

    def plan(self, params: dict[str, Any], facts: Facts, ctx: StepContext) -> Change:
        src, dest = str(params["src"]), str(params["_dest"])
        st = RemoteFile(facts.get("file"))
        if st.type == "absent":
            return Change(
                "unknown",
                f"{src} does not exist on the device",
                reason=f"{src} does not exist on the device (yet: an earlier step may make it)",
            )
        if st.type != "file":
            return Change("blocked", f"{src} is a {st.type}", reason="adb.pull copies one regular file")
        local = params.get("_local")
        action = Action("cmd", command=f"base64 < {q(src)}")
        data = {"dest": dest, "size": st.size, "algo": st.algo, "digest": st.digest, "quiet_output": True}
        if local is None:
            return Change("create", f"pull {src} to {dest} ({st.size} bytes)", (action,), data=data)
        if st.size == local["size"] and st.digest == local.get(st.algo):
            return Change("noop", f"{dest} is up to date ({st.size} bytes, {st.algo} matches)")
        return Change("update", f"pull {src} to {dest} (content differs)", (action,), data=data)

    def outcome(
        self,
        params: dict[str, Any],
        change: Change,
        results: list[CommandResult],
        evaluate: Callable[[str, dict[str, Any]], Any],
    ) -> tuple[str, str]:
        failed = _failed(results)
        if failed:
            return failed
        try:
            content = base64.b64decode(b"".join(results[-1].stdout.split()), validate=True)
        except (binascii.Error, IndexError) as exc:
            return "failed", f"the device sent no valid base64 ({exc})"
        dest = Path(str(change.data["dest"]))
        try:
            write_atomic(dest, content, make_parents=True)
        except OSError as exc:
            return "failed", f"cannot write {dest}: {exc.strerror or exc}"
        return "changed", f"{len(content)} bytes to {dest}"


# ---------------------------------------------------------------- adb.screenshot


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "device"


class Screenshot(StepKind):
    """screencap -p, saved as a PNG in the run folder: artifacts/<host>/<name>. Read-only."""

    name: ClassVar[str] = "adb.screenshot"
    transports = ADB

    def normalize(self, params: Any) -> dict[str, Any]:
        if isinstance(params, str):
            return {"name": params}
        return dict(params) if isinstance(params, dict) else {}

    def read_only(self, params: dict[str, Any]) -> bool:
        return True

    @staticmethod
    def artifact(params: dict[str, Any], ctx: StepContext) -> str:
        name = _safe_name(str(params.get("name") or "screenshot.png"))
        if not name.lower().endswith(".png"):
            name += ".png"
        return str(Path(ctx.run_dir or ".") / "artifacts" / _safe_name(ctx.host.name) / name)

    def plan(self, params: dict[str, Any], facts: Facts, ctx: StepContext) -> Change:
        display = f" -d {int(params['display'])}" if params.get("display") is not None else ""
        path = self.artifact(params, ctx)
        where = path if ctx.run_dir else f"the run folder ({Path(path).relative_to(Path(path).parents[2])})"
        return Change(
            "run",
            f"save a screenshot to {where}",
            (Action("cmd", command=f"screencap -p{display} | base64"),),
            data={"read_only": True, "artifact": path, "artifacts": [path], "quiet_output": True},
        )

    def outcome(
        self,
        params: dict[str, Any],
        change: Change,
        results: list[CommandResult],
        evaluate: Callable[[str, dict[str, Any]], Any],
    ) -> tuple[str, str]:
        failed = _failed(results)
        if failed:
            return failed
        try:
            png = base64.b64decode(b"".join(results[-1].stdout.split()), validate=True)
        except (binascii.Error, IndexError) as exc:
            return "failed", f"screencap sent no valid base64 ({exc})"
        if not png.startswith(PNG_MAGIC):
            return "failed", "screencap gave no PNG image" + (f": {_tail(results[-1])}" if results else "")
        dest = Path(str(change.data["artifact"]))  # a retry or a same-named shot replaces it
        try:
            write_atomic(dest, png, mode=0o600, make_parents=True)  # under the private .opsrun/
        except OSError as exc:
            return "failed", f"cannot save the screenshot to {dest}: {exc.strerror or exc}"
        return "ok", f"screenshot saved: {dest} ({len(png)} bytes)"


# ---------------------------------------------------------------- adb.wait


class Wait(StepKind):
    """Wait (bounded) for boot completed, a package, or a property value: one polling loop
    in the device shell. Read-only."""

    name: ClassVar[str] = "adb.wait"
    transports = ADB

    def normalize(self, params: Any) -> dict[str, Any]:
        return {"for": params} if isinstance(params, str) else dict(params)

    def read_only(self, params: dict[str, Any]) -> bool:
        return True

    @staticmethod
    def condition(params: dict[str, Any]) -> tuple[str, str]:
        what = params.get("for", "boot_completed")
        if what == "package":
            pkg = str(params["package"])
            return f"pm list packages -- {q(pkg)} 2>/dev/null | grep -qxF {q('package:' + pkg)}", f"package {pkg}"
        if what == "property":
            name, value = str(params["property"]), setting_value(params.get("value", ""))
            return f'[ "$(getprop {q(name)})" = {q(value)} ]', f"{name} = {value!r}"
        return '[ "$(getprop sys.boot_completed)" = 1 ]', "boot completed"

    def prepare(self, params: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        what = params.get("for", "boot_completed")
        if what == "package":
            _refuse(names.android_package(params["package"]))
        elif what == "property":
            _refuse(names.property_name(params["property"], "property"))
        return params

    def probes(self, params: dict[str, Any], ctx: StepContext) -> list[Probe]:
        return [F.ask(ctx, "condition", self.condition(params)[0], key="now")]

    def view(self, params: dict[str, Any], facts: Facts, overlay: Overlay) -> Facts:
        return ao.view_wait(params, setting_value(params.get("value", "")), facts, overlay)

    def plan(self, params: dict[str, Any], facts: Facts, ctx: StepContext) -> Change:
        cond, what = self.condition(params)
        if facts.get("now") is not None and facts["now"].rc == 0:
            return Change("noop", f"{what}: already so")
        timeout = float(params.get("timeout", 120))
        interval = float(params.get("interval", 2))
        tries = max(1, math.ceil(timeout / interval))
        step = f"{interval:g}"
        loop = (
            f"n=0; until {cond}; do n=$((n+1)); if [ $n -ge {tries} ]; then "
            f"echo {q(f'opsrun: gave up after {timeout:g}s waiting for {what}')} >&2; exit 1; fi; "
            f"sleep {step}; done"
        )
        return Change(
            "run", f"wait up to {timeout:g}s for {what}", (Action("cmd", command=loop),), data={"read_only": True}
        )

    def outcome(
        self,
        params: dict[str, Any],
        change: Change,
        results: list[CommandResult],
        evaluate: Callable[[str, dict[str, Any]], Any],
    ) -> tuple[str, str]:
        return _failed(results) or ("ok", "")


for _kind in (
    AdbShell(),
    Install(),
    Uninstall(),
    App(),
    Input(),
    Setting(),
    Prop(),
    Push(),
    Pull(),
    Screenshot(),
    Wait(),
):
    register(_kind)
